//! Upstream failures in words that never carry the API key: transport errors, error bodies
//! (scrubbed and shortened), and the base URL without credentials.

use async_openai::error::WrappedError;
use reqwest::StatusCode;

use super::{ChatClient, LlmError};
use crate::agent::response::ResponseError;

/// Longest upstream error message kept in an error (characters).
const MAX_DETAIL_CHARS: usize = 200;

impl ChatClient {
    pub(super) fn invalid(&self, err: ResponseError) -> LlmError {
        LlmError::InvalidResponse {
            upstream: self.upstream.clone(),
            reason: scrub(&err.to_string(), self.api_key.expose()),
        }
    }

    pub(super) fn transport_error(&self, err: reqwest::Error) -> LlmError {
        // `without_url`: the URL could carry credentials in its userinfo.
        let err = err.without_url();
        if err.is_timeout() {
            return LlmError::Timeout {
                upstream: self.upstream.clone(),
                secs: self.request_timeout.as_secs(),
            };
        }
        let kind = if err.is_connect() {
            "cannot connect"
        } else if err.is_body() || err.is_decode() {
            "response body interrupted"
        } else {
            "connection failed"
        };
        LlmError::Transport {
            upstream: self.upstream.clone(),
            reason: format!("{kind}: {}", innermost(&err)),
        }
    }

    /// `: <type/code: message>` from an OpenAI-style error body, scrubbed and shortened.
    pub(super) fn error_detail(&self, status: StatusCode, body: &[u8]) -> String {
        let text = match serde_json::from_slice::<WrappedError>(body) {
            Ok(wrapped) => {
                let error = wrapped.error;
                let label = error.code.or(error.r#type).unwrap_or_default();
                if label.is_empty() {
                    error.message
                } else {
                    format!("{label}: {}", error.message)
                }
            }
            Err(_) => String::from_utf8_lossy(body).into_owned(),
        };
        let text = scrub(text.trim(), self.api_key.expose());
        if text.is_empty() {
            return status
                .canonical_reason()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default();
        }
        format!(": {}", truncate_chars(&text, MAX_DETAIL_CHARS))
    }
}

/// The deepest cause of an error ("connection closed before message completed", …).
pub(super) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// `scheme://host[:port]/path` of the base URL: no userinfo, query or fragment.
pub(super) fn display_upstream(base: &str) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// Removes the API key and anything that looks like an OpenAI key (OpenAI echoes a masked key on
/// 401, and a proxy might echo the header) from upstream text.
fn scrub(text: &str, api_key: &str) -> String {
    let text = if api_key.trim().len() >= 4 {
        text.replace(api_key.trim(), "[redacted]")
    } else {
        text.to_owned()
    };
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let bare = word.trim_end();
            if bare.trim_start_matches(['"', '\'', '(']).starts_with("sk-") {
                format!("[redacted]{}", &word[bare.len()..])
            } else {
                word.to_owned()
            }
        })
        .collect()
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scrubbed_from_upstream_text() {
        let text = "Incorrect API key provided: sk-proj-abc***xyz. Key my-local-key rejected";
        let scrubbed = scrub(text, "my-local-key");
        assert_eq!(
            scrubbed,
            "Incorrect API key provided: [redacted] Key [redacted] rejected"
        );
    }

    #[test]
    fn upstream_hides_credentials() {
        assert_eq!(
            display_upstream("https://user:pw@example.com/v1?key=1"),
            "https://example.com/v1"
        );
        assert_eq!(
            display_upstream("http://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1"
        );
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("ずんだもん", 3), "ずんだ…");
        assert_eq!(truncate_chars("ずんだ", 3), "ずんだ");
    }
}
