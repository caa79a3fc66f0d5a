//! How the check words what it saw: a failed first request, the test answer, a list of models.

use crate::agent::llm::LlmError;
use crate::agent::response::AssistantMessage;

/// Longest part of the test answer shown.
const SHOWN_ANSWER_CHARS: usize = 60;

pub(super) fn shown_list(ids: &[String]) -> String {
    let mut shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    if ids.len() > 5 {
        shown.push("…");
    }
    shown.join(", ")
}

/// Adds the lines for a failed first request; returns the reason the bot cannot answer.
pub(super) fn describe_failure(err: &LlmError, lines: &mut Vec<String>) -> String {
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

pub(super) fn shown(message: &AssistantMessage) -> String {
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
