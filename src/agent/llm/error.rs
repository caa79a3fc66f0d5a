//! What can go wrong with one chat completion, and what each failure means for the next
//! attempt: retry it, ask again without tools, without streaming, with `max_completion_tokens`
//! instead of `max_tokens`, without `stream_options`, or with a shorter prompt (the server's
//! context was overflowed).
//!
//! Servers word these refusals differently; the texts matched here are the ones OpenAI, vLLM,
//! Ollama, llama.cpp's server and llama-cpp-python's server send.

use std::time::Duration;

use thiserror::Error;

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
    /// HTTP 200 with nothing in it: llama-cpp-python's answer to a streamed request with
    /// `tool_choice: "auto"`, which it cannot stream.
    #[error("chat model at {upstream}: HTTP 200 with an empty body")]
    EmptyBody { upstream: String },
    #[error("{cause} (a retry after {wait_secs}s would pass the answer deadline)")]
    DeadlineTooClose {
        wait_secs: u64,
        cause: Box<LlmError>,
    },
    #[error("cannot set up the chat model client: {0}")]
    Setup(String),
}

/// What servers say when the prompt (plus the answer asked for) does not fit the context, in
/// lower case: OpenAI and llama-cpp-python (`context_length_exceeded`, "maximum context
/// length"), vLLM ("maximum context length", "max_tokens … is too large"), llama.cpp's server
/// (`exceed_context_size_error`, "exceeds the available context size", "Context size has been
/// exceeded"), older llama-cpp-python ("exceed context window"), Ollama ("input length exceeds
/// maximum context length"), Anthropic-style proxies ("prompt is too long").
const OVERFLOW_MARKERS: &[&str] = &[
    "context_length_exceeded",
    "exceed_context_size",
    "maximum context length",
    "context length",
    "context size",
    "context window",
    "exceeds the context",
    "too many tokens",
    "prompt is too long",
    "input is too long",
];

impl LlmError {
    /// Whether another attempt may succeed: rate limits, server errors, timeouts and dropped or
    /// refused connections. `insufficient_quota` 429s, other 4xx and a context overflow (which
    /// llama.cpp reports as a 500) are permanent.
    pub(super) fn is_retryable(&self) -> bool {
        if self.overflows_context() {
            return false;
        }
        match self {
            Self::Status { status, detail, .. } => {
                (*status == 429 && !detail.contains("insufficient_quota"))
                    || *status == 408
                    || (500..=599).contains(status)
            }
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::InvalidResponse { .. }
            | Self::EmptyBody { .. }
            | Self::DeadlineTooClose { .. }
            | Self::Setup(_) => false,
        }
    }

    /// The upstream message of a refused request, in lower case, with its status.
    fn refusal(&self) -> Option<(u16, String)> {
        match self {
            Self::Status { status, detail, .. } => Some((*status, detail.to_ascii_lowercase())),
            Self::DeadlineTooClose { cause, .. } => cause.refusal(),
            _ => None,
        }
    }

    /// Whether this is a server refusing the image parts of a request (a model without vision:
    /// "image input is not supported", "… does not support images", "multimodal …").
    pub fn rejects_images(&self) -> bool {
        match self.refusal() {
            Some((400 | 415 | 422, detail)) => {
                !self.overflows_context()
                    && (detail.contains("image")
                        || detail.contains("vision")
                        || detail.contains("multimodal"))
            }
            _ => false,
        }
    }

    /// Whether this is a server refusing the `tools` of a request (Ollama: "… does not support
    /// tools"; vLLM and llama.cpp name the flag that enables tool calling).
    pub fn rejects_tools(&self) -> bool {
        match self.refusal() {
            Some((400 | 422, detail)) => {
                !self.overflows_context()
                    && (detail.contains("tool") || detail.contains("function"))
            }
            _ => false,
        }
    }

    /// Whether a streamed request that offered tools should be asked again without streaming:
    /// the server answered with an empty body (llama-cpp-python cannot stream automatic tool
    /// choice), or refused naming `tool_choice` or streaming.
    pub fn rejects_streamed_tools(&self) -> bool {
        match self {
            Self::EmptyBody { .. } => true,
            _ => match self.refusal() {
                Some((400 | 422, detail)) => {
                    !self.overflows_context()
                        && (detail.contains("tool_choice") || detail.contains("stream"))
                }
                _ => false,
            },
        }
    }

    /// Whether the server refused `max_tokens` (OpenAI's newer models: "Unsupported parameter:
    /// 'max_tokens' … Use 'max_completion_tokens' instead"), so the limit should be sent as
    /// `max_completion_tokens`.
    pub fn rejects_max_tokens(&self) -> bool {
        match self.refusal() {
            Some((400 | 422, detail)) => {
                !self.overflows_context()
                    && detail.contains("max_tokens")
                    && (detail.contains("max_completion_tokens")
                        || detail.contains("unsupported")
                        || detail.contains("not supported"))
            }
            _ => false,
        }
    }

    /// Whether the server refused the `stream_options` of a streamed request (`{"include_usage":
    /// true}`, which servers older than the option do not know): OpenAI-style proxies say
    /// "Unrecognized request argument supplied: stream_options", pydantic-based servers list it
    /// as an extra or unknown field. The same request without it can be answered.
    pub fn rejects_stream_options(&self) -> bool {
        match self.refusal() {
            Some((400 | 422, detail)) => {
                !self.overflows_context()
                    && (detail.contains("stream_options") || detail.contains("include_usage"))
            }
            _ => false,
        }
    }

    /// Whether the prompt (with the answer asked for) did not fit the model's context.
    pub fn overflows_context(&self) -> bool {
        match self.refusal() {
            Some((400 | 413 | 422 | 500, detail)) => OVERFLOW_MARKERS
                .iter()
                .any(|marker| detail.contains(marker)),
            _ => false,
        }
    }

    /// The numbers a context overflow message states, as far as it states them.
    pub fn overflow_numbers(&self) -> Option<crate::agent::context::Overflow> {
        if !self.overflows_context() {
            return None;
        }
        self.refusal()
            .map(|(_, detail)| crate::agent::context::Overflow::parse(&detail))
    }

    /// The HTTP status of a rejected request.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::DeadlineTooClose { cause, .. } => cause.status(),
            _ => None,
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The metric label of a failed attempt.
    pub(super) fn outcome(&self, will_retry: bool) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            _ if will_retry => "retry",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, detail: &str) -> LlmError {
        LlmError::Status {
            upstream: "u".into(),
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    #[test]
    fn retryable_statuses() {
        assert!(status(429, ": rate_limit_exceeded: slow down").is_retryable());
        assert!(!status(429, ": insufficient_quota: pay up").is_retryable());
        assert!(status(500, "").is_retryable());
        assert!(status(503, "").is_retryable());
        assert!(!status(400, "").is_retryable());
        assert!(!status(401, "").is_retryable());
        // llama.cpp reports some overflows as 500: retrying the same prompt cannot help.
        assert!(!status(500, ": server_error: Context size has been exceeded.").is_retryable());
        assert!(!LlmError::EmptyBody {
            upstream: "u".into()
        }
        .is_retryable());
    }

    #[test]
    fn tool_rejections_are_recognised() {
        assert!(status(
            400,
            ": registry.ollama.ai/library/gemma:2b does not support tools"
        )
        .rejects_tools());
        assert!(status(
            400,
            ": \"auto\" tool choice requires --enable-auto-tool-choice"
        )
        .rejects_tools());
        assert!(status(422, ": Functions are not supported").rejects_tools());
        assert!(!status(400, ": context length exceeded").rejects_tools());
        assert!(!status(500, ": tool server crashed").rejects_tools());
        assert!(!status(401, ": tools").rejects_tools());
    }

    #[test]
    fn streamed_tool_refusals_are_recognised() {
        assert!(LlmError::EmptyBody {
            upstream: "u".into()
        }
        .rejects_streamed_tools());
        assert!(status(400, ": tool_choice is not supported with stream").rejects_streamed_tools());
        assert!(status(422, ": Streaming is not supported with tools").rejects_streamed_tools());
        assert!(!status(400, ": does not support tools").rejects_streamed_tools());
        assert!(!status(500, ": stream broke").rejects_streamed_tools());
    }

    #[test]
    fn max_tokens_refusals_are_recognised() {
        assert!(status(
            400,
            ": unsupported_parameter: Unsupported parameter: 'max_tokens' is not supported with \
             this model. Use 'max_completion_tokens' instead."
        )
        .rejects_max_tokens());
        // vLLM's overflow names max_tokens too: that is an overflow, not a refusal of the name.
        let vllm = status(
            400,
            ": 'max_tokens' is too large: 1024. This model's maximum context length is 2048 \
             tokens and your request has 1500 input tokens (1024 > 2048 - 1500).",
        );
        assert!(!vllm.rejects_max_tokens());
        assert!(vllm.overflows_context());
        assert!(!status(400, ": something else").rejects_max_tokens());
    }

    #[test]
    fn image_refusals_are_recognised() {
        for (code, detail) in [
            (400, ": invalid_request_error: Invalid content type. image_url is only supported by certain models."),
            (400, ": image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"),
            (422, ": this model does not support vision"),
            (415, ": multimodal input not supported"),
        ] {
            assert!(status(code, detail).rejects_images(), "{detail}");
        }
        assert!(!status(500, ": image").rejects_images());
        assert!(!status(400, ": does not support tools").rejects_images());
    }

    #[test]
    fn stream_options_refusals_are_recognised() {
        for (code, detail) in [
            (
                400,
                ": invalid_request_error: Unrecognized request argument supplied: stream_options",
            ),
            (
                422,
                ": [{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), 'msg': 'Extra \
                 inputs are not permitted'}]",
            ),
            (400, ": unknown field `include_usage`"),
        ] {
            let err = status(code, detail);
            assert!(err.rejects_stream_options(), "{detail}");
            assert!(!err.rejects_max_tokens(), "{detail}");
        }
        assert!(!status(500, ": stream_options").rejects_stream_options());
        assert!(!status(400, ": stream broke").rejects_stream_options());
        assert!(!status(400, ": does not support tools").rejects_stream_options());
    }

    #[test]
    fn context_overflows_are_recognised_in_every_wording() {
        for (code, detail) in [
            // llama-cpp-python 0.3.x and OpenAI
            (
                400,
                ": context_length_exceeded: This model's maximum context length is 2048 tokens. \
                 However, you requested 2100 tokens (1076 in the messages, 1024 in the \
                 completion). Please reduce the length of the messages or completion.",
            ),
            // llama.cpp's llama-server
            (
                400,
                ": exceed_context_size_error: request (4390 tokens) exceeds the available \
                 context size (4096 tokens), try increasing it",
            ),
            (
                400,
                ": exceed_context_size_error: the request exceeds the available context size. \
                 try increasing the context size or enable context shift",
            ),
            (500, ": server_error: Context size has been exceeded."),
            // older llama-cpp-python
            (
                400,
                ": Requested tokens (2285) exceed context window of 2048",
            ),
            // vLLM
            (
                400,
                ": BadRequestError: This model's maximum context length is 4096 tokens. However, \
                 you requested 5000 tokens in the messages, Please reduce the length of the \
                 messages.",
            ),
            // Ollama
            (400, ": input length exceeds maximum context length"),
            // Anthropic-style proxies
            (400, ": prompt is too long: 210000 tokens > 200000 maximum"),
            (413, ": too many tokens in the request"),
        ] {
            let err = status(code, detail);
            assert!(err.overflows_context(), "{detail}");
            assert!(!err.rejects_tools(), "{detail}");
            assert!(!err.rejects_streamed_tools(), "{detail}");
        }
        assert!(!status(400, ": invalid model").overflows_context());
        assert!(!status(401, ": context length").overflows_context());
    }
}
