//! Lenient reading of chat completion responses: only the fields the bot uses, with defaults for
//! everything real OpenAI-compatible servers leave out or spell differently.
//!
//! Requests are still built with async-openai's strict types; responses are not deserialized into
//! them, because servers differ from OpenAI's schema in ways that do not matter to us: no `id`,
//! `object`, `created` or `usage`, no message `role`, a tool call without `"type": "function"`,
//! `finish_reason` `""` or `"eos_token"`, `content` as an array of text parts, extra fields. What
//! the bot needs is the visible text and the tool calls; everything else is optional here.
//!
//! Reasoning never leaves this module as text: `<think>…</think>` is stripped from `content`
//! (see [`super::reasoning`]) and `reasoning_content` / `reasoning` fields are only noted.

use serde::Deserialize;
use serde_json::Value;

use super::reasoning::strip_reasoning;

/// Why the model stopped. Unknown values are kept as text and treated like `stop`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FinishReason {
    #[default]
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// Anything else (`""`, `"eos_token"`, `"eos"`…), as the server wrote it.
    Other(String),
}

impl FinishReason {
    /// Reads a server's `finish_reason`; `None`/null means the server did not say.
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None => Self::Stop,
            Some("stop") => Self::Stop,
            // `max_tokens` (some proxies), `length` (OpenAI): the answer was cut.
            Some("length" | "max_tokens" | "model_length") => Self::Length,
            Some("tool_calls" | "function_call" | "tool_use") => Self::ToolCalls,
            Some("content_filter") => Self::ContentFilter,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// Whether the answer was cut short by a token limit.
    pub fn is_length(&self) -> bool {
        matches!(self, Self::Length)
    }
}

/// One tool call, with everything a server may leave out filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The server's id, or `call_<n>` when it sent none (the id only has to match our tool
    /// message in the next request).
    pub id: String,
    /// The function name; empty when the server sent none (answered as an unknown tool).
    pub name: String,
    /// The arguments as JSON text (an object some servers send is re-encoded).
    pub arguments: String,
}

/// The assistant message of a response: what the bot shows and the tools it must run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssistantMessage {
    /// The visible text, reasoning removed and trimmed; `None` when there is none.
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    /// Whether the server sent reasoning (think tags, `reasoning_content` or `reasoning`).
    pub had_reasoning: bool,
    /// Whether it arrived as an event stream.
    pub streamed: bool,
    /// Whether its text closed a thought it never opened (the chat template opens it).
    pub think_opened_implicitly: bool,
    /// The token counts the server reported, if it did.
    pub usage: Option<Usage>,
}

/// Token counts a server reports with an answer (`usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt and completion tokens together.
    pub fn total(self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Adds up the usage of several responses (e.g. the rounds of one answer).
impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
    }
}

impl AssistantMessage {
    /// Whether the message can be used: it has visible text or tool calls.
    pub fn is_usable(&self) -> bool {
        self.content.is_some() || !self.tool_calls.is_empty()
    }
}

/// Why a response could not be read. Texts are for operators' logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the body is not a chat completion ({0})")]
    Malformed(String),
    #[error("the stream carried no chunks")]
    EmptyStream,
    #[error("the server reported an error: {0}")]
    ServerError(String),
    #[error("the response has no choices")]
    NoChoices,
    #[error("empty answer: the first choice has no text and no tool call (finish_reason {0:?})")]
    Empty(String),
    #[error("empty answer: the first choice has only reasoning, no visible text")]
    OnlyReasoning,
}

/// The wire shapes we accept, every field optional.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct WireResponse {
    pub choices: Vec<WireChoice>,
    pub error: Option<Value>,
    /// Read leniently: a server that sends something else there has not reported usage.
    #[serde(deserialize_with = "lenient_usage")]
    pub usage: Option<Usage>,
}

fn lenient_usage<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Usage>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value::<Usage>(value)
        .ok()
        .filter(|usage| usage.prompt_tokens + usage.completion_tokens > 0))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct WireChoice {
    pub index: Option<u64>,
    /// Present in plain responses…
    pub message: Option<WireMessage>,
    /// …and in streamed chunks.
    pub delta: Option<WireMessage>,
    /// Legacy completions-style text some servers put on the choice.
    pub text: Option<String>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct WireMessage {
    pub content: Value,
    pub reasoning_content: Value,
    pub reasoning: Value,
    pub tool_calls: Option<Vec<WireToolCall>>,
    /// The legacy single `function_call` some older servers still send.
    pub function_call: Option<WireFunction>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct WireToolCall {
    pub index: Option<u64>,
    pub id: Option<String>,
    pub function: Option<WireFunction>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct WireFunction {
    pub name: Option<String>,
    pub arguments: Value,
}

/// Text of a `content` value: a string, or the text of an array of parts (`{"type":"text",
/// "text":…}` or plain strings); null and anything else are no text.
pub(super) fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let text: String = parts
                .iter()
                .filter_map(|part| match part {
                    Value::String(text) => Some(text.as_str()),
                    Value::Object(fields) => {
                        let kind = fields.get("type").and_then(Value::as_str);
                        if matches!(kind, None | Some("text" | "output_text")) {
                            fields.get("text").and_then(Value::as_str)
                        } else {
                            None
                        }
                    }
                    _ => None,
                })
                .collect();
            Some(text)
        }
        _ => None,
    }
}

/// Arguments as JSON text: a string as is, an object or array re-encoded, nothing as `{}`.
pub(super) fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether a reasoning field carries any reasoning.
pub(super) fn has_reasoning(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(text) => !text.trim().is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        _ => true,
    }
}

/// A server's error object as one line (`type/code: message`).
pub(super) fn error_text(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        Value::Object(fields) => {
            let message = fields
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            let label = ["code", "type"]
                .iter()
                .filter_map(|key| fields.get(*key).and_then(Value::as_str))
                .find(|label| !label.is_empty());
            match label {
                Some(label) => format!("{label}: {message}"),
                None => message.to_owned(),
            }
        }
        other => other.to_string(),
    }
}

/// Reads a plain (non-streamed) chat completion body into its first choice's message.
pub fn parse_completion(body: &[u8]) -> Result<AssistantMessage, ResponseError> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|err| ResponseError::Malformed(err.to_string()))?;
    if wire.choices.is_empty() {
        if let Some(error) = wire.error.as_ref().filter(|e| !e.is_null()) {
            return Err(ResponseError::ServerError(error_text(error)));
        }
        return Err(ResponseError::NoChoices);
    }
    // The first choice by index (servers list them in order, but say so explicitly).
    let choice = wire
        .choices
        .into_iter()
        .min_by_key(|choice| choice.index.unwrap_or(0))
        .expect("choices is not empty");
    let message = choice.message.or(choice.delta).unwrap_or_default();
    let raw = content_text(&message.content).or(choice.text);
    let mut tool_calls: Vec<ToolCall> = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(n, call)| {
            let function = call.function.unwrap_or_default();
            ToolCall {
                id: call
                    .id
                    .filter(|id| !id.trim().is_empty())
                    .unwrap_or_else(|| format!("call_{n}")),
                name: function.name.unwrap_or_default(),
                arguments: arguments_text(&function.arguments),
            }
        })
        .collect();
    if tool_calls.is_empty() {
        if let Some(function) = message.function_call {
            tool_calls.push(ToolCall {
                id: "call_0".into(),
                name: function.name.unwrap_or_default(),
                arguments: arguments_text(&function.arguments),
            });
        }
    }
    let reasoning_field =
        has_reasoning(&message.reasoning_content) || has_reasoning(&message.reasoning);
    let mut message = assemble(
        raw.as_deref(),
        tool_calls,
        FinishReason::parse(choice.finish_reason.as_deref()),
        reasoning_field,
    )?;
    message.usage = wire.usage;
    Ok(message)
}

/// Builds the message from the raw text: reasoning stripped, emptiness checked.
pub(super) fn assemble(
    raw: Option<&str>,
    tool_calls: Vec<ToolCall>,
    finish_reason: FinishReason,
    reasoning_field: bool,
) -> Result<AssistantMessage, ResponseError> {
    let stripped = raw.map(strip_reasoning);
    let had_think = stripped.as_ref().is_some_and(|s| s.had_reasoning);
    let think_opened_implicitly = stripped.as_ref().is_some_and(|s| s.opened_implicitly);
    let content = stripped
        .map(|s| s.visible.trim().to_owned())
        .filter(|text| !text.is_empty());
    let message = AssistantMessage {
        content,
        tool_calls,
        finish_reason,
        had_reasoning: had_think || reasoning_field,
        streamed: false,
        think_opened_implicitly,
        usage: None,
    };
    if message.is_usable() {
        return Ok(message);
    }
    if had_think {
        return Err(ResponseError::OnlyReasoning);
    }
    let finish = match &message.finish_reason {
        FinishReason::Stop => "stop".to_owned(),
        FinishReason::Length => "length".to_owned(),
        FinishReason::ToolCalls => "tool_calls".to_owned(),
        FinishReason::ContentFilter => "content_filter".to_owned(),
        FinishReason::Other(other) => other.clone(),
    };
    Err(ResponseError::Empty(finish))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<AssistantMessage, ResponseError> {
        parse_completion(value.to_string().as_bytes())
    }

    #[test]
    fn the_minimal_response_is_enough() {
        let message =
            parse(json!({"choices": [{"message": {"content": "こんにちはなのだ"}}]})).unwrap();
        assert_eq!(message.content.as_deref(), Some("こんにちはなのだ"));
        assert_eq!(message.finish_reason, FinishReason::Stop);
        assert!(!message.had_reasoning);
    }

    #[test]
    fn unknown_finish_reasons_are_kept_and_act_like_stop() {
        for (raw, expected) in [
            ("eos_token", FinishReason::Other("eos_token".into())),
            ("", FinishReason::Other(String::new())),
            ("length", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
        ] {
            let message =
                parse(json!({"choices": [{"message": {"content": "のだ"}, "finish_reason": raw}]}))
                    .unwrap();
            assert_eq!(message.finish_reason, expected);
            assert_eq!(message.content.as_deref(), Some("のだ"));
        }
    }

    #[test]
    fn usage_is_read_when_reported() {
        let message = parse(json!({"choices": [{"message": {"content": "のだ"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}))
        .unwrap();
        assert_eq!(
            message.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            })
        );
        for odd in [
            json!(null),
            json!("n/a"),
            json!({"prompt_tokens": "x"}),
            json!({}),
        ] {
            let message =
                parse(json!({"choices": [{"message": {"content": "のだ"}}], "usage": odd}))
                    .unwrap();
            assert_eq!(message.usage, None);
        }
    }

    #[test]
    fn usage_adds_up() {
        let mut sum = Usage::default();
        sum += Usage {
            prompt_tokens: 12,
            completion_tokens: 3,
        };
        sum += Usage {
            prompt_tokens: 40,
            completion_tokens: 5,
        };
        assert_eq!(
            sum,
            Usage {
                prompt_tokens: 52,
                completion_tokens: 8
            }
        );
        assert_eq!(sum.total(), 60);
        let copied = sum;
        assert_eq!(copied.total(), sum.total());
    }

    #[test]
    fn content_parts_are_joined() {
        let message = parse(
            json!({"choices": [{"message": {"role": "assistant", "content": [
                {"type": "text", "text": "ずんだ"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "なのだ"}
            ]}}]}),
        )
        .unwrap();
        assert_eq!(message.content.as_deref(), Some("ずんだなのだ"));
    }

    #[test]
    fn tool_calls_without_type_or_id_are_filled_in() {
        let message = parse(json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"function": {"name": "web_search", "arguments": "{\"query\":\"a\"}"}},
            {"id": "x1", "type": "function", "function": {"name": "web_search", "arguments": {"query": "b"}}}
        ]}, "finish_reason": "tool_calls"}]}))
        .unwrap();
        assert_eq!(message.content, None);
        assert_eq!(
            message.tool_calls,
            vec![
                ToolCall {
                    id: "call_0".into(),
                    name: "web_search".into(),
                    arguments: "{\"query\":\"a\"}".into()
                },
                ToolCall {
                    id: "x1".into(),
                    name: "web_search".into(),
                    arguments: "{\"query\":\"b\"}".into()
                },
            ]
        );
    }

    #[test]
    fn reasoning_is_stripped_and_noted() {
        let think = parse(json!({"choices": [{"message": {"content": "<think>ユーザーは…</think>\n\n答えなのだ"}}]})).unwrap();
        assert_eq!(think.content.as_deref(), Some("答えなのだ"));
        assert!(think.had_reasoning);
        let field = parse(json!({"choices": [{"message": {"content": "答えなのだ", "reasoning_content": "secret thoughts"}}]})).unwrap();
        assert_eq!(field.content.as_deref(), Some("答えなのだ"));
        assert!(field.had_reasoning);
        let only = parse(json!({"choices": [{"message": {"content": "<think>考え中"}}]}));
        assert_eq!(only, Err(ResponseError::OnlyReasoning));
    }

    #[test]
    fn unusable_responses_say_what_is_missing() {
        assert_eq!(parse(json!({"choices": []})), Err(ResponseError::NoChoices));
        assert_eq!(parse(json!({})), Err(ResponseError::NoChoices));
        assert_eq!(
            parse(json!({"error": {"message": "model overloaded", "type": "server_error"}})),
            Err(ResponseError::ServerError(
                "server_error: model overloaded".into()
            ))
        );
        assert_eq!(
            parse(
                json!({"choices": [{"message": {"content": null}, "finish_reason": "eos_token"}]})
            ),
            Err(ResponseError::Empty("eos_token".into()))
        );
        assert!(matches!(
            parse_completion(b"<html>"),
            Err(ResponseError::Malformed(_))
        ));
        assert!(matches!(
            parse_completion(b""),
            Err(ResponseError::Malformed(_))
        ));
        // Wrong types where objects are expected are errors, not panics.
        assert!(parse(json!({"choices": "nope"})).is_err());
        assert!(parse(json!({"choices": [{"message": {"tool_calls": "x"}}]})).is_err());
    }
}
