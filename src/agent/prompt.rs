//! How one question becomes the message list sent to the chat model.
//!
//! The order is the original bot's, and it is the same on every request of the tool loop:
//!
//! 1. system: the persona prompt;
//! 2. the channel's window, oldest first: user (the question as typed) / assistant (the answer);
//! 3. user: the framed question (`私の名前は`{name}`です。今の時間は{now}です。…` + blank line + question);
//! 4. this turn's tool traffic: assistant messages carrying tool calls, each followed by its tool results;
//! 5. system: the closing reminder, always last, so the voice instruction is the freshest thing the
//!    model reads, even after long search results.
//!
//! A prompt too long for the server's context loses the window's oldest exchanges first, then
//! this turn's oldest tool rounds ([`Conversation::shed`]), for that request only.
//!
//! Only the plain question and the final answer ever enter the window (the channel actor stores what
//! the agent returns), so the framing and the tool traffic never pile up in later prompts.

use std::collections::VecDeque;

use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionRequestAssistantMessage,
    ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestMessage,
    ChatCompletionRequestMessageContentPartImage, ChatCompletionRequestMessageContentPartText,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestToolMessage, ChatCompletionRequestToolMessageContent,
    ChatCompletionRequestUserMessage, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, ImageUrl,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use zundamon_actors::Exchange;

/// The format of the current time given to the model (the original's `%Y/%m/%d %H:%M:%S`).
pub const TIME_FORMAT: &str = "%Y/%m/%d %H:%M:%S";

/// `now` in the configured time zone, formatted as the model sees it.
pub fn format_now(now: DateTime<Utc>, tz: Tz) -> String {
    now.with_timezone(&tz).format(TIME_FORMAT).to_string()
}

/// The user message of this turn: who asks, when, then the question after a blank line.
///
/// Backticks and line breaks are removed from the name: it sits between backticks on the first
/// line, and a display name must not be able to close that quote or start a line of its own.
pub fn frame_question(user_name: &str, now: &str, question: &str) -> String {
    let name: String = user_name
        .chars()
        .filter(|c| *c != '`' && !c.is_control())
        .collect();
    format!(
        "私の名前は`{name}`です。今の時間は{now}です。以上を踏まえて以下の質問に答えてください。\n\n{question}"
    )
}

/// The messages of one question, built once and extended by each tool round.
///
/// When the server says the prompt does not fit its context, the conversation can shed weight
/// for that request: first the window's oldest exchanges, then this turn's oldest tool rounds,
/// down to persona, question and closing reminder alone.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The persona prompt, always first.
    persona: ChatCompletionRequestMessage,
    /// The channel's window, oldest first, as (user, assistant) pairs.
    window: VecDeque<[ChatCompletionRequestMessage; 2]>,
    /// The framed question of this turn.
    question: ChatCompletionRequestMessage,
    /// This turn's rounds of tool traffic: each the assistant message that asked for the calls
    /// and then one tool message per call.
    turn: VecDeque<Vec<ChatCompletionRequestMessage>>,
    /// The closing reminder, re-appended after the turn on every request.
    closing: ChatCompletionRequestMessage,
}

/// What [`Conversation::shed`] removed to make the prompt shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The oldest exchange of the window.
    Exchange,
    /// This turn's oldest round of tool calls and their results.
    ToolRound,
}

impl Conversation {
    /// Starts a turn: `history` is the channel's window (oldest first), `framed_question` the
    /// output of [`frame_question`].
    pub fn new(
        persona: &str,
        history: &[Exchange],
        framed_question: String,
        closing_reminder: &str,
    ) -> Self {
        Self {
            persona: system(persona),
            window: history
                .iter()
                .map(|exchange| {
                    [
                        user(exchange.question.clone()),
                        assistant_text(exchange.answer.clone()),
                    ]
                })
                .collect(),
            question: user(framed_question),
            turn: VecDeque::new(),
            closing: system(closing_reminder),
        }
    }

    /// Shows the model these images with the question (`data:` URLs): the question becomes a
    /// text part followed by one `image_url` part per image.
    pub fn attach_images(&mut self, images: &[String]) {
        if images.is_empty() {
            return;
        }
        let ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Text(text),
            ..
        }) = &self.question
        else {
            return;
        };
        let mut parts = vec![ChatCompletionRequestUserMessageContentPart::Text(
            ChatCompletionRequestMessageContentPartText {
                text: text.clone(),
                ..Default::default()
            },
        )];
        parts.extend(images.iter().map(|url| {
            ChatCompletionRequestUserMessageContentPart::ImageUrl(
                ChatCompletionRequestMessageContentPartImage {
                    image_url: ImageUrl {
                        url: url.clone(),
                        detail: None,
                    },
                    ..Default::default()
                },
            )
        }));
        self.question = ChatCompletionRequestUserMessage {
            content: ChatCompletionRequestUserMessageContent::Array(parts),
            name: None,
        }
        .into();
    }

    /// Records one tool round: the assistant message that asked for the calls (with any text it
    /// carried), then one tool message per call, `(tool_call_id, result)`, in the calls' order.
    ///
    /// The assistant message always carries `content`, an empty string when the model wrote
    /// none: some chat templates (llama.cpp's ChatML) read `content` on every message and fail
    /// with HTTP 500 when it is missing or null.
    pub fn push_tool_round(
        &mut self,
        content: Option<String>,
        calls: Vec<ChatCompletionMessageToolCalls>,
        results: Vec<(String, String)>,
    ) {
        let text = content
            .filter(|text| !text.trim().is_empty())
            .unwrap_or_default();
        let mut round = Vec::with_capacity(1 + results.len());
        round.push(
            ChatCompletionRequestAssistantMessage {
                content: Some(ChatCompletionRequestAssistantMessageContent::Text(text)),
                tool_calls: Some(calls),
                ..Default::default()
            }
            .into(),
        );
        for (tool_call_id, result) in results {
            round.push(
                ChatCompletionRequestToolMessage {
                    content: ChatCompletionRequestToolMessageContent::Text(result),
                    tool_call_id,
                }
                .into(),
            );
        }
        self.turn.push_back(round);
    }

    /// Removes the oldest thing that may go for a shorter prompt: an exchange of the window
    /// while any is left, then the oldest tool round of this turn. `None` when only the persona,
    /// the question and the closing reminder are left.
    pub fn shed(&mut self) -> Option<Shed> {
        if self.window.pop_front().is_some() {
            return Some(Shed::Exchange);
        }
        self.turn.pop_front().map(|_| Shed::ToolRound)
    }

    /// Exchanges of the window still in the prompt.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    /// The full message list for the next request, closing reminder last.
    pub fn messages(&self) -> Vec<ChatCompletionRequestMessage> {
        let mut messages = Vec::with_capacity(3 + 2 * self.window.len() + self.turn.len() * 2);
        messages.push(self.persona.clone());
        messages.extend(self.window.iter().flatten().cloned());
        messages.push(self.question.clone());
        messages.extend(self.turn.iter().flatten().cloned());
        messages.push(self.closing.clone());
        messages
    }
}

pub(super) fn system(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestSystemMessage {
        content: ChatCompletionRequestSystemMessageContent::Text(text.to_owned()),
        name: None,
    }
    .into()
}

pub(super) fn user(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessage {
        content: ChatCompletionRequestUserMessageContent::Text(text),
        name: None,
    }
    .into()
}

fn assistant_text(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestAssistantMessage {
        content: Some(ChatCompletionRequestAssistantMessageContent::Text(text)),
        ..Default::default()
    }
    .into()
}

#[cfg(test)]
mod tests {
    use async_openai::types::chat::{ChatCompletionMessageToolCall, FunctionCall};
    use chrono::TimeZone;
    use serde_json::{json, Value};

    use super::*;

    fn as_json(conversation: &Conversation) -> Value {
        serde_json::to_value(conversation.messages()).unwrap()
    }

    #[test]
    fn now_is_formatted_in_the_configured_zone() {
        let now = Utc.with_ymd_and_hms(2024, 12, 31, 15, 4, 5).unwrap();
        assert_eq!(
            format_now(now, chrono_tz::Asia::Tokyo),
            "2025/01/01 00:04:05"
        );
        assert_eq!(format_now(now, chrono_tz::UTC), "2024/12/31 15:04:05");
    }

    #[test]
    fn the_question_is_framed_exactly_like_the_original() {
        assert_eq!(
            frame_question("たろう", "2025/01/01 00:04:05", "ずんだ餅って何？\n教えて"),
            "私の名前は`たろう`です。今の時間は2025/01/01 00:04:05です。以上を踏まえて以下の質問に答えてください。\n\nずんだ餅って何？\n教えて"
        );
    }

    #[test]
    fn a_name_cannot_break_out_of_its_quotes() {
        let framed = frame_question("a`b\nc", "now", "q");
        assert!(framed.starts_with("私の名前は`abc`です。"), "{framed}");
    }

    #[test]
    fn messages_are_persona_window_question_then_closing() {
        let history = vec![Exchange::new("q1", "a1"), Exchange::new("q2", "a2")];
        let conversation = Conversation::new("PERSONA", &history, "FRAMED".into(), "CLOSING");
        assert_eq!(
            as_json(&conversation),
            json!([
                {"role": "system", "content": "PERSONA"},
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2"},
                {"role": "user", "content": "FRAMED"},
                {"role": "system", "content": "CLOSING"},
            ])
        );
    }

    #[test]
    fn tool_rounds_go_between_the_question_and_the_closing_reminder() {
        let mut conversation = Conversation::new("PERSONA", &[], "FRAMED".into(), "CLOSING");
        let call = |id: &str, query: &str| {
            ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                id: id.into(),
                function: FunctionCall {
                    name: "web_search".into(),
                    arguments: json!({ "query": query }).to_string(),
                },
            })
        };
        conversation.push_tool_round(
            None,
            vec![call("call_1", "a"), call("call_2", "b")],
            vec![
                ("call_1".into(), "R1".into()),
                ("call_2".into(), "R2".into()),
            ],
        );
        conversation.push_tool_round(
            Some("調べるのだ".into()),
            vec![call("call_3", "c")],
            vec![("call_3".into(), "R3".into())],
        );
        let messages = as_json(&conversation);
        let roles: Vec<&str> = messages
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            [
                "system",
                "user",
                "assistant",
                "tool",
                "tool",
                "assistant",
                "tool",
                "system"
            ]
        );
        assert_eq!(messages[2]["tool_calls"][1]["id"], "call_2");
        assert_eq!(messages[2]["tool_calls"][1]["type"], "function");
        // Always a `content`, empty when the model wrote none (llama.cpp's template needs it).
        assert_eq!(messages[2]["content"], "");
        assert_eq!(
            messages[3],
            json!({"role": "tool", "content": "R1", "tool_call_id": "call_1"})
        );
        assert_eq!(messages[4]["tool_call_id"], "call_2");
        assert_eq!(messages[5]["content"], "調べるのだ");
        assert_eq!(messages[6]["content"], "R3");
        assert_eq!(messages[7], json!({"role": "system", "content": "CLOSING"}));
    }

    #[test]
    fn shedding_drops_the_oldest_exchanges_then_the_oldest_tool_rounds() {
        let history = vec![Exchange::new("q1", "a1"), Exchange::new("q2", "a2")];
        let mut conversation = Conversation::new("PERSONA", &history, "FRAMED".into(), "CLOSING");
        let call = |id: &str| {
            ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                id: id.into(),
                function: FunctionCall {
                    name: "web_search".into(),
                    arguments: "{}".into(),
                },
            })
        };
        conversation.push_tool_round(None, vec![call("c1")], vec![("c1".into(), "R1".into())]);
        conversation.push_tool_round(None, vec![call("c2")], vec![("c2".into(), "R2".into())]);
        let contents = |conversation: &Conversation| -> Vec<String> {
            as_json(conversation)
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(conversation.shed(), Some(Shed::Exchange));
        assert_eq!(
            contents(&conversation),
            ["PERSONA", "q2", "a2", "FRAMED", "", "R1", "", "R2", "CLOSING"]
        );
        assert_eq!(conversation.shed(), Some(Shed::Exchange));
        assert_eq!(conversation.window_len(), 0);
        assert_eq!(conversation.shed(), Some(Shed::ToolRound));
        assert_eq!(
            contents(&conversation),
            ["PERSONA", "FRAMED", "", "R2", "CLOSING"]
        );
        assert_eq!(conversation.shed(), Some(Shed::ToolRound));
        assert_eq!(conversation.shed(), None);
        assert_eq!(contents(&conversation), ["PERSONA", "FRAMED", "CLOSING"]);
    }
}
