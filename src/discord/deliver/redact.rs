//! Redaction: what Discord said in an error, and what a transport error says, kept short and
//! without the interaction token (which travels in URL paths).

use std::error::Error as _;

use serde_json::Value;

/// How much of Discord's error message an error keeps.
const MAX_MESSAGE_CHARS: usize = 300;

/// Discord's `{"code": …, "message": …}` error body, if that is what came back.
pub(in crate::discord) fn api_error(body: &[u8], secret: &str) -> (Option<u64>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let code = value.get("code").and_then(Value::as_u64);
    let message = value.get("message").and_then(Value::as_str).map(|m| {
        redact(
            &m.chars().take(MAX_MESSAGE_CHARS).collect::<String>(),
            secret,
        )
    });
    (code, message)
}

/// A transport error as text, without the URL (which holds the token) and with its causes.
pub(in crate::discord) fn describe(err: reqwest::Error, secret: &str) -> String {
    let err = err.without_url();
    let mut text = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "could not connect".to_string()
    } else {
        err.to_string()
    };
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    redact(&text, secret)
}

fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, ":token")
    }
}
