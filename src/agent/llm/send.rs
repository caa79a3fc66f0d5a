//! One attempt: the POST, and the body read as a plain completion or an event stream (asked
//! for or not), capped at `MAX_BODY_BYTES`.

use reqwest::header::CONTENT_TYPE;
use tracing::debug;

use super::redact::innermost;
use super::{ChatClient, LlmError, MAX_BODY_BYTES};
use crate::agent::response::{parse_completion, AssistantMessage, ResponseError};
use crate::agent::stream::{read_stream, StreamEvent, StreamFailure};
use crate::retry;
use std::sync::atomic::Ordering;

impl ChatClient {
    pub(super) async fn send_once(
        &self,
        body: &[u8],
        on_event: &mut (dyn FnMut(StreamEvent) + Send),
    ) -> Result<AssistantMessage, LlmError> {
        let started = std::time::Instant::now();
        // Whether a streamed answer starts inside a thought (see `think_opens_implicitly`).
        let implicit = self.think_opens_implicitly.load(Ordering::Relaxed);
        let mut response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.api_key.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        let status = response.status();
        let retry_after = retry::server_wait(response.headers());
        let is_event_stream = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
        if status.is_success() && is_event_stream {
            // Read up to MAX_BODY_BYTES, like a plain body: a runaway stream ends there and is
            // assembled from what arrived.
            let chunks = Box::pin(futures::stream::unfold(
                (response, 0usize),
                |(mut response, read)| async move {
                    if read >= MAX_BODY_BYTES {
                        return None;
                    }
                    match response.chunk().await {
                        Ok(Some(bytes)) => {
                            let read = read + bytes.len();
                            Some((Ok(bytes), (response, read)))
                        }
                        Ok(None) => None,
                        Err(err) => Some((Err(err), (response, read))),
                    }
                },
            ));
            let result = read_stream(chunks, implicit, on_event).await;
            debug!(
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "chat model stream ended"
            );
            return result.map_err(|failure| match failure {
                StreamFailure::Response(ResponseError::EmptyStream) => self.empty_body(),
                StreamFailure::Response(err) => self.invalid(err),
                StreamFailure::Transport {
                    error,
                    emitted_text: false,
                } => self.transport_error(error),
                // Part of the answer was shown: a retry would show it twice.
                StreamFailure::Transport { error, .. } => LlmError::InvalidResponse {
                    upstream: self.upstream.clone(),
                    reason: format!(
                        "the stream broke off after part of the answer: {}",
                        innermost(&error.without_url())
                    ),
                },
            });
        }
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
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(self.empty_body());
        }
        // Some proxies stream even when not asked to, under a generic content type.
        let text_start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len());
        let looks_like_sse =
            bytes[text_start..].starts_with(b"data:") || bytes[text_start..].starts_with(b":");
        if looks_like_sse {
            let chunks = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
            return read_stream(chunks, implicit, on_event).await.map_err(
                |failure| match failure {
                    StreamFailure::Response(ResponseError::EmptyStream) => self.empty_body(),
                    StreamFailure::Response(err) => self.invalid(err),
                    StreamFailure::Transport { error, .. } => match error {},
                },
            );
        }
        let message = parse_completion(&bytes).map_err(|err| self.invalid(err))?;
        if let Some(text) = &message.content {
            on_event(StreamEvent::Text(text.clone()));
        }
        Ok(message)
    }

    pub(super) fn empty_body(&self) -> LlmError {
        LlmError::EmptyBody {
            upstream: self.upstream.clone(),
        }
    }
}

pub(super) async fn read_capped(
    response: &mut reqwest::Response,
) -> Result<Vec<u8>, reqwest::Error> {
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
