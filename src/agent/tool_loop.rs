//! The rounds of one answer: ask the model; while it calls `web_search` (and rounds remain), run
//! the searches concurrently and send their results back; then return its text.
//!
//! After `max_tool_rounds` rounds the request goes out without tools, so the model has to answer
//! with what it has instead of looping. Every tool call gets a tool message with its id, even a
//! malformed or unknown one: OpenAI rejects a conversation with unanswered tool calls.

use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionTool, ChatCompletionTools,
    CreateChatCompletionRequest, FunctionObject,
};
use futures::future::join_all;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tracing::debug;
use zundamon_actors::{Exchange, Question};

use super::prompt::{format_now, frame_question, Conversation};
use super::{AgentError, ZundaAgent};

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
fn web_search_tool() -> ChatCompletionTools {
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
        loop {
            let tools_allowed = round < settings.max_tool_rounds;
            let request = CreateChatCompletionRequest {
                model: settings.model.clone(),
                messages: conversation.messages(),
                temperature: Some(settings.temperature),
                tools: tools_allowed.then(|| vec![web_search_tool()]),
                ..Default::default()
            };
            let message = self.llm.complete(&request, deadline).await?;
            let calls = message.tool_calls.unwrap_or_default();
            if calls.is_empty() || !tools_allowed {
                let answer = message.content.unwrap_or_default().trim().to_owned();
                debug!(
                    channel_id = question.channel_id,
                    rounds = round,
                    chars = answer.chars().count(),
                    "model answered"
                );
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
            conversation.push_tool_round(message.content, calls, results);
        }
    }

    /// Runs one tool call; returns `(tool_call_id, result text)`.
    async fn run_tool(
        &self,
        call: &ChatCompletionMessageToolCalls,
        position: usize,
    ) -> (String, String) {
        let (id, name, arguments) = match call {
            ChatCompletionMessageToolCalls::Function(call) => (
                call.id.clone(),
                call.function.name.as_str(),
                call.function.arguments.as_str(),
            ),
            ChatCompletionMessageToolCalls::Custom(call) => (
                call.id.clone(),
                call.custom_tool.name.as_str(),
                call.custom_tool.input.as_str(),
            ),
        };
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
