//! The chat model client: one non-streaming chat completion against any OpenAI-compatible server,
//! with timeouts, bounded retries and a global cap on requests in flight.
//!
//! Requests and responses are async-openai's wire types (`CreateChatCompletionRequest`,
//! `CreateChatCompletionResponse`, its error body), but the HTTP exchange is ours. async-openai 0.43
//! always wraps its transport in a fixed retry layer (3 retries) that cannot be switched off without
//! its `middleware` feature, hides `Retry-After` from the caller and does not retry timeouts; a loop
//! of ours around it would multiply retries. Owning the exchange gives exactly `max_retries` retries,
//! one metric per attempt, a semaphore permit per attempt (not held while backing off), and error
//! texts we know never carry the API key.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_openai::error::WrappedError;
use async_openai::types::chat::{
    ChatCompletionResponseMessage, CreateChatCompletionRequest, CreateChatCompletionResponse,
};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::{OpenAiConfig, Secret};
use crate::metrics::Metrics;

/// First backoff delay; doubled per retry up to [`MAX_BACKOFF`], with jitter.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Longest upstream error message kept in an error (characters).
const MAX_DETAIL_CHARS: usize = 200;
/// Largest response body accepted; a chat completion is a few KiB.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Why a chat completion failed. Every message names the upstream (without credentials) and never
/// contains the API key.
#[derive(Debug, Error)]
pub enum LlmError {
    #[error("chat model at {upstream}: HTTP {status}{detail}")]
    Status {
        upstream: String,
        status: u16,
        /// `: <upstream message>` or empty, already scrubbed of secrets.
        detail: String,
        /// The wait the server asked for (`Retry-After`), if any.
        retry_after: Option<Duration>,
    },
    #[error("chat model at {upstream}: no response within {secs}s")]
    Timeout { upstream: String, secs: u64 },
    #[error("chat model at {upstream}: {reason}")]
    Transport { upstream: String, reason: String },
    #[error("chat model at {upstream}: invalid response: {reason}")]
    InvalidResponse { upstream: String, reason: String },
    #[error("{cause} (a retry after {wait_secs}s would pass the answer deadline)")]
    DeadlineTooClose {
        wait_secs: u64,
        cause: Box<LlmError>,
    },
    #[error("cannot set up the chat model client: {0}")]
    Setup(String),
}

impl LlmError {
    /// Whether another attempt may succeed: rate limits, server errors, timeouts and dropped or
    /// refused connections. `insufficient_quota` 429s and other 4xx are permanent.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, detail, .. } => {
                (*status == 429 && !detail.contains("insufficient_quota"))
                    || *status == 408
                    || (500..=599).contains(status)
            }
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::InvalidResponse { .. } | Self::DeadlineTooClose { .. } | Self::Setup(_) => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The metric label of a failed attempt.
    fn outcome(&self, will_retry: bool) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            _ if will_retry => "retry",
            _ => "error",
        }
    }
}

/// Sends chat completions to one OpenAI-compatible endpoint. Cheap to share behind an `Arc`.
pub struct ChatClient {
    http: reqwest::Client,
    endpoint: String,
    /// The base URL without userinfo or query, for errors and logs.
    upstream: String,
    api_key: Secret,
    max_retries: u32,
    request_timeout: Duration,
    /// Caps model requests in flight across all channels; waiters queue in FIFO order.
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("upstream", &self.upstream)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    /// A client for `config.base_url`. Needs a rustls crypto provider installed in the process.
    pub fn new(config: &OpenAiConfig, metrics: Arc<Metrics>) -> Result<Self, LlmError> {
        let base = config.base_url.trim_end_matches('/');
        let upstream = display_upstream(base);
        let request_timeout = Duration::from_secs(config.request_timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .timeout(request_timeout)
            .user_agent(concat!("zundamon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| LlmError::Setup(err.without_url().to_string()))?;
        Ok(Self {
            http,
            endpoint: format!("{base}/chat/completions"),
            upstream,
            api_key: config.api_key.clone(),
            max_retries: config.max_retries,
            request_timeout,
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            metrics,
        })
    }

    /// Where requests go, without credentials (for logs).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Sends `request` until it succeeds, fails permanently, `max_retries` retries are spent, or
    /// the next wait would end after `deadline`. Returns the first choice's message.
    pub async fn complete(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
    ) -> Result<ChatCompletionResponseMessage, LlmError> {
        let body = serde_json::to_vec(request)
            .map_err(|err| LlmError::Setup(format!("cannot serialize the request: {err}")))?;
        let mut attempt = 0u32;
        loop {
            let result = {
                // One permit per attempt: a request waiting out a backoff does not hold a slot.
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| LlmError::Setup("the request limiter is closed".into()))?;
                self.send_once(&body).await
            };
            let err = match result {
                Ok(message) => {
                    self.metrics.llm_request("ok");
                    return Ok(message);
                }
                Err(err) => err,
            };
            let will_retry = attempt < self.max_retries && err.is_retryable();
            self.metrics.llm_request(err.outcome(will_retry));
            if !will_retry {
                warn!(error = %err, attempts = attempt + 1, "chat model request failed");
                return Err(err);
            }
            let wait = err.retry_after().unwrap_or_else(|| backoff(attempt));
            if Instant::now() + wait >= deadline {
                warn!(error = %err, wait_ms = wait.as_millis() as u64, "chat model retry would pass the deadline");
                return Err(LlmError::DeadlineTooClose {
                    wait_secs: wait.as_secs_f64().ceil() as u64,
                    cause: Box::new(err),
                });
            }
            warn!(error = %err, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, "chat model request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn send_once(&self, body: &[u8]) -> Result<ChatCompletionResponseMessage, LlmError> {
        let started = std::time::Instant::now();
        let mut response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.api_key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = read_capped(&mut response)
            .await
            .map_err(|err| self.transport_error(err))?;
        debug!(
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            bytes = bytes.len(),
            "chat model response"
        );
        if !status.is_success() {
            return Err(LlmError::Status {
                upstream: self.upstream.clone(),
                status: status.as_u16(),
                detail: self.error_detail(status, &bytes),
                retry_after,
            });
        }
        let parsed: CreateChatCompletionResponse =
            serde_json::from_slice(&bytes).map_err(|err| LlmError::InvalidResponse {
                upstream: self.upstream.clone(),
                reason: err.to_string(),
            })?;
        parsed
            .choices
            .into_iter()
            .next()
            .map(|choice| choice.message)
            .ok_or_else(|| LlmError::InvalidResponse {
                upstream: self.upstream.clone(),
                reason: "no choices".into(),
            })
    }

    fn transport_error(&self, err: reqwest::Error) -> LlmError {
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
    fn error_detail(&self, status: StatusCode, body: &[u8]) -> String {
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

/// Exponential backoff with "equal jitter": half fixed, half random, so many channels hitting the
/// same rate limit do not retry in lockstep.
fn backoff(attempt: u32) -> Duration {
    let full = BASE_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF);
    let half = full / 2;
    let jitter_nanos = random_u64() % (half.as_nanos() as u64).max(1);
    half + Duration::from_nanos(jitter_nanos)
}

/// A random number without a `rand` dependency: `RandomState` is seeded per instance by the OS.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x5a75_6e64_616d_6f6e);
    hasher.finish()
}

/// The wait a response asks for: `retry-after-ms` (OpenAI), `Retry-After` in seconds or as an
/// HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = header(RETRY_AFTER.as_str())?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

async fn read_capped(response: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(bytes)
}

/// The deepest cause of an error ("connection closed before message completed", …).
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// `scheme://host[:port]/path` of the base URL: no userinfo, query or fragment.
fn display_upstream(base: &str) -> String {
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
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..12 {
            let full = BASE_BACKOFF
                .saturating_mul(2u32.saturating_pow(attempt))
                .min(MAX_BACKOFF);
            let wait = backoff(attempt);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));

        let mut headers = HeaderMap::new();
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&soon).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Mon, 01 Jan 2001 00:00:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
    }

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
    fn retryable_statuses() {
        let status = |status: u16, detail: &str| LlmError::Status {
            upstream: "u".into(),
            status,
            detail: detail.into(),
            retry_after: None,
        };
        assert!(status(429, ": rate_limit_exceeded: slow down").is_retryable());
        assert!(!status(429, ": insufficient_quota: pay up").is_retryable());
        assert!(status(500, "").is_retryable());
        assert!(status(503, "").is_retryable());
        assert!(!status(400, "").is_retryable());
        assert!(!status(401, "").is_retryable());
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("ずんだもん", 3), "ずんだ…");
        assert_eq!(truncate_chars("ずんだ", 3), "ずんだ");
    }
}
