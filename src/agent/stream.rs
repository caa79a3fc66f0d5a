//! Lenient reading of streamed chat completions (server-sent events), for showing an answer while
//! it is written.
//!
//! [`StreamAssembler`] is the pure part: bytes in (split anywhere), [`StreamEvent`]s out, and at
//! the end the assembled [`AssistantMessage`]. [`read_stream`] drives it from any byte stream.
//! Real servers' streams differ from OpenAI's: a first chunk with empty `choices` (Azure),
//! `: keep-alive` comment lines, events without blank lines between them, no final
//! `data: [DONE]`, tool calls without `type` or `id`, reasoning in `<think>` tags or in
//! `reasoning_content` / `reasoning` deltas. All of that is accepted; reasoning is never emitted
//! as text, only as [`StreamEvent::Thinking`].
//!
//! Tool-call deltas are accumulated per `index`: the first delta of a call carries its id and
//! name, later ones append to its arguments.
//!
//! One case cannot be caught while streaming: a chat template that opens the think block in the
//! prompt, so the stream starts mid-thought and only `</think>` arrives. Those thoughts are
//! emitted as text before the closing tag shows what they were; the final message (what is
//! stored and what a caller should show last) is stripped correctly all the same.

use std::collections::BTreeMap;
use std::fmt::Display;

use futures::{Stream, StreamExt};
use serde_json::Value;

use super::reasoning::ThinkFilter;
use super::response::{
    arguments_text, assemble, content_text, error_text, has_reasoning, AssistantMessage,
    FinishReason, ResponseError, ToolCall, WireChoice, WireResponse,
};

/// What a stream tells the caller while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Visible answer text to append (reasoning already removed).
    Text(String),
    /// The model started thinking: show a status instead of its thoughts. Sent once per
    /// stretch of thinking.
    Thinking,
}

/// A tool call being assembled from deltas.
#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns the bytes of an SSE chat completion stream into events and a final message.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    /// Bytes of an incomplete line.
    line: Vec<u8>,
    /// `data:` lines of the event being read.
    data: Vec<String>,
    done: bool,
    /// Payloads seen (chunks, `[DONE]` excluded).
    chunks: usize,
    raw_content: Option<String>,
    filter: ThinkFilter,
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    reasoning_field: bool,
    /// Whether the last thing announced was [`StreamEvent::Thinking`].
    thinking: bool,
    emitted_text: bool,
    usage: Option<super::response::Usage>,
}

impl StreamAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `data: [DONE]` arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether visible text has been emitted (a retry would repeat it).
    pub fn emitted_text(&self) -> bool {
        self.emitted_text
    }

    /// Whether a chunk said why the model stopped (the answer is complete even if the connection
    /// then breaks).
    pub fn saw_finish(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// Feeds bytes as they arrive (split anywhere, even inside a UTF-8 character).
    pub fn push(
        &mut self,
        bytes: &[u8],
        on_event: &mut dyn FnMut(StreamEvent),
    ) -> Result<(), ResponseError> {
        let mut rest = bytes;
        while !rest.is_empty() && !self.done {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&rest[..end]);
                    let line = std::mem::take(&mut self.line);
                    self.line_end(&line, on_event)?;
                    rest = &rest[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(rest);
                    break;
                }
            }
        }
        Ok(())
    }

    fn line_end(
        &mut self,
        line: &[u8],
        on_event: &mut dyn FnMut(StreamEvent),
    ) -> Result<(), ResponseError> {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.trim().is_empty() {
            return self.dispatch(on_event);
        }
        if line.starts_with(':') {
            // A comment (`: keep-alive`, `: OPENROUTER PROCESSING`).
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field.trim() != "data" {
            // `event:`, `id:`, `retry:`: nothing the bot needs.
            return Ok(());
        }
        let value = value.strip_prefix(' ').unwrap_or(value);
        // Some servers put one payload per line with no blank line between events: a complete
        // payload already waiting is dispatched before the next one starts.
        if !self.data.is_empty() && is_complete(&self.data.join("\n")) {
            self.dispatch(on_event)?;
        }
        self.data.push(value.to_owned());
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(StreamEvent)) -> Result<(), ResponseError> {
        if self.data.is_empty() {
            return Ok(());
        }
        let payload = std::mem::take(&mut self.data).join("\n");
        let payload = payload.trim();
        if payload == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if payload.is_empty() {
            return Ok(());
        }
        let chunk: WireResponse = serde_json::from_str(payload)
            .map_err(|err| ResponseError::Malformed(format!("a stream chunk: {err}")))?;
        self.chunks += 1;
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        if let Some(error) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            return Err(ResponseError::ServerError(error_text(error)));
        }
        // Only the first choice is ever asked for; chunks with no choices (Azure's first one,
        // usage-only last ones) carry nothing for us.
        for choice in chunk.choices {
            if choice.index.unwrap_or(0) == 0 {
                self.choice(choice, on_event);
            }
        }
        Ok(())
    }

    fn choice(&mut self, choice: WireChoice, on_event: &mut dyn FnMut(StreamEvent)) {
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        let Some(delta) = choice.delta.or(choice.message) else {
            if let Some(text) = choice.text {
                self.text(&text, on_event);
            }
            return;
        };
        if has_reasoning(&delta.reasoning_content) || has_reasoning(&delta.reasoning) {
            self.reasoning_field = true;
            self.announce_thinking(on_event);
        }
        if let Some(text) = content_text(&delta.content).or(choice.text) {
            self.text(&text, on_event);
        }
        for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
            let index = match call.index {
                Some(index) => index,
                // No index: a new call when it has an id, else more of the last one.
                None if call.id.is_some() => self.calls.len() as u64 + position as u64,
                None => self.calls.keys().next_back().copied().unwrap_or(0),
            };
            let entry = self.calls.entry(index).or_default();
            if let Some(id) = call.id.filter(|id| !id.trim().is_empty()) {
                entry.id = id;
            }
            if let Some(function) = call.function {
                if let Some(name) = function.name.filter(|name| !name.is_empty()) {
                    if entry.name.is_empty() {
                        entry.name = name;
                    }
                }
                match &function.arguments {
                    Value::String(more) => entry.arguments.push_str(more),
                    Value::Null => {}
                    whole => entry.arguments = arguments_text(whole),
                }
            }
        }
    }

    fn text(&mut self, text: &str, on_event: &mut dyn FnMut(StreamEvent)) {
        if text.is_empty() {
            return;
        }
        self.raw_content
            .get_or_insert_with(String::new)
            .push_str(text);
        let filtered = self.filter.push(text);
        if filtered.thinking {
            self.announce_thinking(on_event);
        }
        self.emit(filtered.visible, on_event);
    }

    fn emit(&mut self, visible: String, on_event: &mut dyn FnMut(StreamEvent)) {
        if visible.is_empty() {
            return;
        }
        self.thinking = false;
        self.emitted_text = true;
        on_event(StreamEvent::Text(visible));
    }

    fn announce_thinking(&mut self, on_event: &mut dyn FnMut(StreamEvent)) {
        if !self.thinking {
            self.thinking = true;
            on_event(StreamEvent::Thinking);
        }
    }

    /// Ends the stream (after `[DONE]` or when the body ended without it) and returns the message.
    pub fn finish(
        mut self,
        on_event: &mut dyn FnMut(StreamEvent),
    ) -> Result<AssistantMessage, ResponseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_end(&line, on_event)?;
        }
        self.dispatch(on_event)?;
        let rest = self.filter.finish();
        self.emit(rest, on_event);
        if self.chunks == 0 {
            return Err(ResponseError::EmptyStream);
        }
        let calls = std::mem::take(&mut self.calls)
            .into_values()
            .enumerate()
            .map(|(n, call)| ToolCall {
                id: if call.id.is_empty() {
                    format!("call_{n}")
                } else {
                    call.id
                },
                name: call.name,
                arguments: call.arguments,
            })
            .collect();
        let saw_think = self.filter.saw_reasoning();
        let mut message = assemble(
            self.raw_content.as_deref(),
            calls,
            FinishReason::parse(self.finish_reason.as_deref()),
            self.reasoning_field,
        );
        if let Ok(message) = &mut message {
            message.had_reasoning |= saw_think;
            message.streamed = true;
            message.usage = self.usage;
        }
        message
    }
}

/// Whether a payload is complete on its own (`[DONE]` or a whole JSON value).
fn is_complete(payload: &str) -> bool {
    let payload = payload.trim();
    payload == "[DONE]" || serde_json::from_str::<serde::de::IgnoredAny>(payload).is_ok()
}

/// Why reading a stream failed.
#[derive(Debug)]
pub enum StreamFailure<E> {
    /// The stream's content was unusable.
    Response(ResponseError),
    /// The connection failed before the answer was complete; `emitted_text` says whether the
    /// caller has already shown part of it.
    Transport { error: E, emitted_text: bool },
}

impl<E: Display> Display for StreamFailure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Response(err) => err.fmt(f),
            Self::Transport { error, .. } => write!(f, "the stream broke off: {error}"),
        }
    }
}

/// Reads a whole SSE chat completion from `chunks`, calling `on_event` with visible text deltas
/// and thinking notices, and returns the assembled message.
///
/// A stream that ends without `[DONE]` is complete when it ends; one that breaks off with an
/// error is still accepted if a chunk already gave a `finish_reason`.
pub async fn read_stream<S, B, E>(
    mut chunks: S,
    think_opens_implicitly: bool,
    on_event: &mut (dyn FnMut(StreamEvent) + Send),
) -> Result<AssistantMessage, StreamFailure<E>>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let mut assembler = StreamAssembler::new();
    if think_opens_implicitly {
        assembler.filter = ThinkFilter::opened_implicitly();
    }
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => assembler
                .push(bytes.as_ref(), &mut *on_event)
                .map_err(StreamFailure::Response)?,
            Err(error) if !assembler.saw_finish() => {
                return Err(StreamFailure::Transport {
                    error,
                    emitted_text: assembler.emitted_text(),
                })
            }
            Err(_) => break,
        }
        if assembler.is_done() {
            break;
        }
    }
    assembler
        .finish(&mut *on_event)
        .map_err(StreamFailure::Response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` through an assembler in pieces of `size` bytes.
    fn run(body: &str, size: usize) -> (Vec<StreamEvent>, Result<AssistantMessage, ResponseError>) {
        let mut events = Vec::new();
        let mut on_event = |event| events.push(event);
        let mut assembler = StreamAssembler::new();
        let mut result = Ok(());
        for piece in body.as_bytes().chunks(size) {
            result = result.and_then(|_| assembler.push(piece, &mut on_event));
        }
        let message = result.and_then(|_| assembler.finish(&mut on_event));
        (events, message)
    }

    fn text_of(events: &[StreamEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Text(t) => Some(t.as_str()),
                StreamEvent::Thinking => None,
            })
            .collect()
    }

    fn chunk(delta: &str) -> String {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{delta}}}]}}\n\n")
    }

    #[test]
    fn text_deltas_in_any_split() {
        let body = format!(
            ": keep-alive\n\ndata: {{\"choices\":[]}}\n\n{}{}: keep-alive\n\n{}data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"eos_token\"}}]}}\n\ndata: [DONE]\n\n",
            chunk(r#"{"role":"assistant","content":"ずんだ"}"#),
            chunk(r#"{"content":"もちは"}"#),
            chunk(r#"{"content":"おいしいのだ"}"#),
        );
        for size in [1, 2, 3, 7, 64, body.len()] {
            let (events, message) = run(&body, size);
            let message = message.unwrap();
            assert_eq!(text_of(&events), "ずんだもちはおいしいのだ", "size {size}");
            assert_eq!(message.content.as_deref(), Some("ずんだもちはおいしいのだ"));
            assert_eq!(
                message.finish_reason,
                FinishReason::Other("eos_token".into())
            );
        }
    }

    #[test]
    fn no_done_no_blank_lines_and_crlf_are_fine() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n";
        let (events, message) = run(body, 5);
        assert_eq!(text_of(&events), "ab");
        assert_eq!(message.unwrap().content.as_deref(), Some("ab"));
        // Not even a final newline.
        let (_, message) = run("data: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}", 4);
        assert_eq!(message.unwrap().content.as_deref(), Some("c"));
    }

    #[test]
    fn tool_call_deltas_are_accumulated_by_index() {
        let body = [
            chunk(r#"{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"web_search","arguments":""}}]}"#),
            chunk(r#"{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"web_search","arguments":"{\"query\":"}}]}"#),
            chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"query\":"}}]}"#),
            chunk(r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"ずんだ\"}"}}]}"#),
            chunk(r#"{"tool_calls":[{"index":1,"function":{"arguments":"\"枝豆\"}"}}]}"#),
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n".to_owned(),
        ]
        .concat();
        for size in [1, 9, body.len()] {
            let (events, message) = run(&body, size);
            assert!(events.is_empty());
            let message = message.unwrap();
            assert_eq!(message.content, None);
            assert_eq!(
                message.tool_calls,
                vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "web_search".into(),
                        arguments: r#"{"query":"ずんだ"}"#.into()
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "web_search".into(),
                        arguments: r#"{"query":"枝豆"}"#.into()
                    },
                ]
            );
        }
    }

    #[test]
    fn thoughts_become_a_thinking_notice() {
        let body = [
            chunk(r#"{"content":"<thi"}"#),
            chunk(r#"{"content":"nk>秘密の"}"#),
            chunk(r#"{"content":"考え</think>\n\n"}"#),
            chunk(r#"{"content":"答えなのだ"}"#),
        ]
        .concat();
        let (events, message) = run(&body, 3);
        assert_eq!(
            events,
            vec![
                StreamEvent::Thinking,
                StreamEvent::Text("答えなのだ".into())
            ]
        );
        let message = message.unwrap();
        assert_eq!(message.content.as_deref(), Some("答えなのだ"));
        assert!(message.had_reasoning);

        let body = [
            chunk(r#"{"reasoning_content":"秘密"}"#),
            chunk(r#"{"reasoning":"もっと秘密"}"#),
            chunk(r#"{"content":"答えなのだ","reasoning_content":null}"#),
        ]
        .concat();
        let (events, message) = run(&body, 11);
        assert_eq!(
            events,
            vec![
                StreamEvent::Thinking,
                StreamEvent::Text("答えなのだ".into())
            ]
        );
        assert!(message.unwrap().had_reasoning);
    }

    #[test]
    fn the_usage_only_last_chunk_is_read() {
        // OpenAI's shape with `stream_options.include_usage`: `usage: null` on every chunk, then
        // a chunk with empty `choices` and the usage, then `[DONE]`.
        let with_null = |delta: &str| {
            format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{delta}}}],\"usage\":null}}\n\n")
        };
        let body = format!(
            "{}{}data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n\
             data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":321,\"completion_tokens\":9,\"total_tokens\":330}}}}\n\n\
             data: [DONE]\n\n",
            with_null(r#"{"role":"assistant","content":"ずんだ"}"#),
            with_null(r#"{"content":"なのだ"}"#),
        );
        for size in [1, 5, body.len()] {
            let (events, message) = run(&body, size);
            let message = message.unwrap();
            assert_eq!(text_of(&events), "ずんだなのだ");
            assert_eq!(
                message.usage,
                Some(super::super::response::Usage {
                    prompt_tokens: 321,
                    completion_tokens: 9
                })
            );
        }
        // Without the usage chunk the stream reports none.
        let body = format!("{}data: [DONE]\n\n", with_null(r#"{"content":"のだ"}"#));
        assert_eq!(run(&body, 3).1.unwrap().usage, None);
    }

    #[test]
    fn unusable_streams_are_errors() {
        let (_, message) = run("", 1);
        assert_eq!(message, Err(ResponseError::EmptyStream));
        let (_, message) = run(": keep-alive\n\ndata: [DONE]\n\n", 2);
        assert_eq!(message, Err(ResponseError::EmptyStream));
        let (_, message) = run("data: {\"choices\":[]}\n\ndata: [DONE]\n\n", 2);
        assert!(matches!(message, Err(ResponseError::Empty(_))));
        let (_, message) = run("data: {\"error\":{\"message\":\"overloaded\"}}\n\n", 2);
        assert_eq!(
            message,
            Err(ResponseError::ServerError("overloaded".into()))
        );
        let (_, message) = run("data: {not json\n\n", 2);
        assert!(matches!(message, Err(ResponseError::Malformed(_))));
        let (_, message) = run(&chunk(r#"{"content":"<think>ずっと考える"}"#), 4);
        assert_eq!(message, Err(ResponseError::OnlyReasoning));
    }

    #[tokio::test]
    async fn read_stream_accepts_a_break_after_the_finish_reason() {
        let pieces: Vec<Result<Vec<u8>, &str>> = vec![
            Ok(chunk(r#"{"content":"のだ"}"#).into_bytes()),
            Ok(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_vec()),
            Err("connection reset"),
        ];
        let mut seen = Vec::new();
        let message = read_stream(futures::stream::iter(pieces), false, &mut |e| seen.push(e))
            .await
            .unwrap();
        assert_eq!(message.content.as_deref(), Some("のだ"));

        let pieces: Vec<Result<Vec<u8>, &str>> = vec![
            Ok(chunk(r#"{"content":"途中"}"#).into_bytes()),
            Err("connection reset"),
        ];
        let err = read_stream(futures::stream::iter(pieces), false, &mut |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StreamFailure::Transport {
                    emitted_text: true,
                    ..
                }
            ),
            "{err}"
        );
    }
}
