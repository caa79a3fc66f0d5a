//! The rounds of one answer: ask the model; while it calls `web_search` (and rounds remain), run
//! the searches concurrently and send their results back; then return its text.
//!
//! After `max_tool_rounds` rounds the request goes out without tools, so the model has to answer
//! with what it has instead of looping. A server that rejects `tools` (HTTP 400 naming them) gets
//! the same question again without them, and with `ZUNDA_TOOLS=auto` is never offered tools again
//! by this process. Every tool call gets a tool message with its id, even a
//! malformed or unknown one: OpenAI rejects a conversation with unanswered tool calls.

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequest, FunctionCall, FunctionObject,
};
use futures::future::join_all;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, warn};
use zundamon_actors::{Exchange, Question};

use super::prompt::{format_now, frame_question, Conversation};
use super::response::ToolCall;
use super::{AgentError, ZundaAgent};
use crate::config::ToolMode;

/// The tool's name as the model sees it.
pub const WEB_SEARCH: &str = "web_search";
/// Searches run in one round at most; further calls in the same round are answered with a refusal
/// so one reply cannot fan out into dozens of requests.
const MAX_CALLS_PER_ROUND: usize = 5;

#[derive(Deserialize)]
struct WebSearchArgs {
    query: String,
}

/// The `web_search` function definition sent with every request that allows tools.
pub(super) fn web_search_tool() -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: WEB_SEARCH.into(),
            description: Some(
                "ユーザーの質問に関する知識をWebで検索するのだ。最新の情報や知らないことを調べるときに使うのだ。\
                 Finds knowledge about the user's question on the Web (DuckDuckGo)."
                    .into(),
            ),
            parameters: Some(json!({
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "description": "検索キーワード (search keywords)"
                    }
                },
                "required": ["query"],
                "additionalProperties": false
            })),
            strict: None,
        },
    })
}

impl ZundaAgent {
    pub(super) async fn run_turn(
        &self,
        question: &Question,
        history: &[Exchange],
        deadline: Instant,
    ) -> Result<String, AgentError> {
        let settings = &self.settings;
        let now = format_now((self.clock)(), settings.time_zone);
        let mut conversation = Conversation::new(
            &settings.persona,
            history,
            frame_question(&question.user_name, &now, &question.text),
            &settings.closing_reminder,
        );
        let mut round = 0u32;
        let mut had_reasoning = false;
        loop {
            let offer_tools = round < settings.max_tool_rounds && self.offers_tools();
            let mut request = CreateChatCompletionRequest {
                model: settings.model.clone(),
                messages: conversation.messages(),
                temperature: Some(settings.temperature),
                tools: offer_tools.then(|| vec![web_search_tool()]),
                ..Default::default()
            };
            let message = match self.llm.complete(&request, deadline).await {
                Ok(message) => message,
                Err(err)
                    if offer_tools
                        && settings.tool_mode == ToolMode::Auto
                        && err.rejects_tools() =>
                {
                    self.no_tool_support
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    warn!(
                        upstream = self.llm.upstream(),
                        model = %settings.model,
                        error = %err,
                        "the chat model rejected tools: answering from the model's own knowledge, \
                         without web search, from now on (ZUNDA_TOOLS=auto)"
                    );
                    request.tools = None;
                    self.llm.complete(&request, deadline).await?
                }
                Err(err) => return Err(err.into()),
            };
            had_reasoning |= message.had_reasoning;
            let calls = message.tool_calls;
            if calls.is_empty() || !offer_tools {
                let answer = message.content.unwrap_or_default();
                debug!(
                    channel_id = question.channel_id,
                    rounds = round,
                    chars = answer.chars().count(),
                    had_reasoning,
                    finish_reason = ?message.finish_reason,
                    "model answered"
                );
                if had_reasoning {
                    self.metrics.reasoning_answer();
                }
                return if answer.is_empty() {
                    Err(AgentError::EmptyAnswer)
                } else {
                    Ok(answer)
                };
            }
            round += 1;
            debug!(
                channel_id = question.channel_id,
                round,
                calls = calls.len(),
                "model called tools"
            );
            let results = join_all(
                calls
                    .iter()
                    .enumerate()
                    .map(|(n, call)| self.run_tool(call, n)),
            )
            .await;
            let calls = calls.into_iter().map(request_call).collect();
            conversation.push_tool_round(message.content, calls, results);
        }
    }

    /// Whether this request may offer tools: not with `ZUNDA_TOOLS=off`, nor once the server
    /// rejected them (`auto`).
    fn offers_tools(&self) -> bool {
        match self.settings.tool_mode {
            ToolMode::Off => false,
            ToolMode::On => true,
            ToolMode::Auto => !self
                .no_tool_support
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Runs one tool call; returns `(tool_call_id, result text)`.
    async fn run_tool(&self, call: &ToolCall, position: usize) -> (String, String) {
        let (id, name, arguments) = (call.id.clone(), call.name.as_str(), call.arguments.as_str());
        if name != WEB_SEARCH {
            return (
                id,
                format!("そのツールはないのだ（unknown tool `{name}`; the only tool is `{WEB_SEARCH}`）。"),
            );
        }
        if position >= MAX_CALLS_PER_ROUND {
            return (
                id,
                format!("一度に検索できるのは{MAX_CALLS_PER_ROUND}回までなのだ（too many searches in one round）。"),
            );
        }
        let query = match serde_json::from_str::<WebSearchArgs>(arguments) {
            Ok(args) if !args.query.trim().is_empty() => args.query,
            _ => {
                debug!(arguments = %arguments, "malformed web_search arguments");
                return (
                    id,
                    "引数が正しくないのだ（invalid arguments: expected {\"query\": \"<non-empty string>\"}）。".to_owned(),
                );
            }
        };
        debug!(query = %query, "web_search");
        (id, self.search.tool_result(&query).await)
    }
}

/// A tool call as sent back to the model in the next request (always `"type": "function"`).
fn request_call(call: ToolCall) -> ChatCompletionMessageToolCalls {
    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
        id: call.id,
        function: FunctionCall {
            name: call.name,
            arguments: call.arguments,
        },
    })
}
