//! A fake OpenAI-compatible chat completions server on 127.0.0.1 (port 0), for tests.
//!
//! It serves `POST /v1/chat/completions` (non-streaming), records every request body with the time
//! it arrived, and answers from scripts keyed by the *last user message* of the conversation:
//!
//! ```ignore
//! let openai = FakeOpenAi::start().await;
//! openai.script("ずんだ餅", vec![Step::ToolCalls(vec!["ずんだ餅".into()]), Step::Answer("…のだ".into())]);
//! // config: OPENAI_BASE_URL = openai.base_url()
//! ```
//!
//! Each matching request consumes the next step of the first script (in registration order) whose
//! `contains` text occurs in the last user message and which has steps left. Without a matching
//! step the answer is deterministic:
//! - if the last non-system message is a tool result: `検索結果を見たのだ: ` + its first 100 characters;
//! - otherwise `「{question}」の答えなのだ。`, where `{question}` is the last user message after its
//!   first blank line (the bot frames questions as `私の名前は…\n\n{question}`), or all of it.
//!
//! Responses are `chat.completion` objects in OpenAI's shape by default. The *shape* knob
//! ([`FakeOpenAi::set_shape`] for every response, [`Step::Shaped`] for one) makes them look like
//! other real servers' answers instead: missing ids, no role, tool calls without `type`, unknown
//! finish reasons, content parts, `<think>` tags, reasoning fields, and server-sent-event streams
//! with empty `choices`, keep-alive comments or no `[DONE]`. A request with `"stream": true` is
//! answered with a stream. Knobs for setup problems: a required API key, a list of known models,
//! and a server that rejects `tools` the way Ollama does.
//!
//! Plain answers report `usage` (100 prompt tokens, one completion token per character; not in
//! the [`Shape::NoUsage`] shape); a stream reports it only when asked with
//! `stream_options: {"include_usage": true}`, OpenAI's way: `usage: null` on every chunk, then a
//! last chunk with empty `choices` and the usage. [`FakeOpenAi::reported_usage`] lists what was
//! reported. [`FakeOpenAi::set_rejects_stream_options`] makes it a server older than the option,
//! answering a request that carries `stream_options` with HTTP 400;
//! [`FakeOpenAi::set_stream_usage_unasked`] one that puts usage in every stream's finishing
//! chunk, asked or not (llama.cpp's `llama-server` does).
//!
//! [`LlamaCpp`] quirks make it behave like llama-cpp-python's server (0.3.x) instead: HTTP 500 for
//! an assistant tool-call message without `content`, `tools` ignored unless `tool_choice` is sent,
//! an empty 200 body for a streamed request with `tool_choice: "auto"`, HTTP 400
//! `context_length_exceeded` past a token budget (one token per character of the messages, plus
//! `max_tokens`), and answers cut at `max_tokens` with `finish_reason: "length"`. It also serves
//! `GET /v1/models` (and `GET /props` with a context length, when set).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The prefix of the default answer to a conversation that ends in a tool result.
pub const TOOL_ANSWER_PREFIX: &str = "検索結果を見たのだ: ";

/// The reasoning the reasoning shapes send: it must never reach a user or the store.
pub const THOUGHT: &str = "SECRET-THOUGHT ユーザーには見せない考え";

/// How a response is written, after the shapes of real OpenAI-compatible servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// OpenAI's own shape.
    Standard,
    /// No `id`, `object`, `created` or `system_fingerprint`.
    MissingIds,
    /// The message has no `role`.
    NoRole,
    /// Tool calls without `"type"` (and without `id`).
    ToolCallWithoutType,
    /// `finish_reason: ""`.
    FinishEmpty,
    /// `finish_reason: "eos_token"` (text-generation-inference).
    FinishEosToken,
    /// No `usage`.
    NoUsage,
    /// Unknown fields everywhere.
    ExtraFields,
    /// `content: null` spelled out next to tool calls, and no `refusal`.
    NullContentWithToolCalls,
    /// `content` as an array of `{type: "text", text}` parts.
    ContentParts,
    /// Thinking in the content: `<think>…</think>` before the answer (Ollama, llama.cpp).
    ThinkTags,
    /// Thinking in `reasoning_content` and `reasoning` beside the content (vLLM, DeepSeek, OpenRouter).
    ReasoningContent,
    /// A server-sent-event stream in OpenAI's shape.
    Stream,
    /// A stream whose first chunk has empty `choices` (Azure).
    StreamEmptyChoices,
    /// A stream with `: keep-alive` comments between chunks.
    StreamKeepAlive,
    /// A stream that ends without `data: [DONE]`.
    StreamNoDone,
    /// A stream with `<think>` tags split across chunks.
    StreamThink,
    /// A stream from a chat template that opens `<think>` in the prompt: the text starts inside
    /// the thought and only `</think>` arrives.
    StreamThinkImplicit,
    /// Unusable: `choices: []`.
    NoChoices,
    /// Unusable: a message with neither content nor tool calls.
    EmptyMessage,
    /// Unusable: only an unterminated `<think>`.
    OnlyThinking,
}

impl Shape {
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Shape::Stream
                | Shape::StreamEmptyChoices
                | Shape::StreamKeepAlive
                | Shape::StreamNoDone
                | Shape::StreamThink
                | Shape::StreamThinkImplicit
        )
    }
}

/// What the fake does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// A final answer with this content (`finish_reason: stop`). An empty string is allowed.
    Answer(String),
    /// The answer given when no step is scripted (see the module docs).
    DefaultAnswer,
    /// `web_search` tool calls, one per query (ids `call_<n>`, unique per server).
    ToolCalls(Vec<String>),
    /// Tool calls with raw `(name, arguments)`, e.g. malformed JSON or an unknown tool.
    RawToolCalls(Vec<(String, String)>),
    /// An HTTP error with an OpenAI-style error body. A 401 echoes the received key in its message,
    /// as OpenAI does (masked), so tests can check that the bot never repeats it.
    Status(u16),
    /// HTTP 429 with `Retry-After: retry_after_secs` and a `rate_limit_exceeded` error body.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 429 with this exact `Retry-After` value (e.g. `1e20`, `-1`, `NaN`).
    RetryAfterRaw(String),
    /// The inner step, written in this shape.
    Shaped(Shape, Box<Step>),
    /// Waits, then does the inner step.
    Delay(Duration, Box<Step>),
    /// Never answers (the connection stays open): for timeouts.
    Hang,
    /// Drops the connection without writing a response.
    CloseConnection,
}

/// How llama-cpp-python's server differs from OpenAI's API, each switchable
/// ([`FakeOpenAi::set_llama_cpp`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct LlamaCpp {
    /// HTTP 500 for an assistant message with `tool_calls` and no `content` (missing or null):
    /// its ChatML template reads `content` on every message.
    pub needs_tool_call_content: bool,
    /// `tools` are ignored unless `tool_choice` is sent (the model just answers).
    pub tools_need_tool_choice: bool,
    /// `tools` are ignored whatever `tool_choice` says (a server without tool calling).
    pub ignores_tools: bool,
    /// `stream: true` with tools and `tool_choice: "auto"`: HTTP 200 with an empty body.
    pub empty_stream_for_auto_tools: bool,
    /// The context, in tokens (one per character of the messages, plus `max_tokens`); past it,
    /// HTTP 400 `context_length_exceeded` in llama-cpp-python's words. 0: no limit.
    pub context_tokens: usize,
    /// Answers longer than `max_tokens` (one token per character) are cut there, with
    /// `finish_reason: "length"`.
    pub honours_max_tokens: bool,
}

impl LlamaCpp {
    /// Every quirk, with a context of `context_tokens`.
    pub fn all(context_tokens: usize) -> Self {
        Self {
            needs_tool_call_content: true,
            tools_need_tool_choice: true,
            ignores_tools: false,
            empty_stream_for_auto_tools: true,
            context_tokens,
            honours_max_tokens: true,
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// When the request (its whole body) arrived.
    pub received_at: Instant,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

struct Script {
    contains: String,
    steps: VecDeque<Step>,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    scripts: Mutex<Vec<Script>>,
    delay: Mutex<Duration>,
    next_id: AtomicU64,
    shape: Mutex<Option<Shape>>,
    rejects_tools: Mutex<bool>,
    api_key: Mutex<Option<String>>,
    models: Mutex<Vec<String>>,
    /// The pause before each event of a streamed answer (zero: all at once).
    stream_gap: Mutex<Duration>,
    llama_cpp: Mutex<LlamaCpp>,
    /// What `GET /v1/models` lists when set (else the known models, else `fake-model`).
    listed_models: Mutex<Option<Vec<String>>>,
    /// The `n_ctx` `GET /props` states; without it `/props` is 404.
    props_n_ctx: Mutex<Option<u64>>,
    /// Requests carrying `stream_options` get HTTP 400.
    rejects_stream_options: Mutex<bool>,
    /// Streams carry usage on their finishing chunk even when not asked for it.
    stream_usage_unasked: Mutex<bool>,
    /// The usage reported so far, `(prompt, completion)` per response.
    reported: Mutex<Vec<(u64, u64)>>,
}

impl State {
    fn next_step(&self, body: &Value) -> Option<Step> {
        let last_user = last_user_text(body)?;
        let mut scripts = self.scripts.lock().unwrap();
        scripts
            .iter_mut()
            .find(|script| !script.steps.is_empty() && last_user.contains(&script.contains))
            .and_then(|script| script.steps.pop_front())
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The `usage` object of a response using `completion` tokens, noted as reported.
    fn usage(&self, completion: u64) -> Value {
        self.reported
            .lock()
            .unwrap()
            .push((PROMPT_TOKENS, completion));
        json!({
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion,
            "total_tokens": PROMPT_TOKENS + completion
        })
    }
}

/// The prompt tokens every reported usage states.
pub const PROMPT_TOKENS: u64 = 100;

/// The running fake; stops (with all its connections) when dropped.
pub struct FakeOpenAi {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeOpenAi {
    /// Streamed answers send each event `gap` after the previous one (zero: all at once).
    pub fn set_stream_gap(&self, gap: Duration) {
        *self.state.stream_gap.lock().unwrap() = gap;
    }

    /// Starts the server on 127.0.0.1 with an OS-assigned port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake openai");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let server = tokio::spawn(serve(listener, state.clone()));
        Self {
            addr,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/v1`: the value for `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Adds a script: requests whose last user message contains `contains` get `steps`, one each.
    pub fn script(&self, contains: &str, steps: Vec<Step>) {
        self.state.scripts.lock().unwrap().push(Script {
            contains: contains.to_owned(),
            steps: steps.into(),
        });
    }

    /// Writes every response in `shape` (a step's own [`Step::Shaped`] wins).
    pub fn set_shape(&self, shape: Shape) {
        *self.state.shape.lock().unwrap() = Some(shape);
    }

    /// Answers requests that carry `stream_options` with HTTP 400, as servers that do not know
    /// the option do (Azure's wording: "Unrecognized request argument supplied").
    pub fn set_rejects_stream_options(&self, rejects: bool) {
        *self.state.rejects_stream_options.lock().unwrap() = rejects;
    }

    /// Streams report usage on their finishing chunk, asked for or not.
    pub fn set_stream_usage_unasked(&self, unasked: bool) {
        *self.state.stream_usage_unasked.lock().unwrap() = unasked;
    }

    /// The usage reported so far, `(prompt, completion)` tokens per response, in order.
    pub fn reported_usage(&self) -> Vec<(u64, u64)> {
        self.state.reported.lock().unwrap().clone()
    }

    /// Answers requests that carry `tools` with Ollama's 400 "does not support tools".
    pub fn set_rejects_tools(&self, rejects: bool) {
        *self.state.rejects_tools.lock().unwrap() = rejects;
    }

    /// Behaves like llama-cpp-python's server as `quirks` say.
    pub fn set_llama_cpp(&self, quirks: LlamaCpp) {
        *self.state.llama_cpp.lock().unwrap() = quirks;
    }

    /// `GET /v1/models` lists these (whatever models are accepted).
    pub fn set_listed_models(&self, models: &[&str]) {
        *self.state.listed_models.lock().unwrap() =
            Some(models.iter().map(|m| (*m).to_owned()).collect());
    }

    /// `GET /props` answers llama.cpp's way with this context length.
    pub fn set_props_context(&self, n_ctx: u64) {
        *self.state.props_n_ctx.lock().unwrap() = Some(n_ctx);
    }

    /// Requires `Authorization: Bearer {key}`; other keys get OpenAI's 401.
    pub fn set_api_key(&self, key: &str) {
        *self.state.api_key.lock().unwrap() = Some(key.to_owned());
    }

    /// Only these models exist; others get OpenAI's 404 `model_not_found`.
    pub fn set_models(&self, models: &[&str]) {
        *self.state.models.lock().unwrap() = models.iter().map(|m| (*m).to_owned()).collect();
    }

    /// Delays every response (after the request is recorded, before any step runs).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// The JSON bodies of all requests so far, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.recorded().into_iter().map(|r| r.body).collect()
    }

    /// All requests so far with their arrival times and `Authorization` headers.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Waits until at least `count` requests arrived; panics after `timeout`.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.request_count() >= count {
                return self.requests();
            }
            assert!(
                Instant::now() < deadline,
                "fake openai: {count} requests expected, {} arrived",
                self.request_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The text of the last `user` message of a request body.
pub fn last_user_text(body: &Value) -> Option<String> {
    body["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
}

/// The text of every user message of a model request, oldest first: the window's questions, then
/// the current one.
pub fn user_texts(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter(|m| m["role"] == "user")
                .map(|m| content_text(&m["content"]))
                .collect()
        })
        .unwrap_or_default()
}

/// The user messages of a model request before its current question (the window's questions).
pub fn window_of(body: &Value) -> Vec<String> {
    let mut users = user_texts(body);
    users.pop();
    users
}

/// A message's content as text: a string, or the concatenated `text` parts of an array.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    // Owning the connections in a JoinSet means aborting this task closes them too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move {
                    let response = handle(state.clone(), request).await?;
                    let gap = *state.stream_gap.lock().unwrap();
                    Ok::<_, std::io::Error>(pace(response, gap).await)
                }
            });
            // A scripted CloseConnection surfaces here as an error: the socket is just dropped.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

type Reply = Result<Response<Full<Bytes>>, std::io::Error>;

/// A response body, written at once or paced.
type PacedBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// Sends a streamed answer's events `gap` apart, as a model that writes slowly does; any other
/// response goes out at once.
async fn pace(response: Response<Full<Bytes>>, gap: Duration) -> Response<PacedBody> {
    let streamed = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if gap.is_zero() || !streamed {
        return response.map(|body| body.boxed_unsync());
    }
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let events: Vec<Bytes> = text
        .split_inclusive("\n\n")
        .map(|event| Bytes::from(event.to_owned()))
        .collect();
    let paced = futures_util::stream::iter(events).then(move |event| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(event))
    });
    Response::from_parts(parts, http_body_util::StreamBody::new(paced).boxed_unsync())
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Reply {
    if request.method() == Method::GET && request.uri().path() == "/v1/models" {
        let listed = state.listed_models.lock().unwrap().clone();
        let known = state.models.lock().unwrap().clone();
        let ids = listed
            .or((!known.is_empty()).then_some(known))
            .unwrap_or_else(|| vec!["fake-model".to_owned()]);
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "object": "model", "owned_by": "me", "permissions": []}))
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": data}),
        ));
    }
    if request.method() == Method::GET && request.uri().path() == "/props" {
        if let Some(n_ctx) = *state.props_n_ctx.lock().unwrap() {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"default_generation_settings": {"n_ctx": n_ctx}, "total_slots": 1}),
            ));
        }
    }
    if request.method() != Method::POST || request.uri().path() != "/v1/chat/completions" {
        return Ok(error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown route",
        ));
    }
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = request
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(RecordedRequest {
        body: body.clone(),
        received_at: Instant::now(),
        authorization: authorization.clone(),
    });
    if body.is_null() {
        return Ok(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body is not JSON",
        ));
    }

    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    if let Some(key) = state.api_key.lock().unwrap().clone() {
        if authorization.as_deref() != Some(&*format!("Bearer {key}")) {
            let given = authorization.clone().unwrap_or_default();
            return Ok(error_response_with_code(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                &format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    given.trim_start_matches("Bearer ")
                ),
            ));
        }
    }
    let models = state.models.lock().unwrap().clone();
    if !models.is_empty() && !models.contains(&model) {
        return Ok(error_response_with_code(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            &format!("The model `{model}` does not exist or you do not have access to it."),
        ));
    }
    if body.get("stream_options").is_some() && *state.rejects_stream_options.lock().unwrap() {
        return Ok(error_response_with_code(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request_error",
            "Unrecognized request argument supplied: stream_options",
        ));
    }
    let stream_usage = if body["stream_options"]["include_usage"] == true {
        StreamUsage::Asked
    } else if *state.stream_usage_unasked.lock().unwrap() {
        StreamUsage::OnFinish
    } else {
        StreamUsage::None
    };
    let has_tools = body["tools"]
        .as_array()
        .is_some_and(|tools| !tools.is_empty());
    if has_tools && *state.rejects_tools.lock().unwrap() {
        return Ok(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {
                "message": format!("registry.ollama.ai/library/{model} does not support tools"),
                "type": "api_error", "param": null, "code": null
            }}),
        ));
    }

    let quirks = *state.llama_cpp.lock().unwrap();
    if quirks.needs_tool_call_content && tool_call_without_content(&body) {
        return Ok(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "'dict object' has no attribute 'content'",
        ));
    }
    let max_tokens = body["max_tokens"]
        .as_u64()
        .or_else(|| body["max_completion_tokens"].as_u64())
        .map(|n| n as usize);
    if quirks.context_tokens > 0 {
        let prompt = prompt_tokens(&body);
        let completion = max_tokens.unwrap_or(0);
        if prompt + completion > quirks.context_tokens {
            let context = quirks.context_tokens;
            let requested = prompt + completion;
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": {
                    "message": format!(
                        "This model's maximum context length is {context} tokens. However, you \
                         requested {requested} tokens ({prompt} in the messages, {completion} in \
                         the completion). Please reduce the length of the messages or completion."
                    ),
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded"
                }}),
            ));
        }
    }
    let tool_choice = &body["tool_choice"];
    if has_tools
        && quirks.empty_stream_for_auto_tools
        && body["stream"] == true
        && tool_choice == "auto"
    {
        let mut response = Response::new(Full::new(Bytes::new()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        return Ok(response);
    }
    let tools_ignored = has_tools
        && (quirks.ignores_tools || (quirks.tools_need_tool_choice && tool_choice.is_null()));

    let mut step = state.next_step(&body);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut shape = state.shape.lock().unwrap().unwrap_or(Shape::Standard);
    loop {
        match step {
            Some(Step::Delay(wait, inner)) => {
                tokio::time::sleep(wait).await;
                step = Some(*inner);
            }
            Some(Step::Shaped(step_shape, inner)) => {
                shape = step_shape;
                step = Some(*inner);
            }
            _ => break,
        }
    }
    // A stream request gets a stream, except for the unusable shapes, which answer in plain JSON
    // (as a server that ignores `stream` does) so they stay unusable.
    let unusable = matches!(
        shape,
        Shape::NoChoices | Shape::EmptyMessage | Shape::OnlyThinking
    );
    if body["stream"] == true && !shape.is_stream() && !unusable {
        shape = Shape::Stream;
    }
    if tools_ignored {
        // The model never sees the tools, so it cannot call them: it just answers.
        if matches!(step, Some(Step::ToolCalls(_) | Step::RawToolCalls(_))) {
            step = Some(Step::DefaultAnswer);
        }
    }
    let cut_at = max_tokens.filter(|_| quirks.honours_max_tokens);
    let completion = |state: &State,
                      model: &str,
                      content: Option<String>,
                      calls: Vec<(String, String)>| match (content, cut_at) {
        (Some(text), Some(limit)) if text.chars().count() > limit => {
            let cut: String = text.chars().take(limit).collect();
            length_completion(state, model, cut, shape, stream_usage)
        }
        (content, _) => shaped_completion(state, model, content, calls, shape, stream_usage),
    };

    Ok(match step {
        None | Some(Step::DefaultAnswer) => {
            completion(&state, &model, Some(default_answer(&body)), Vec::new())
        }
        Some(Step::Answer(text)) => completion(&state, &model, Some(text), Vec::new()),
        Some(Step::ToolCalls(queries)) => {
            let calls = queries
                .into_iter()
                .map(|q| ("web_search".to_owned(), json!({ "query": q }).to_string()))
                .collect();
            completion(&state, &model, None, calls)
        }
        Some(Step::RawToolCalls(calls)) => completion(&state, &model, None, calls),
        Some(Step::Status(status)) => {
            let status = StatusCode::from_u16(status).expect("valid status code");
            let message = if status == StatusCode::UNAUTHORIZED {
                let key = authorization.unwrap_or_default();
                format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    key.trim_start_matches("Bearer ")
                )
            } else {
                format!("The fake server answered {status} as scripted.")
            };
            let kind = if status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            };
            error_response(status, kind, &message)
        }
        Some(Step::RateLimited { retry_after_secs }) => {
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate limit reached for requests. Please try again later.",
            );
            response.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from_str(&retry_after_secs.to_string()).unwrap(),
            );
            response
        }
        Some(Step::RetryAfterRaw(value)) => {
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate limit reached for requests. Please try again later.",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_str(&value).unwrap());
            response
        }
        Some(Step::Hang) => {
            std::future::pending::<()>().await;
            unreachable!("pending never completes")
        }
        Some(Step::CloseConnection) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "scripted connection close",
            ))
        }
        Some(Step::Delay(..) | Step::Shaped(..)) => unreachable!("unwrapped above"),
    })
}

/// Whether an assistant message carries tool calls without `content` (missing or null).
fn tool_call_without_content(body: &Value) -> bool {
    body["messages"].as_array().is_some_and(|messages| {
        messages.iter().any(|m| {
            m["role"] == "assistant" && m.get("tool_calls").is_some() && !m["content"].is_string()
        })
    })
}

/// The prompt's tokens as the fake counts them: one per character of every message's text and
/// tool call arguments.
fn prompt_tokens(body: &Value) -> usize {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    messages
        .iter()
        .map(|m| {
            let calls: usize = m["tool_calls"]
                .as_array()
                .map(|calls| {
                    calls
                        .iter()
                        .map(|c| {
                            c["function"]["arguments"]
                                .as_str()
                                .unwrap_or_default()
                                .chars()
                                .count()
                        })
                        .sum()
                })
                .unwrap_or(0);
            content_text(&m["content"]).chars().count() + calls
        })
        .sum()
}

/// An answer cut at `max_tokens`: `finish_reason: "length"`, streamed when asked.
fn length_completion(
    state: &State,
    model: &str,
    content: String,
    shape: Shape,
    stream_usage: StreamUsage,
) -> Response<Full<Bytes>> {
    let id = state.id();
    if shape.is_stream() {
        let usage = stream_usage.report(state, content.chars().count() as u64);
        return stream_response(id, model, Some(content), &[], "length", shape, usage);
    }
    let usage = state.usage(content.chars().count() as u64);
    json_response(
        StatusCode::OK,
        &json!({
            "id": format!("chatcmpl-fake-{id}"),
            "object": "chat.completion",
            "created": 1_700_000_000u32,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "length"
            }],
            "usage": usage
        }),
    )
}

fn default_answer(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.iter().rev().find(|m| m["role"] != "system");
    if let Some(tool) = last.filter(|m| m["role"] == "tool") {
        let text: String = content_text(&tool["content"]).chars().take(100).collect();
        return format!("{TOOL_ANSWER_PREFIX}{text}");
    }
    let user = last_user_text(body).unwrap_or_default();
    let question = user.split_once("\n\n").map_or(user.as_str(), |(_, q)| q);
    format!("「{question}」の答えなのだ。")
}

/// One tool call as `(id, name, arguments)`.
type Call = (String, String, String);

fn shaped_completion(
    state: &State,
    model: &str,
    content: Option<String>,
    calls: Vec<(String, String)>,
    shape: Shape,
    stream_usage: StreamUsage,
) -> Response<Full<Bytes>> {
    let id = state.id();
    let calls: Vec<Call> = calls
        .into_iter()
        .map(|(name, arguments)| (format!("call_{}", state.id()), name, arguments))
        .collect();
    let finish_reason = match shape {
        Shape::FinishEmpty => "",
        Shape::FinishEosToken => "eos_token",
        _ if calls.is_empty() => "stop",
        _ => "tool_calls",
    };
    let content = match shape {
        // Reasoning models think before a tool call too.
        Shape::ThinkTags | Shape::StreamThink => Some(format!(
            "<think>\n{THOUGHT}\n</think>\n\n{}",
            content.unwrap_or_default()
        )),
        Shape::StreamThinkImplicit => Some(format!(
            "{THOUGHT}\n</think>\n\n{}",
            content.unwrap_or_default()
        )),
        Shape::OnlyThinking => Some(format!("<think>{THOUGHT}")),
        Shape::EmptyMessage => None,
        _ => content,
    };
    if shape.is_stream() {
        let completion = content.as_ref().map_or(1, |c| c.chars().count() as u64);
        let usage = stream_usage.report(state, completion);
        return stream_response(id, model, content, &calls, finish_reason, shape, usage);
    }

    let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
    match shape {
        Shape::NoRole => {
            message.as_object_mut().unwrap().remove("role");
        }
        Shape::ContentParts => {
            if let Some(text) = &content {
                let (a, b) = split_half(text);
                message["content"] =
                    json!([{"type": "text", "text": a}, {"type": "text", "text": b}]);
            }
        }
        Shape::ReasoningContent => {
            message["reasoning_content"] = json!(THOUGHT);
            message["reasoning"] = json!(THOUGHT);
        }
        Shape::ExtraFields => {
            message["annotations"] = json!([]);
            message["x_vendor"] = json!({"nested": [1, 2, 3]});
        }
        Shape::NullContentWithToolCalls => {
            message.as_object_mut().unwrap().remove("refusal");
            if !calls.is_empty() {
                message["content"] = Value::Null;
            }
        }
        Shape::EmptyMessage => message = json!({}),
        _ => {}
    }
    if !calls.is_empty() && shape != Shape::EmptyMessage {
        let calls: Vec<Value> = calls
            .iter()
            .map(|(id, name, arguments)| {
                if shape == Shape::ToolCallWithoutType {
                    json!({ "function": { "name": name, "arguments": arguments } })
                } else {
                    json!({
                        "id": id,
                        "type": "function",
                        "function": { "name": name, "arguments": arguments }
                    })
                }
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    let completion_tokens = content_len(&message);
    let usage = if shape == Shape::NoUsage {
        Value::Null
    } else {
        state.usage(completion_tokens)
    };
    let mut body = json!({
        "id": format!("chatcmpl-fake-{id}"),
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": usage
    });
    let fields = body.as_object_mut().unwrap();
    match shape {
        Shape::MissingIds => {
            for key in ["id", "object", "created"] {
                fields.remove(key);
            }
        }
        Shape::NoUsage => {
            fields.remove("usage");
        }
        Shape::ExtraFields => {
            fields.insert("system_fingerprint".into(), json!("fp_fake"));
            fields.insert("x_groq".into(), json!({"id": "req_1", "queue_time": 0.1}));
            fields.insert("prompt_filter_results".into(), json!([]));
            body["choices"][0]["stop_reason"] = json!(128009);
            body["choices"][0]["content_filter_results"] = json!({});
        }
        Shape::NoChoices => {
            fields.insert("choices".into(), json!([]));
        }
        _ => {}
    }
    json_response(StatusCode::OK, &body)
}

/// Splits a text in two at a character boundary near its middle.
fn split_half(text: &str) -> (String, String) {
    let chars: Vec<char> = text.chars().collect();
    let middle = chars.len() / 2;
    (
        chars[..middle].iter().collect(),
        chars[middle..].iter().collect(),
    )
}

/// Whether and how a stream reports usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamUsage {
    /// Not at all.
    None,
    /// Asked for (`stream_options.include_usage`): OpenAI's way, `usage: null` on every chunk
    /// and a last chunk with empty `choices` carrying it.
    Asked,
    /// Unasked, on the chunk with the finish reason.
    OnFinish,
}

impl StreamUsage {
    /// The usage object to send with `completion` tokens (noted as reported), with how.
    fn report(self, state: &State, completion: u64) -> Option<(Value, StreamUsage)> {
        (self != StreamUsage::None).then(|| (state.usage(completion), self))
    }
}

/// A server-sent-event stream of chat completion chunks, reporting `usage` as it says.
fn stream_response(
    id: u64,
    model: &str,
    content: Option<String>,
    calls: &[Call],
    finish_reason: &str,
    shape: Shape,
    usage: Option<(Value, StreamUsage)>,
) -> Response<Full<Bytes>> {
    let asked_usage = matches!(usage, Some((_, StreamUsage::Asked)));
    let chunk = |choices: Value| {
        let mut chunk = json!({
            "id": format!("chatcmpl-fake-{id}"),
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u32,
            "model": model,
            "choices": choices,
        });
        if asked_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let delta =
        |delta: Value| chunk(json!([{ "index": 0, "delta": delta, "finish_reason": null }]));
    let mut chunks = Vec::new();
    if shape == Shape::StreamEmptyChoices {
        chunks.push(
            json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}),
        );
    }
    chunks.push(delta(json!({ "role": "assistant", "content": "" })));
    if let Some(text) = content {
        // Three characters per chunk, so tags and multi-byte characters are split.
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(3) {
            chunks.push(delta(
                json!({ "content": piece.iter().collect::<String>() }),
            ));
        }
    }
    for (index, (call_id, name, arguments)) in calls.iter().enumerate() {
        chunks.push(delta(json!({ "tool_calls": [{
            "index": index, "id": call_id, "type": "function",
            "function": { "name": name, "arguments": "" }
        }]})));
        let (a, b) = split_half(arguments);
        for part in [a, b] {
            chunks.push(delta(
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": part } }] }),
            ));
        }
    }
    let mut finish = chunk(json!([{ "index": 0, "delta": {}, "finish_reason": finish_reason }]));
    match usage {
        Some((usage, StreamUsage::Asked)) => {
            chunks.push(finish);
            let mut last = chunk(json!([]));
            last["usage"] = usage;
            chunks.push(last);
        }
        Some((usage, _)) => {
            finish["usage"] = usage;
            chunks.push(finish);
        }
        None => chunks.push(finish),
    }
    let mut body = String::new();
    for chunk in chunks {
        body.push_str(&format!("data: {chunk}\n\n"));
        if shape == Shape::StreamKeepAlive {
            body.push_str(": keep-alive\n\n");
        }
    }
    if shape != Shape::StreamNoDone {
        body.push_str("data: [DONE]\n\n");
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
}

fn content_len(message: &Value) -> u64 {
    message["content"]
        .as_str()
        .map_or(1, |c| c.chars().count() as u64)
}

fn error_response_with_code(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }),
    )
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({ "error": { "message": message, "type": kind, "param": null, "code": kind } }),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
