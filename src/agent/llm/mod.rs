//! The chat model client: one chat completion (plain or streamed) against any OpenAI-compatible
//! server, with timeouts, bounded retries and a global cap on requests in flight.
//!
//! Requests are async-openai's wire type (`CreateChatCompletionRequest`); responses are read
//! leniently by [`super::response`] and [`super::stream`], because real servers leave out or
//! rename fields async-openai's response types require. The HTTP exchange is ours. async-openai 0.43
//! always wraps its transport in a fixed retry layer (3 retries) that cannot be switched off without
//! its `middleware` feature, hides `Retry-After` from the caller and does not retry timeouts; a loop
//! of ours around it would multiply retries. Owning the exchange gives exactly `max_retries` retries,
//! one metric per attempt, a semaphore permit per attempt (not held while backing off), and error
//! texts we know never carry the API key.
//!
//! Every request carries the answer length limit (`ZUNDA_MAX_ANSWER_TOKENS`) as `max_tokens`,
//! unless it sets its own; a server that refuses `max_tokens` and asks for
//! `max_completion_tokens` gets the same request again with that name, and keeps getting it.
//!
//! Streamed requests ask for the token usage (`stream_options: {"include_usage": true}`); a
//! server that refuses the option gets the same request again without it, and never sees it
//! again. Every response that reports usage is counted in `zundamon_model_tokens_total`, under
//! the name of the configured model entry the client serves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_openai::types::chat::{ChatCompletionStreamOptions, CreateChatCompletionRequest};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{info, warn};

use super::response::AssistantMessage;
use super::stream::StreamEvent;
use crate::config::{OpenAiConfig, Secret};
use crate::ops::metrics::Metrics;
use crate::retry::{self, Backoff};
pub use error::LlmError;
use redact::display_upstream;
use send::read_capped;

pub mod error;
mod redact;
mod send;

/// Backoff between retries: 250 ms doubling up to 8 s, with jitter.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
/// Largest response body accepted; a chat completion is a few KiB.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Sends chat completions to one OpenAI-compatible endpoint. Cheap to share behind an `Arc`.
pub struct ChatClient {
    /// The configured model entry this client serves: the `model` label of its metrics.
    name: String,
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
    /// Set once an answer closed a thought it never opened (the chat template opens `<think>`
    /// in the prompt): from then on streamed text is held as thought until `</think>`, so the
    /// live view never shows the model thinking.
    think_opens_implicitly: AtomicBool,
    /// The answer length limit of requests that set none (0: none).
    max_answer_tokens: u32,
    /// Set once the server refused `max_tokens` and asked for `max_completion_tokens`.
    wants_max_completion_tokens: AtomicBool,
    /// Set once the server refused `stream_options`: streamed requests go without it (and
    /// without usage, unless the server sends it unasked).
    refuses_stream_options: AtomicBool,
    /// `{base}/models` and the server's root (llama.cpp serves `/props` there).
    models_endpoint: String,
    root: String,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl ChatClient {
    /// The client of the `default` model entry: [`ChatClient::named`] `"default"`.
    pub fn new(config: &OpenAiConfig, metrics: Arc<Metrics>) -> Result<Self, LlmError> {
        Self::named(config, "default", metrics)
    }

    /// A client for `config.base_url`, serving the configured model entry `name` (its metrics
    /// are labelled with it).
    pub fn named(
        config: &OpenAiConfig,
        name: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LlmError> {
        let base = config.base_url.trim_end_matches('/');
        let upstream = display_upstream(base);
        let request_timeout = Duration::from_secs(config.request_timeout_secs.max(1));
        let tls = crate::ops::tls::client_config().map_err(LlmError::Setup)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .timeout(request_timeout)
            .user_agent(concat!("zundamon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| LlmError::Setup(err.without_url().to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            http,
            endpoint: format!("{base}/chat/completions"),
            upstream,
            api_key: config.api_key.clone(),
            max_retries: config.max_retries,
            request_timeout,
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            metrics,
            think_opens_implicitly: AtomicBool::new(false),
            max_answer_tokens: config.max_answer_tokens,
            wants_max_completion_tokens: AtomicBool::new(false),
            refuses_stream_options: AtomicBool::new(false),
            models_endpoint: format!("{base}/models"),
            root: base.strip_suffix("/v1").unwrap_or(base).to_owned(),
        })
    }

    /// The configured model entry this client serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the server refused `stream_options`, so streamed answers are asked for without
    /// usage.
    pub fn refuses_stream_options(&self) -> bool {
        self.refuses_stream_options.load(Ordering::Relaxed)
    }

    /// Where requests go, without credentials (for logs).
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Sends `request` until it succeeds, fails permanently, `max_retries` retries are spent, or
    /// the next wait would end after `deadline`. Returns the first choice's message, reasoning
    /// removed. A server that answers with an event stream anyway is read as one.
    pub async fn complete(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
    ) -> Result<AssistantMessage, LlmError> {
        self.exchange(request, deadline, &mut |_| {}).await
    }

    /// Like [`ChatClient::complete`] (not streamed), giving `on_event` the answer's text once it
    /// is complete.
    pub async fn complete_showing(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<AssistantMessage, LlmError> {
        self.exchange(request, deadline, on_event).await
    }

    /// The answer length limit requests get when they set none (`None`: no limit).
    pub fn max_answer_tokens(&self) -> Option<u32> {
        (self.max_answer_tokens > 0).then_some(self.max_answer_tokens)
    }

    /// Puts the request's length limit (its own, else the configured one) under the name this
    /// server takes.
    #[allow(deprecated)] // `max_tokens` is what most OpenAI-compatible servers read.
    fn apply_token_limit(&self, request: &mut CreateChatCompletionRequest) {
        let limit = request
            .max_completion_tokens
            .or(request.max_tokens)
            .or(self.max_answer_tokens());
        if self.wants_max_completion_tokens.load(Ordering::Relaxed) {
            request.max_completion_tokens = limit;
            request.max_tokens = None;
        } else {
            request.max_tokens = limit;
            request.max_completion_tokens = None;
        }
    }

    /// Asks a streamed request for its usage (a last chunk with empty `choices`), unless the
    /// server refused that; other requests carry no `stream_options`.
    fn apply_stream_options(&self, request: &mut CreateChatCompletionRequest) {
        let wanted = request.stream == Some(true) && !self.refuses_stream_options();
        request.stream_options = wanted.then_some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        });
    }

    /// Like [`ChatClient::complete`], asking for a streamed answer: `on_event` gets the visible
    /// text as it is written (reasoning removed) and a notice while the model thinks. Retries
    /// happen only until text has been shown, so nothing is ever shown twice.
    pub async fn stream(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<AssistantMessage, LlmError> {
        let mut request = request.clone();
        request.stream = Some(true);
        self.exchange(&request, deadline, on_event).await
    }

    async fn exchange(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<AssistantMessage, LlmError> {
        let mut request = request.clone();
        self.apply_token_limit(&mut request);
        self.apply_stream_options(&mut request);
        let serialize = |request: &CreateChatCompletionRequest| {
            serde_json::to_vec(request)
                .map_err(|err| LlmError::Setup(format!("cannot serialize the request: {err}")))
        };
        let mut body = serialize(&request)?;
        let mut attempt = 0u32;
        loop {
            let result = {
                // One permit per attempt: a request waiting out a backoff does not hold a slot.
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| LlmError::Setup("the request limiter is closed".into()))?;
                self.send_once(&body, &mut *on_event).await
            };
            let err = match result {
                Ok(message) => {
                    self.metrics.llm_request("ok");
                    if let Some(usage) = message.usage {
                        self.metrics.model_tokens(
                            &self.name,
                            usage.prompt_tokens,
                            usage.completion_tokens,
                        );
                    }
                    if message.think_opened_implicitly
                        && !self.think_opens_implicitly.swap(true, Ordering::Relaxed)
                    {
                        info!("the model's chat template opens its thoughts: streamed text is held until </think>");
                    }
                    return Ok(message);
                }
                Err(err) => err,
            };
            // Asked again even when another request already learned the refusal: this one
            // still carried the option.
            if request.stream_options.is_some() && err.rejects_stream_options() {
                self.metrics.llm_request("retry");
                if !self.refuses_stream_options.swap(true, Ordering::Relaxed) {
                    warn!(error = %err, "the chat model refused stream_options: streamed answers are asked for without usage from now on");
                }
                self.apply_stream_options(&mut request);
                body = serialize(&request)?;
                continue;
            }
            if err.rejects_max_tokens()
                && !self
                    .wants_max_completion_tokens
                    .swap(true, Ordering::Relaxed)
            {
                self.metrics.llm_request("retry");
                warn!(error = %err, "the chat model refused max_tokens: sending the answer length limit as max_completion_tokens from now on");
                self.apply_token_limit(&mut request);
                body = serialize(&request)?;
                continue;
            }
            let will_retry = attempt < self.max_retries && err.is_retryable();
            self.metrics.llm_request(err.outcome(will_retry));
            if !will_retry {
                warn!(error = %err, attempts = attempt + 1, "chat model request failed");
                return Err(err);
            }
            let wait = err.retry_after().unwrap_or_else(|| BACKOFF.delay(attempt));
            if !retry::fits_before(wait, deadline) {
                warn!(error = %err, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "chat model retry would pass the deadline");
                return Err(LlmError::DeadlineTooClose {
                    wait_secs: wait.as_secs_f64().ceil() as u64,
                    cause: Box::new(err),
                });
            }
            warn!(error = %err, attempt = attempt + 1, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "chat model request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// `GET {base}/models`: the models the server lists (OpenAI's shape, `data[].id`, with
    /// whatever else the server adds). One attempt, no retries: for `check-model`.
    pub async fn list_models(&self) -> Result<serde_json::Value, LlmError> {
        self.get_json(&self.models_endpoint).await
    }

    /// `GET {root}/props`: llama.cpp's server settings (`n_ctx` among them); other servers
    /// answer 404. For `check-model`.
    pub async fn server_props(&self) -> Result<serde_json::Value, LlmError> {
        self.get_json(&format!("{}/props", self.root)).await
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, LlmError> {
        let mut response = self
            .http
            .get(url)
            .bearer_auth(self.api_key.expose())
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        let status = response.status();
        let bytes = read_capped(&mut response)
            .await
            .map_err(|err| self.transport_error(err))?;
        if !status.is_success() {
            return Err(LlmError::Status {
                upstream: self.upstream.clone(),
                status: status.as_u16(),
                detail: self.error_detail(status, &bytes),
                retry_after: None,
            });
        }
        serde_json::from_slice(&bytes).map_err(|err| LlmError::InvalidResponse {
            upstream: self.upstream.clone(),
            reason: format!("not JSON: {err}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use async_openai::types::chat::ChatCompletionRequestUserMessage;

    use super::*;
    use crate::config::{Config, Purpose};

    fn client() -> ChatClient {
        let config = Config::load_with(None, Purpose::Ask, |name| {
            (name == "OPENAI_API_KEY").then(|| "k".to_owned())
        })
        .unwrap();
        ChatClient::named(&config.openai, "small", Arc::new(Metrics::new())).unwrap()
    }

    fn request(stream: Option<bool>) -> CreateChatCompletionRequest {
        CreateChatCompletionRequest {
            model: "m".into(),
            messages: vec![ChatCompletionRequestUserMessage::from("のだ").into()],
            stream,
            ..Default::default()
        }
    }

    fn sent(client: &ChatClient, stream: Option<bool>) -> serde_json::Value {
        let mut request = request(stream);
        client.apply_stream_options(&mut request);
        serde_json::to_value(&request).unwrap()
    }

    #[test]
    fn streamed_requests_ask_for_usage_until_refused() {
        let client = client();
        assert_eq!(client.name(), "small");
        assert_eq!(
            sent(&client, Some(true))["stream_options"],
            serde_json::json!({"include_usage": true})
        );
        for plain in [None, Some(false)] {
            assert!(sent(&client, plain).get("stream_options").is_none());
        }
        client.refuses_stream_options.store(true, Ordering::Relaxed);
        assert!(client.refuses_stream_options());
        assert!(sent(&client, Some(true)).get("stream_options").is_none());
    }

    #[test]
    fn the_default_client_is_named_default() {
        let config = Config::load_with(None, Purpose::Ask, |name| {
            (name == "OPENAI_API_KEY").then(|| "k".to_owned())
        })
        .unwrap();
        let client = ChatClient::new(&config.openai, Arc::new(Metrics::new())).unwrap();
        assert_eq!(client.name(), "default");
    }
}
