//! `zundamon check-model`: asks the configured chat model server a few tiny questions and says,
//! in plain words, whether the bot can work with it: reachable, key accepted, model found, tools
//! supported, streaming supported, reasoning seen, and how long an answer took.
//!
//! The process succeeds only when a plain question got a usable answer (and, with
//! `ZUNDA_TOOLS=on`, when the server accepted tools): that is what the bot needs to answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, CreateChatCompletionRequest,
};

use super::llm::{ChatClient, LlmError};
use super::response::AssistantMessage;
use super::stream::StreamEvent;
use super::tool_loop::{web_search_tool, WEB_SEARCH};
use crate::config::{Config, ToolMode};
use crate::metrics::Metrics;

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
    pub fn can_answer(&self) -> bool {
        self.failure.is_none()
    }

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
    lines.push("  model:      found".into());
    lines.push(format!("  answer:     {}", shown(&message)));
    reasoning |= message.had_reasoning;
    let mut failure = None;

    // 2. The same with the web search tool.
    let mut request = user_request(
        config,
        "Use the web_search tool to look up today's weather in Sendai.",
    );
    request.tools = Some(vec![web_search_tool()]);
    match client.complete(&request, deadline()).await {
        Ok(message) => {
            reasoning |= message.had_reasoning;
            if message
                .tool_calls
                .iter()
                .any(|call| call.name == WEB_SEARCH)
            {
                lines.push("  tools:      supported (the model called web_search)".into());
            } else {
                lines.push(
                    "  tools:      accepted, but the model answered without calling web_search \
                     (it may not search the web)"
                        .into(),
                );
            }
        }
        Err(err) if err.rejects_tools() => {
            let mode = config.openai.tool_mode();
            lines.push(format!(
                "  tools:      not supported ({err}); {}",
                match mode {
                    ToolMode::On => "ZUNDA_TOOLS=on requires them",
                    ToolMode::Auto => "the bot will answer without web search (ZUNDA_TOOLS=auto)",
                    ToolMode::Off => "not used anyway (ZUNDA_TOOLS=off)",
                }
            ));
            if mode == ToolMode::On {
                failure = Some(
                    "the server rejects tools and ZUNDA_TOOLS=on: set ZUNDA_TOOLS=auto or off"
                        .to_owned(),
                );
            }
        }
        Err(err) => lines.push(format!("  tools:      check failed: {err}")),
    }

    // 3. Streaming.
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
        LlmError::InvalidResponse { .. } => {
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
