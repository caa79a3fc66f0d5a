//! The tool checks: tools offered with `tool_choice` (auto, then forced), a whole tool round,
//! and a streamed request with tools.

use async_openai::types::chat::{
    ChatCompletionNamedToolChoice, ChatCompletionToolChoiceOption, CreateChatCompletionRequest,
    FunctionName, ToolChoiceOptions,
};

use super::user_request;
use crate::agent::llm::ChatClient;
use crate::agent::prompt::Conversation;
use crate::agent::response::AssistantMessage;
use crate::agent::tool_loop::{request_call, web_search_tool, WEB_SEARCH};
use crate::config::{Config, ToolMode};

/// What the tool checks found.
pub(super) struct ToolsCheck {
    pub lines: Vec<String>,
    /// The server refused a request carrying tools.
    pub rejected: bool,
    pub reasoning: bool,
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
pub(super) async fn check_tools(
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
