//! The retry loop: how hard to try one request ([`Policy`]), the request itself ([`Call`]), and
//! sending it again after a 429 (as long as Discord asks), a 5xx or a network error (with
//! exponential backoff), never past the caller's deadline.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use super::errors::ALREADY_ACKNOWLEDGED;
use super::files::TextFile;
use super::redact::{api_error, describe};
use super::{Delivery, DeliveryError, Failure, Route};
use crate::retry;

/// Attempts of a message delivery, as a backstop to the deadline (each failure counts toward
/// Discord's invalid-request limit).
pub(super) const DELIVERY_ATTEMPTS: u32 = 8;
pub(super) const BACKOFF_BASE: Duration = Duration::from_millis(500);
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Wait after a 429 that says nothing about how long to wait.
pub(super) const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// How hard to try one request.
pub(in crate::discord) struct Policy {
    pub(in crate::discord) deadline: Instant,
    pub(in crate::discord) max_attempts: u32,
    pub(in crate::discord) attempt_timeout: Duration,
    /// Wait before retrying a 5xx or a transport error, by attempt number (1-based).
    pub(in crate::discord) transient_wait: fn(u32) -> Duration,
}

/// One request to make, possibly several times.
pub(in crate::discord) struct Call<'a> {
    pub(in crate::discord) route: Route,
    pub(in crate::discord) method: Method,
    pub(in crate::discord) url: String,
    pub(in crate::discord) auth: Option<HeaderValue>,
    pub(in crate::discord) body: Value,
    /// Scrubbed from any error text.
    pub(in crate::discord) secret: &'a str,
}

impl Delivery {
    pub(in crate::discord) fn delivery_policy(&self, deadline: Instant) -> Policy {
        Policy {
            deadline,
            max_attempts: DELIVERY_ATTEMPTS,
            attempt_timeout: self.request_timeout,
            transient_wait: backoff,
        }
    }

    /// Makes `call`, retrying as `policy` allows.
    pub(in crate::discord) async fn send(
        &self,
        call: Call<'_>,
        policy: Policy,
    ) -> Result<(), DeliveryError> {
        self.send_for_body(call, policy).await.map(drop)
    }

    /// Like [`send`](Self::send), returning the body of the successful response.
    pub(in crate::discord) async fn send_for_body(
        &self,
        call: Call<'_>,
        policy: Policy,
    ) -> Result<bytes::Bytes, DeliveryError> {
        self.send_with_file(call, None, policy).await
    }

    /// Like [`send_for_body`](Self::send_for_body), the message carrying `file` when there is one
    /// (a multipart body).
    pub(in crate::discord) async fn send_with_file(
        &self,
        call: Call<'_>,
        file: Option<&TextFile>,
        policy: Policy,
    ) -> Result<bytes::Bytes, DeliveryError> {
        let Call {
            route,
            method,
            url,
            auth,
            body,
            secret,
        } = call;
        let mut attempt = 0;
        loop {
            let remaining = policy.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(DeliveryError::Expired { route });
            }
            attempt += 1;
            let mut request = self
                .client
                .request(method.clone(), &url)
                .timeout(remaining.min(policy.attempt_timeout));
            if let Some(file) = file {
                request = request.multipart(file.form(&body));
            } else if !body.is_null() {
                request = request.json(&body);
            }
            if let Some(auth) = &auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }

            // Whether Discord may have acted on the request although we saw no success.
            let mut maybe_taken = false;
            let (failure, wait) = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return Ok(response.bytes().await.unwrap_or_default())
                }
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        (Failure::Status(429), rate_limit_wait(&headers, &body))
                    } else if status.is_server_error() {
                        maybe_taken = true;
                        (
                            Failure::Status(status.as_u16()),
                            (policy.transient_wait)(attempt),
                        )
                    } else {
                        let (code, message) = api_error(&body, secret);
                        if attempt > 1
                            && code == Some(ALREADY_ACKNOWLEDGED)
                            && matches!(route, Route::Callback { .. })
                        {
                            // Our earlier attempt reached Discord even though its answer did not
                            // reach us.
                            return Ok(bytes::Bytes::new());
                        }
                        return Err(DeliveryError::Rejected {
                            route,
                            status: status.as_u16(),
                            code,
                            message,
                        });
                    }
                }
                Err(err) => {
                    // A connection never made carried nothing; anything later may have.
                    maybe_taken = !err.is_connect();
                    (
                        Failure::Transport(describe(err, secret)),
                        (policy.transient_wait)(attempt),
                    )
                }
            };

            if maybe_taken && !resend_is_safe(route) {
                return Err(DeliveryError::Unknown {
                    route,
                    attempts: attempt,
                    last: failure,
                });
            }

            if attempt >= policy.max_attempts || !retry::fits_before(wait, policy.deadline) {
                return Err(DeliveryError::GaveUp {
                    route,
                    attempts: attempt,
                    last: failure,
                });
            }
            warn!(
                %route,
                attempt,
                failure = %failure,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Discord request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether sending `route` again after a lost answer is harmless: edits and deletes are
/// idempotent, a second callback is refused (40060) and channel messages carry a nonce; a
/// follow-up posted twice shows twice.
fn resend_is_safe(route: Route) -> bool {
    route != Route::FollowUp
}

/// Backoff for attempt `attempt` (1-based) of a delivery, from the shared retry policy: 0.5 s,
/// 1 s, 2 s, 4 s… capped at 30 s, each plus up to half again of random jitter.
pub(super) fn backoff(attempt: u32) -> Duration {
    retry::Backoff::new(BACKOFF_BASE, BACKOFF_CAP).delay(attempt.saturating_sub(1))
}

/// How long a 429 asks us to wait: the headers as the shared policy reads them (`Retry-After`,
/// else `X-RateLimit-Reset-After`), else the body's `retry_after`, else 1 s. Absurd values are
/// clamped to an hour (past any delivery deadline), nonsense ones ignored.
pub(in crate::discord) fn rate_limit_wait(headers: &HeaderMap, body: &[u8]) -> Duration {
    retry::server_wait(headers)
        .or_else(|| {
            serde_json::from_slice::<Value>(body)
                .ok()?
                .get("retry_after")?
                .as_f64()
                .and_then(retry::seconds)
        })
        .unwrap_or(DEFAULT_RATE_LIMIT_WAIT)
}
