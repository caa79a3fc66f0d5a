//! The length check: whether the server reports usage and honours `max_tokens`.

use super::{set_max_tokens, user_request};
use crate::agent::llm::{ChatClient, LlmError};
use crate::agent::response::AssistantMessage;
use crate::config::Config;

/// The tokens asked for in the length check: few, so an answer that honours them is cut.
const LENGTH_CHECK_TOKENS: u32 = 8;

/// Whether usage is reported (from the plain answer) and `max_tokens` honoured.
pub(super) async fn check_length_limit(
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
