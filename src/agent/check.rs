//! `zundamon check-model`: asks the configured chat model server a few tiny questions and says,
//! in plain words, whether the bot can work with it: reachable, key accepted, model listed (and
//! whether the server answers for any model name), the context length where the server states
//! it, usage reported, `max_tokens` honoured, tools supported (with `tool_choice`, so a server
//! that ignores tools is told from a model that chose not to search), a whole tool round,
//! streaming with and without tools, reasoning seen, and how long an answer took.
//!
//! The process succeeds only when a plain question got a usable answer (and, with
//! `ZUNDA_TOOLS=on`, when the server accepted tools): that is what the bot needs to answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionNamedToolChoice, ChatCompletionRequestMessage, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionToolChoiceOption,
    CreateChatCompletionRequest, FunctionName, ToolChoiceOptions,
};

use super::check_models;
use super::llm::{ChatClient, LlmError};
use super::prompt::Conversation;
use super::response::AssistantMessage;
use super::stream::StreamEvent;
use super::tool_loop::{request_call, web_search_tool, WEB_SEARCH};
use crate::config::{Config, ToolMode};
use crate::ops::metrics::Metrics;

/// Longest part of the test answer shown.
const SHOWN_ANSWER_CHARS: usize = 60;

/// The result of a check: the report lines and, when the bot cannot answer, why.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub lines: Vec<String>,
    /// `None` when the bot can answer with this server.
    pub failure: Option<String>,
}

impl CheckReport {
    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        match &self.failure {
            None => out.push_str("OK: the bot can answer with this server.\n"),
            Some(reason) => {
                let _ = writeln!(out, "FAILED: the bot cannot answer: {reason}");
            }
        }
        out
    }
}

fn user_request(config: &Config, text: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequest {
        model: config.openai.model.clone(),
        messages: vec![ChatCompletionRequestMessage::User(
            ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(text.to_owned()),
                name: None,
            },
        )],
        temperature: Some(config.openai.temperature),
        ..Default::default()
    }
}

/// Runs the checks against `config`'s model server.
pub async fn check_model(config: &Config) -> CheckReport {
    let mut openai = config.openai.clone();
    // One attempt each: the check reports what happens, it does not wait out rate limits.
    openai.max_retries = 0;
    let client = match ChatClient::new(&openai, Arc::new(Metrics::new())) {
        Ok(client) => client,
        Err(err) => {
            return CheckReport {
                lines: Vec::new(),
                failure: Some(err.to_string()),
            }
        }
    };
    let mut lines = vec![format!(
        "Checking chat model {:?} at {}",
        openai.model,
        client.upstream()
    )];
    let budget = Duration::from_secs(openai.request_timeout_secs.max(1) + 5);
    let deadline = || tokio::time::Instant::now() + budget;
    let mut reasoning = false;

    // What the server lists (no chat request yet: a server without the route says nothing).
    let models = client.list_models().await.ok();
    let listed = models.as_ref().map(check_models::model_ids);

    // 1. A plain question: reachability, key, model, latency.
    let started = Instant::now();
    let plain = client
        .complete(
            &user_request(config, "Reply with one short greeting."),
            deadline(),
        )
        .await;
    let elapsed_ms = started.elapsed().as_millis();
    let message = match plain {
        Ok(message) => message,
        Err(err) => {
            let failure = describe_failure(&err, &mut lines);
            return CheckReport {
                lines,
                failure: Some(failure),
            };
        }
    };
    lines.push(format!("  reachable:  yes (answered in {elapsed_ms} ms)"));
    lines.push("  auth:       ok".into());
    lines.push(match &listed {
        Some(ids) if ids.contains(&openai.model) => {
            "  model:      found (listed by the server)".into()
        }
        Some(ids) if !ids.is_empty() => format!(
            "  model:      not listed by the server (it lists: {}); it answered anyway, \
             so it may serve another model under this name",
            shown_list(ids)
        ),
        _ => "  model:      answered (the server does not list its models)".into(),
    });
    reasoning |= message.had_reasoning;
    let mut failure = None;

    // 2. A made-up model name: a server that answers it ignores OPENAI_MODEL.
    let mut made_up = user_request(config, "Reply with OK.");
    made_up.model = format!("zundamon-check-no-such-model-{}", std::process::id());
    set_max_tokens(&mut made_up, 1);
    lines.push(match client.complete(&made_up, deadline()).await {
        // An unusable answer (one token of thought) is still an answer.
        Ok(_) | Err(LlmError::InvalidResponse { .. } | LlmError::EmptyBody { .. }) => {
            "  model name: WARNING: the server also answers for a made-up model name: it serves \
             whatever it loaded, whatever OPENAI_MODEL says"
                .into()
        }
        Err(LlmError::Status { .. }) => "  model name: checked (a made-up name is refused)".into(),
        Err(err) => format!("  model name: could not check ({err})"),
    });
    lines.push(format!("  answer:     {}", shown(&message)));

    // 3. The context length, where the server states it.
    let mut context = models
        .as_ref()
        .and_then(|models| check_models::context_from_models(models, &openai.model));
    if context.is_none() {
        if let Ok(props) = client.server_props().await {
            context = check_models::context_from_props(&props);
        }
    }
    lines.push(match context {
        Some((tokens, field)) => format!("  context:    {tokens} tokens ({field})"),
        None => "  context:    not stated by the server (the bot learns it from an overflow \
                 message, if the server sends one)"
            .into(),
    });

    // 4. Usage and the answer length limit.
    lines.extend(check_length_limit(config, &client, &message, deadline()).await);

    // 5. Tools, with tool_choice; a forced choice tells "ignored" from "chose not to".
    let tools = check_tools(config, &client, deadline).await;
    reasoning |= tools.reasoning;
    lines.extend(tools.lines);
    if tools.rejected && config.openai.tool_mode() == ToolMode::On {
        failure = Some(
            "the server rejects tools and ZUNDA_TOOLS=on: set ZUNDA_TOOLS=auto or off".to_owned(),
        );
    }

    // 6. Streaming.
    let mut text_events = 0usize;
    let mut on_event = |event: StreamEvent| {
        if matches!(event, StreamEvent::Text(_)) {
            text_events += 1;
        }
    };
    match client
        .stream(
            &user_request(config, "Count from one to five."),
            deadline(),
            &mut on_event,
        )
        .await
    {
        Ok(message) if message.streamed => {
            reasoning |= message.had_reasoning;
            lines.push(format!(
                "  streaming:  supported ({text_events} text pieces)"
            ));
        }
        Ok(message) => {
            reasoning |= message.had_reasoning;
            lines.push("  streaming:  not supported (the server answered in one piece)".into());
        }
        Err(err) => lines.push(format!("  streaming:  not supported ({err})")),
    }

    lines.push(if reasoning {
        "  reasoning:  seen (it is hidden from users and never stored)".into()
    } else {
        "  reasoning:  none seen".into()
    });
    CheckReport { lines, failure }
}

#[allow(deprecated)] // `max_tokens` is what most OpenAI-compatible servers read
fn set_max_tokens(request: &mut CreateChatCompletionRequest, tokens: u32) {
    request.max_tokens = Some(tokens);
}

/// The tokens asked for in the length check: few, so an answer that honours them is cut.
const LENGTH_CHECK_TOKENS: u32 = 8;

/// Whether usage is reported (from the plain answer) and `max_tokens` honoured.
async fn check_length_limit(
    config: &Config,
    client: &ChatClient,
    plain: &AssistantMessage,
    deadline: tokio::time::Instant,
) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(match plain.usage {
        Some(usage) => format!(
            "  usage:      reported ({} prompt + {} completion tokens)",
            usage.prompt_tokens, usage.completion_tokens
        ),
        None => "  usage:      not reported".into(),
    });
    let mut request = user_request(
        config,
        "Count from 1 to 100, separated by spaces. Write every number.",
    );
    set_max_tokens(&mut request, LENGTH_CHECK_TOKENS);
    let limit = LENGTH_CHECK_TOKENS;
    lines.push(match client.complete(&request, deadline).await {
        Ok(message) => {
            let chars = message
                .content
                .as_deref()
                .unwrap_or_default()
                .chars()
                .count();
            let used = message.usage.map(|usage| usage.completion_tokens);
            match (message.finish_reason.is_length(), used) {
                (_, Some(used)) if used > u64::from(limit) => format!(
                    "  max_tokens: IGNORED (asked for {limit}, the answer took {used} tokens): \
                     answers are not limited by ZUNDA_MAX_ANSWER_TOKENS"
                ),
                (true, _) => format!(
                    "  max_tokens: honoured (asked for {limit}: the answer stopped there, \
                     finish_reason \"length\")"
                ),
                (false, Some(used)) => {
                    format!("  max_tokens: honoured (asked for {limit}, the answer took {used})")
                }
                (false, None) if chars > 80 => format!(
                    "  max_tokens: probably ignored (asked for {limit} tokens, got {chars} \
                     characters without finish_reason \"length\")"
                ),
                (false, None) => format!(
                    "  max_tokens: unclear (asked for {limit} tokens, got {chars} characters \
                     and no finish_reason \"length\")"
                ),
            }
        }
        // A reasoning model can spend a few tokens thinking and show nothing: cut all the same.
        Err(LlmError::InvalidResponse { reason, .. }) if reason.contains("\"length\"") => {
            format!(
                "  max_tokens: honoured (asked for {limit}: the answer stopped there before any \
                 visible text, finish_reason \"length\")"
            )
        }
        Err(err) => format!("  max_tokens: check failed: {err}"),
    });
    lines
}

/// What the tool checks found.
struct ToolsCheck {
    lines: Vec<String>,
    /// The server refused a request carrying tools.
    rejected: bool,
    reasoning: bool,
}

fn tool_request(
    config: &Config,
    choice: ChatCompletionToolChoiceOption,
) -> CreateChatCompletionRequest {
    let mut request = user_request(
        config,
        "Use the web_search tool to look up today's weather in Sendai.",
    );
    request.tools = Some(vec![web_search_tool()]);
    request.tool_choice = Some(choice);
    request
}

/// Tools with `tool_choice: "auto"`, then forced when the model did not call: "supported",
/// "the model chose not to search", or "the server ignores tools"; then a whole tool round (the
/// call sent back with its result, as the bot does) and a streamed request with tools.
async fn check_tools(
    config: &Config,
    client: &ChatClient,
    deadline: impl Fn() -> tokio::time::Instant,
) -> ToolsCheck {
    let mut check = ToolsCheck {
        lines: Vec::new(),
        rejected: false,
        reasoning: false,
    };
    let auto = ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Auto);
    let called = |message: &AssistantMessage| {
        message
            .tool_calls
            .iter()
            .find(|call| call.name == WEB_SEARCH)
            .cloned()
    };
    let call = match client
        .complete(&tool_request(config, auto.clone()), deadline())
        .await
    {
        Ok(message) => {
            check.reasoning |= message.had_reasoning;
            if let Some(call) = called(&message) {
                check.lines.push(
                    "  tools:      supported (the model called web_search, tool_choice \"auto\")"
                        .into(),
                );
                Some(call)
            } else {
                let forced =
                    ChatCompletionToolChoiceOption::Function(ChatCompletionNamedToolChoice {
                        function: FunctionName {
                            name: WEB_SEARCH.into(),
                        },
                    });
                match client
                    .complete(&tool_request(config, forced), deadline())
                    .await
                {
                    Ok(message) if called(&message).is_some() => {
                        check.lines.push(
                            "  tools:      supported, but with tool_choice \"auto\" the model \
                             chose not to search (it called web_search when told to): it may \
                             seldom search the web"
                                .into(),
                        );
                        called(&message)
                    }
                    Ok(_) => {
                        check.lines.push(
                            "  tools:      IGNORED by the server (even a forced tool_choice got \
                             no call): the bot will answer without web search"
                                .into(),
                        );
                        None
                    }
                    Err(err) => {
                        check.lines.push(format!(
                            "  tools:      the model chose not to search with tool_choice \
                             \"auto\"; a forced tool_choice failed ({err})"
                        ));
                        None
                    }
                }
            }
        }
        Err(err) if err.rejects_tools() => {
            check.rejected = true;
            let mode = config.openai.tool_mode();
            check.lines.push(format!(
                "  tools:      not supported ({err}); {}",
                match mode {
                    ToolMode::On => "ZUNDA_TOOLS=on requires them",
                    ToolMode::Auto => "the bot will answer without web search (ZUNDA_TOOLS=auto)",
                    ToolMode::Off => "not used anyway (ZUNDA_TOOLS=off)",
                }
            ));
            return check;
        }
        Err(err) => {
            check
                .lines
                .push(format!("  tools:      check failed: {err}"));
            return check;
        }
    };

    // A whole round: the call sent back (with `content: ""`) and its result.
    if let Some(call) = call {
        let mut conversation = Conversation::new(
            "You are a helpful assistant.",
            &[],
            "Use the web_search tool to look up today's weather in Sendai.".into(),
            "Answer in one sentence.",
        );
        conversation.push_tool_round(
            None,
            vec![request_call(call.clone())],
            vec![(
                call.id.clone(),
                "<search_results>\n1. Sendai weather\nhttps://example.com/\nSunny, 20°C.\n</search_results>"
                    .into(),
            )],
        );
        let mut request = user_request(config, "");
        request.messages = conversation.messages();
        request.tools = Some(vec![web_search_tool()]);
        request.tool_choice = Some(auto.clone());
        check
            .lines
            .push(match client.complete(&request, deadline()).await {
                Ok(_) => "  tool round: ok (the search result was sent back and answered)".into(),
                Err(err) => format!("  tool round: FAILED ({err}): web search answers will fail"),
            });
    }

    // Streamed with tools, as the bot asks when it shows answers live.
    let request = tool_request(config, auto);
    check.lines.push(
        match client.stream(&request, deadline(), &mut |_| {}).await {
            Ok(message)
                if message
                    .tool_calls
                    .iter()
                    .any(|call| call.name == WEB_SEARCH) =>
            {
                "  streamed tools: supported (a streamed web_search call)".into()
            }
            // llama-cpp-python streams a text answer but sends an empty body when the model calls.
            Ok(_) => {
                "  streamed tools: accepted, but the model answered without calling web_search, \
                  so a streamed call was not seen (the bot asks again unstreamed if one fails)"
                    .into()
            }
            Err(err) if err.rejects_streamed_tools() => format!(
            "  streamed tools: not supported ({err}): the bot asks rounds that offer web search \
             without streaming"
        ),
            Err(err) => format!("  streamed tools: check failed: {err}"),
        },
    );
    check
}

fn shown_list(ids: &[String]) -> String {
    let mut shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    if ids.len() > 5 {
        shown.push("…");
    }
    shown.join(", ")
}

/// Adds the lines for a failed first request; returns the reason the bot cannot answer.
fn describe_failure(err: &LlmError, lines: &mut Vec<String>) -> String {
    let cause = match err {
        LlmError::DeadlineTooClose { cause, .. } => cause.as_ref(),
        other => other,
    };
    match cause {
        LlmError::Transport { .. } | LlmError::Timeout { .. } => {
            lines.push(format!("  reachable:  no ({cause})"));
            "the server is unreachable: check OPENAI_BASE_URL and that the server runs".into()
        }
        LlmError::Status { status, .. } => {
            lines.push(format!("  reachable:  yes (HTTP {status})"));
            match status {
                401 | 403 => {
                    lines.push(format!("  auth:       rejected ({cause})"));
                    "the server rejected the API key: check OPENAI_API_KEY".into()
                }
                404 => {
                    lines.push("  auth:       ok".into());
                    lines.push(format!("  model:      not found ({cause})"));
                    "the model was not found: check OPENAI_MODEL (and that OPENAI_BASE_URL \
                     ends in /v1)"
                        .into()
                }
                429 => {
                    lines.push("  auth:       ok".into());
                    lines.push(format!("  answer:     rate limited ({cause})"));
                    "the server is rate limiting or out of quota: try again later".into()
                }
                _ => {
                    lines.push(format!("  answer:     failed ({cause})"));
                    format!("the server answered HTTP {status}")
                }
            }
        }
        LlmError::InvalidResponse { .. } | LlmError::EmptyBody { .. } => {
            lines.push("  reachable:  yes".into());
            lines.push(format!("  answer:     unusable ({cause})"));
            "the server's answer could not be used".into()
        }
        LlmError::DeadlineTooClose { .. } | LlmError::Setup(_) => {
            lines.push(format!("  answer:     failed ({cause})"));
            cause.to_string()
        }
    }
}

fn shown(message: &AssistantMessage) -> String {
    match &message.content {
        Some(text) => {
            let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut shown: String = one_line.chars().take(SHOWN_ANSWER_CHARS).collect();
            if one_line.chars().count() > SHOWN_ANSWER_CHARS {
                shown.push('…');
            }
            format!("{shown:?}")
        }
        None => format!("{} tool call(s), no text", message.tool_calls.len()),
    }
}

/// `zundamon check-model`: prints the report; an error (non-zero exit) when the bot cannot
/// answer.
pub async fn run(config: &Config) -> anyhow::Result<()> {
    let report = check_model(config).await;
    print!("{}", report.render());
    match report.failure {
        None => Ok(()),
        Some(reason) => anyhow::bail!("check-model failed: {reason}"),
    }
}
