//! The rounds of one answer: ask the model; while it calls `web_search` (and rounds remain), run
//! the searches concurrently and send their results back; then return its text.
//!
//! After `max_tool_rounds` rounds the request goes out without tools, so the model has to answer
//! with what it has instead of looping. Tools always go with `tool_choice: "auto"` (llama.cpp's
//! Python server ignores them otherwise). Each round is asked again when the server's refusal
//! says how:
//! - a server that rejects `tools` (HTTP 400 naming them) gets the same question without them,
//!   and with `ZUNDA_TOOLS=auto` is never offered tools again by this process;
//! - a server that cannot stream a request with tools (HTTP 200 with an empty body, or a
//!   400/422 naming `tool_choice` or streaming) gets it again without streaming, and so does
//!   every later round that offers tools;
//! - a prompt that overflows the model's context is sent again shorter: with a smaller answer
//!   allowance when the server said the prompt alone fits with room to answer, else without the
//!   window's oldest exchange, then without this turn's oldest tool round, down to the question
//!   alone. Only then does the question fail.
//!
//! Every tool call gets a tool message with its id, even a malformed or unknown one: OpenAI
//! rejects a conversation with unanswered tool calls.

use std::sync::atomic::Ordering;

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls, ChatCompletionTool,
    ChatCompletionToolChoiceOption, ChatCompletionTools, CreateChatCompletionRequest, FunctionCall,
    FunctionObject, ToolChoiceOptions,
};
use futures::future::join_all;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, warn};
use zundamon_actors::{Exchange, Live, Progress, Question};

use super::context;
use super::llm::LlmError;
use super::prompt::{format_now, frame_question, Conversation};
use super::response::{AssistantMessage, ToolCall};
use super::{AgentError, ZundaAgent};
use crate::config::ToolMode;
use crate::voice;

/// The model's final text and the URLs the search tool returned during the turn.
pub(super) struct Turn {
    pub answer: String,
    pub urls: Vec<String>,
    /// The model stopped at the token limit (`finish_reason: "length"`).
    pub cut: bool,
    /// The size of the request that got the answer: one the server accepted.
    pub fitted: Fitted,
}

/// The size of a request the server accepted: its estimated prompt tokens and the answer
/// length it was allowed (`None`: no limit sent).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Fitted {
    pub prompt: u32,
    pub allowance: Option<u32>,
}

/// The smallest answer allowance worth asking for when the server said the prompt alone fits:
/// below it, a shorter prompt is better than a shorter answer.
const MIN_ANSWER_ROOM: u32 = 256;

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
        progress: Option<&Progress>,
    ) -> Result<Turn, AgentError> {
        let settings = &self.settings;
        let now = format_now((self.clock)(), settings.time_zone);
        let framed = frame_question(&question.user_name, &now, &question.text) + &self.files;
        let mut conversation = Conversation::new(
            &settings.persona,
            history,
            framed,
            &settings.closing_reminder,
        );
        conversation.attach_images(&self.images);
        let mut round = 0u32;
        let mut had_reasoning = false;
        let mut urls: Vec<String> = Vec::new();
        let mut allowance = self.llm.max_answer_tokens();
        loop {
            let offer_tools = round < settings.max_tool_rounds && self.offers_tools();
            let (message, fitted) = self
                .ask_round(
                    &mut conversation,
                    offer_tools,
                    &mut allowance,
                    deadline,
                    progress,
                )
                .await?;
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
                    Ok(Turn {
                        answer,
                        urls,
                        cut: message.finish_reason.is_length(),
                        fitted,
                    })
                };
            }
            round += 1;
            debug!(
                channel_id = question.channel_id,
                round,
                calls = calls.len(),
                "model called tools"
            );
            if let (Some(progress), Some(query)) = (progress, first_query(&calls)) {
                progress.send_replace(Live::Status(voice::searching_status(&query)));
            }
            let results = join_all(
                calls
                    .iter()
                    .enumerate()
                    .map(|(n, call)| self.run_tool(call, n)),
            )
            .await;
            let results = results
                .into_iter()
                .map(|(id, text, found)| {
                    for url in found {
                        if !urls.contains(&url) {
                            urls.push(url);
                        }
                    }
                    (id, text)
                })
                .collect();
            let calls = calls.into_iter().map(request_call).collect();
            conversation.push_tool_round(message.content, calls, results);
        }
    }

    /// Whether this request may offer tools: not with `ZUNDA_TOOLS=off`, nor once the server
    /// rejected them (`auto`).
    fn offers_tools(&self) -> bool {
        if !self.settings.search {
            return false;
        }
        match self.settings.tool_mode {
            ToolMode::Off => false,
            ToolMode::On => true,
            ToolMode::Auto => !self.learned.no_tool_support.load(Ordering::Relaxed),
        }
    }

    /// One round's request, asked again as the server's refusals say (see the module docs).
    /// Returns the model's message and the size of the request that got it.
    async fn ask_round(
        &self,
        conversation: &mut Conversation,
        offer_tools: bool,
        allowance: &mut Option<u32>,
        deadline: Instant,
        progress: Option<&Progress>,
    ) -> Result<(AssistantMessage, Fitted), LlmError> {
        let settings = &self.settings;
        let mut tools = offer_tools;
        loop {
            #[allow(deprecated)] // the client sends it under the name the server takes
            let request = CreateChatCompletionRequest {
                model: settings.model.clone(),
                messages: conversation.messages(),
                temperature: Some(settings.temperature),
                tools: tools.then(|| vec![web_search_tool()]),
                tool_choice: tools.then_some(ChatCompletionToolChoiceOption::Mode(
                    ToolChoiceOptions::Auto,
                )),
                max_tokens: *allowance,
                ..Default::default()
            };
            let streamed = !(tools && self.learned.no_streamed_tools.load(Ordering::Relaxed));
            let err = match self.ask_model(&request, deadline, progress, streamed).await {
                Ok(message) => {
                    let fitted = Fitted {
                        prompt: context::estimate_messages(&request.messages),
                        allowance: *allowance,
                    };
                    return Ok((message, fitted));
                }
                Err(err) => err,
            };
            if tools && streamed && progress.is_some() && err.rejects_streamed_tools() {
                if !self.learned.no_streamed_tools.swap(true, Ordering::Relaxed) {
                    warn!(
                        upstream = self.llm.upstream(),
                        error = %err,
                        "the chat model cannot stream a request with tools: asking rounds that \
                         offer web search without streaming from now on"
                    );
                }
                continue;
            }
            if tools && settings.tool_mode == ToolMode::Auto && err.rejects_tools() {
                self.learned.no_tool_support.store(true, Ordering::Relaxed);
                warn!(
                    upstream = self.llm.upstream(),
                    model = %settings.model,
                    error = %err,
                    "the chat model rejected tools: answering from the model's own knowledge, \
                     without web search, from now on (ZUNDA_TOOLS=auto)"
                );
                tools = false;
                continue;
            }
            let Some(numbers) = err.overflow_numbers() else {
                return Err(err);
            };
            if let Some(context) = numbers.context {
                self.learned.known_context.store(context, Ordering::Relaxed);
            }
            let room = numbers
                .room_for_answer()
                .filter(|room| *room >= MIN_ANSWER_ROOM && allowance.map_or(true, |a| *room < a));
            if let Some(room) = room {
                self.metrics.context_trim();
                warn!(
                    context = ?numbers.context,
                    prompt = ?numbers.prompt,
                    max_tokens = room,
                    "the prompt and the answer length do not fit the model's context: asking for a shorter answer"
                );
                *allowance = Some(room);
                continue;
            }
            match conversation.shed() {
                Some(shed) => {
                    self.metrics.context_trim();
                    warn!(
                        context = ?numbers.context,
                        left_out = ?shed,
                        window_left = conversation.window_len(),
                        "the prompt does not fit the model's context: asking again without the oldest part"
                    );
                }
                None => {
                    warn!(
                        context = ?numbers.context,
                        "even the question alone does not fit the model's context"
                    );
                    return Err(err);
                }
            }
        }
    }

    /// Runs one tool call; returns `(tool_call_id, result text, URLs it returned)`.
    async fn run_tool(&self, call: &ToolCall, position: usize) -> (String, String, Vec<String>) {
        let (id, name, arguments) = (call.id.clone(), call.name.as_str(), call.arguments.as_str());
        if name != WEB_SEARCH {
            return (
                id,
                format!("そのツールはないのだ（unknown tool `{name}`; the only tool is `{WEB_SEARCH}`）。"),
                Vec::new(),
            );
        }
        if position >= MAX_CALLS_PER_ROUND {
            return (
                id,
                format!("一度に検索できるのは{MAX_CALLS_PER_ROUND}回までなのだ（too many searches in one round）。"),
                Vec::new(),
            );
        }
        let query = match serde_json::from_str::<WebSearchArgs>(arguments) {
            Ok(args) if !args.query.trim().is_empty() => args.query,
            _ => {
                debug!(arguments = %arguments, "malformed web_search arguments");
                return (
                    id,
                    "引数が正しくないのだ（invalid arguments: expected {\"query\": \"<non-empty string>\"}）。".to_owned(),
                    Vec::new(),
                );
            }
        };
        debug!(query = %query, "web_search");
        let (text, urls) = self.search.tool_result_with_urls(&query).await;
        (id, text, urls)
    }
}

/// The query of the first well-formed `web_search` call, for the status line.
fn first_query(calls: &[ToolCall]) -> Option<String> {
    calls
        .iter()
        .filter(|call| call.name == WEB_SEARCH)
        .find_map(|call| serde_json::from_str::<WebSearchArgs>(&call.arguments).ok())
        .map(|args| args.query)
        .filter(|query| !query.trim().is_empty())
}

/// A tool call as sent back to the model in the next request (always `"type": "function"`).
pub(super) fn request_call(call: ToolCall) -> ChatCompletionMessageToolCalls {
    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
        id: call.id,
        function: FunctionCall {
            name: call.name,
            arguments: call.arguments,
        },
    })
}
