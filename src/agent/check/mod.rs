//! `zundamon check-model`: asks the configured chat model server a few tiny questions and says,
//! in plain words, whether the bot can work with it: reachable, key accepted, model listed (and
//! whether the server answers for any model name), the context length where the server states
//! it, usage reported, `max_tokens` honoured, tools supported (with `tool_choice`, so a server
//! that ignores tools is told from a model that chose not to search), a whole tool round,
//! streaming with and without tools (and whether a stream reports usage), reasoning seen, and
//! how long an answer took.
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
use super::stream::StreamEvent;
use crate::config::{Config, ToolMode};
use crate::ops::metrics::Metrics;
use describe::{describe_failure, shown, shown_list};
use image::check_image;
use length::check_length_limit;
use tools::check_tools;

mod describe;
mod image;
mod length;
mod models;
mod tools;

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
    let listed = models.as_ref().map(models::model_ids);

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
        .and_then(|models| models::context_from_models(models, &openai.model));
    if context.is_none() {
        if let Ok(props) = client.server_props().await {
            context = models::context_from_props(&props);
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

    // 6. Images.
    lines.push(check_image(config, &client, deadline()).await);

    // 7. Streaming.
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
            let usage = if message.usage.is_some() {
                "usage reported"
            } else {
                "no usage reported"
            };
            let refused = if client.refuses_stream_options() {
                "; the server refused stream_options.include_usage, so streamed answers are \
                 asked for without it"
            } else {
                ""
            };
            lines.push(format!(
                "  streaming:  supported ({text_events} text pieces, {usage}{refused})"
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
