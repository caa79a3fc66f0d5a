//! The bot's own client for answering interactions and replying in channels over Discord's REST
//! API.
//!
//! serenity's HTTP client, when pointed at a custom base URL (tests) or with its ratelimiter off,
//! neither retries a 429 nor decodes Discord's 429 body, and an answer that took a minute to think
//! must not be lost to one rate limit or one 502. This module owns that last step:
//!
//! - acknowledging an interaction (`defer`, `reply_now`) inside Discord's 3 s window: one attempt
//!   and at most one quick retry;
//! - editing the deferred reply and posting follow-ups (`edit_original`, `follow_up`, `deliver`)
//!   and channel replies, retrying 429 after `Retry-After` / `X-RateLimit-Reset-After` / the body's
//!   `retry_after`, and 5xx or network errors with exponential backoff, never waiting past the
//!   caller's deadline (the interaction token lives 15 minutes).
//!
//! Every message body carries `allowed_mentions: {"parse": []}` so nothing the model writes (or a
//! quoted question) can ping @everyone, roles or users. Interaction tokens are secrets: errors and
//! logs name routes with the token replaced by `:token`, and transport errors are stripped of URLs.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::warn;

use crate::ops::metrics::UnknownFollowUps;
use crate::retry;

/// The User-Agent Discord asks bots to send: `DiscordBot ($url, $version)`.
pub const USER_AGENT: &str = concat!(
    "DiscordBot (https://github.com/zundamon, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// Discord's cap on message content, in UTF-16 code units.
pub const MAX_CONTENT_UNITS: usize = 2000;

/// How long an acknowledgement may take in all: Discord drops interactions not acknowledged within
/// 3 s of their creation, and some of that is already spent on the gateway.
const ACK_BUDGET: Duration = Duration::from_millis(2500);
/// The first acknowledgement attempt gets at most this long, leaving room for the quick retry.
const ACK_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause before the one quick retry of an acknowledgement.
const ACK_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Attempts of a message delivery, as a backstop to the deadline (each failure counts toward
/// Discord's invalid-request limit).
const DELIVERY_ATTEMPTS: u32 = 8;
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Wait after a 429 that says nothing about how long to wait.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// Discord's JSON error code for "Interaction has already been acknowledged".
const ALREADY_ACKNOWLEDGED: u64 = 40060;
/// Discord's JSON error code for "Unknown interaction" (expired or never acknowledged).
const UNKNOWN_INTERACTION: u64 = 10062;
/// The message flag that shows a reply only to the user who invoked the command.
const EPHEMERAL: u64 = 1 << 6;
/// Discord's code for a webhook (an interaction token) it does not know.
const UNKNOWN_WEBHOOK: u64 = 10015;
/// Discord's code for a message it does not know.
const UNKNOWN_MESSAGE: u64 = 10008;
/// How much of Discord's error message an error keeps.
const MAX_MESSAGE_CHARS: usize = 300;

/// A REST route, as named in errors and logs: tokens are never part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Acknowledging an interaction (`POST /interactions/{id}/{token}/callback`).
    Callback {
        /// The interaction being acknowledged.
        interaction_id: u64,
    },
    /// Editing the deferred reply (`PATCH /webhooks/{app}/{token}/messages/@original`).
    EditOriginal,
    /// Posting a follow-up message (`POST /webhooks/{app}/{token}`).
    FollowUp,
    /// Editing a follow-up message (`PATCH /webhooks/{app}/{token}/messages/{id}`).
    EditFollowUp {
        /// The message edited.
        message_id: u64,
    },
    /// Deleting a follow-up message (`DELETE /webhooks/{app}/{token}/messages/{id}`).
    DeleteFollowUp {
        /// The message deleted.
        message_id: u64,
    },
    /// Posting a message in a channel (`POST /channels/{id}/messages`).
    ChannelMessage {
        /// The channel posted to.
        channel_id: u64,
    },
    /// Reading a channel's recent messages (`GET /channels/{id}/messages`), to find out whether
    /// a follow-up whose answer was lost was posted.
    ChannelMessages {
        /// The channel read.
        channel_id: u64,
    },
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Callback { interaction_id } => {
                write!(f, "POST /interactions/{interaction_id}/:token/callback")
            }
            Self::EditOriginal => f.write_str("PATCH /webhooks/:app/:token/messages/@original"),
            Self::FollowUp => f.write_str("POST /webhooks/:app/:token"),
            Self::EditFollowUp { message_id } => {
                write!(f, "PATCH /webhooks/:app/:token/messages/{message_id}")
            }
            Self::DeleteFollowUp { message_id } => {
                write!(f, "DELETE /webhooks/:app/:token/messages/{message_id}")
            }
            Self::ChannelMessage { channel_id } => {
                write!(f, "POST /channels/{channel_id}/messages")
            }
            Self::ChannelMessages { channel_id } => {
                write!(f, "GET /channels/{channel_id}/messages")
            }
        }
    }
}

/// Why an attempt failed in a way worth retrying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Discord answered 429 or 5xx.
    Status(u16),
    /// The request did not complete (connect error, timeout, reset…); never contains a URL.
    Transport(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "HTTP {status}"),
            Self::Transport(why) => f.write_str(why),
        }
    }
}

/// A delivery that did not happen. Never contains an interaction or bot token.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Discord refused the request with a status retrying cannot fix (4xx other than 429).
    #[error("Discord rejected {route} with HTTP {status}{}", api_detail(*code, message.as_deref()))]
    Rejected {
        /// The route refused.
        route: Route,
        /// The HTTP status.
        status: u16,
        /// Discord's JSON error code, if it sent one.
        code: Option<u64>,
        /// Discord's error message, shortened.
        message: Option<String>,
    },
    /// Every attempt failed and the attempt limit or the deadline leaves no room for another.
    #[error(
        "gave up on {route} after {attempts} attempt(s) (no retry fits before the deadline); \
         last failure: {last}"
    )]
    GaveUp {
        /// The route tried.
        route: Route,
        /// Attempts made.
        attempts: u32,
        /// What went wrong the last time.
        last: Failure,
    },
    /// A request that is not safe to send twice (posting a follow-up: Discord has no idempotency
    /// key for webhooks) was sent, and whether Discord acted on it is unknown: the answer was a
    /// server error, or it was lost (timeout, connection dropped after sending). It was not sent
    /// again.
    #[error(
        "the outcome of {route} is unknown after {attempts} attempt(s) (Discord may have posted \
         it; not sent again blindly): {last}"
    )]
    Unknown {
        /// The route tried.
        route: Route,
        /// Attempts made.
        attempts: u32,
        /// What went wrong the last time.
        last: Failure,
    },
    /// The deadline had passed before the request could be sent.
    #[error("the deadline for {route} passed before it could be sent (interaction tokens last 15 minutes)")]
    Expired {
        /// The route not tried.
        route: Route,
    },
    /// The request would be invalid, so it was not sent.
    #[error("refusing to send {route}: {reason}")]
    Invalid {
        /// The route not tried.
        route: Route,
        /// What is wrong with it.
        reason: String,
    },
}

impl DeliveryError {
    /// The last HTTP status Discord answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. }
            | Self::GaveUp {
                last: Failure::Status(status),
                ..
            }
            | Self::Unknown {
                last: Failure::Status(status),
                ..
            } => Some(*status),
            _ => None,
        }
    }

    /// Why Discord refused to take an acknowledgement, if that is what happened: the interaction
    /// is unknown (too late, or expired) or was already acknowledged (by another process of the
    /// same bot). The metric label.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Rejected {
                code: Some(UNKNOWN_INTERACTION),
                ..
            } => Some("unknown_interaction"),
            Self::Rejected {
                code: Some(ALREADY_ACKNOWLEDGED),
                ..
            } => Some("already_acknowledged"),
            _ => None,
        }
    }

    /// Whether the token can no longer be used (unknown interaction, unknown webhook or
    /// message, or past its lifetime): retrying the delivery later cannot succeed. A follow-up
    /// whose outcome is unknown counts too: trying it later could post it twice.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Rejected {
                code: Some(UNKNOWN_INTERACTION | UNKNOWN_WEBHOOK | UNKNOWN_MESSAGE),
                ..
            } | Self::Rejected {
                status: 401 | 403,
                ..
            } | Self::Expired { .. }
                | Self::Invalid { .. }
                | Self::Unknown { .. }
        )
    }
}

fn api_detail(code: Option<u64>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!(": {message} (code {code})"),
        (Some(code), None) => format!(" (code {code})"),
        (None, Some(message)) => format!(": {message}"),
        (None, None) => String::new(),
    }
}

/// How hard to try one request.
pub(super) struct Policy {
    pub(super) deadline: Instant,
    pub(super) max_attempts: u32,
    pub(super) attempt_timeout: Duration,
    /// Wait before retrying a 5xx or a transport error, by attempt number (1-based).
    pub(super) transient_wait: fn(u32) -> Duration,
}

/// One request to make, possibly several times.
pub(super) struct Call<'a> {
    pub(super) route: Route,
    pub(super) method: Method,
    pub(super) url: String,
    pub(super) auth: Option<HeaderValue>,
    pub(super) body: Value,
    /// Scrubbed from any error text.
    pub(super) secret: &'a str,
}

/// Sends interaction responses, follow-ups and channel messages, with retries.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub(super) client: reqwest::Client,
    pub(super) api: String,
    pub(super) application_id: u64,
    pub(super) request_timeout: Duration,
    /// The bot's `Authorization` header, to read channels when a follow-up's outcome is unknown
    /// (none: such a follow-up is never looked for).
    pub(super) reader: Option<HeaderValue>,
    /// Where follow-ups with an unknown outcome are counted.
    pub(super) unknown_follow_ups: UnknownFollowUps,
}

impl Delivery {
    /// A client for the Discord API at `api_base` (`https://discord.com`; a trailing `/api` or
    /// `/api/v10` is tolerated) acting for `application_id`. `request_timeout` bounds each HTTP
    /// attempt.
    pub fn new(api_base: &str, application_id: u64, request_timeout: Duration) -> Self {
        // The shared TLS configuration carries its own crypto provider (ring).
        let tls = crate::ops::tls::client_config()
            .unwrap_or_else(|err| panic!("cannot build the Discord HTTP client: {err}"));
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(USER_AGENT)
            .connect_timeout(request_timeout)
            .timeout(request_timeout)
            // Tokens travel in the path and in headers: never follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("building the HTTP client only fails without a TLS crypto provider");
        let base = api_base.trim_end_matches('/');
        let base = base
            .strip_suffix("/api/v10")
            .or_else(|| base.strip_suffix("/api"))
            .unwrap_or(base);
        Self {
            client,
            api: format!("{base}/api/v10"),
            application_id,
            request_timeout,
            reader: None,
            unknown_follow_ups: UnknownFollowUps::default(),
        }
    }

    /// The application this client posts webhooks for.
    pub fn application_id(&self) -> u64 {
        self.application_id
    }

    /// The same client (its connection pool and TLS setup are shared) acting for another
    /// application: building a client reads the system's root certificates, which is too slow to
    /// do while interactions are waiting.
    pub fn for_application(&self, application_id: u64) -> Self {
        Self {
            application_id,
            ..self.clone()
        }
    }

    /// Acknowledges an interaction with a deferred "thinking…" response (callback type 5).
    ///
    /// Fits Discord's 3 s window: one attempt, and one quick retry only if the first failed
    /// transiently. A retry answered "already acknowledged" counts as success (the first attempt
    /// got through after all).
    pub async fn defer(&self, interaction_id: u64, token: &str) -> Result<(), DeliveryError> {
        let body = json!({"type": 5, "data": {"allowed_mentions": {"parse": []}}});
        self.callback(interaction_id, token, body).await
    }

    /// Answers an interaction at once with a message (callback type 4), for replies that need no
    /// model. Same timing rules as [`Delivery::defer`].
    pub async fn reply_now(
        &self,
        interaction_id: u64,
        token: &str,
        content: &str,
    ) -> Result<(), DeliveryError> {
        self.reply_with(interaction_id, token, content, None).await
    }

    /// Answers an interaction at once with a message only its user sees (callback type 4 with
    /// the ephemeral flag).
    pub async fn reply_ephemeral(
        &self,
        interaction_id: u64,
        token: &str,
        content: &str,
    ) -> Result<(), DeliveryError> {
        self.reply_with(interaction_id, token, content, Some(EPHEMERAL))
            .await
    }

    /// A message callback (type 4) with these message `flags`.
    async fn reply_with(
        &self,
        interaction_id: u64,
        token: &str,
        content: &str,
        flags: Option<u64>,
    ) -> Result<(), DeliveryError> {
        let route = Route::Callback { interaction_id };
        check_content(route, content)?;
        let mut data = message_body(content);
        if let Some(flags) = flags {
            data["flags"] = json!(flags);
        }
        let body = json!({"type": 4, "data": data});
        self.callback(interaction_id, token, body).await
    }

    /// Replaces the deferred reply's content.
    pub async fn edit_original(
        &self,
        token: &str,
        content: &str,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let route = Route::EditOriginal;
        check_token(route, token)?;
        check_content(route, content)?;
        let url = format!(
            "{}/webhooks/{}/{token}/messages/@original",
            self.api, self.application_id
        );
        let policy = self.delivery_policy(deadline);
        let call = Call {
            route,
            method: Method::PATCH,
            url,
            auth: None,
            body: message_body(content),
            secret: token,
        };
        self.send(call, policy).await
    }

    /// Posts a follow-up message to the interaction.
    pub async fn follow_up(
        &self,
        token: &str,
        content: &str,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let route = Route::FollowUp;
        check_token(route, token)?;
        check_content(route, content)?;
        let url = format!("{}/webhooks/{}/{token}", self.api, self.application_id);
        let policy = self.delivery_policy(deadline);
        let call = Call {
            route,
            method: Method::POST,
            url,
            auth: None,
            body: message_body(content),
            secret: token,
        };
        self.send(call, policy).await
    }

    /// Delivers an answer already split into parts: the first replaces the deferred reply, the
    /// others follow in order. All parts are checked before anything is sent, so an invalid part
    /// never leaves half an answer behind; a failure stops the delivery.
    pub async fn deliver(
        &self,
        token: &str,
        parts: &[String],
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let Some((first, rest)) = parts.split_first() else {
            return Err(DeliveryError::Invalid {
                route: Route::EditOriginal,
                reason: "there is nothing to deliver (no parts)".to_string(),
            });
        };
        check_content(Route::EditOriginal, first)?;
        for part in rest {
            check_content(Route::FollowUp, part)?;
        }
        self.edit_original(token, first, deadline).await?;
        for part in rest {
            self.follow_up(token, part, deadline).await?;
        }
        Ok(())
    }

    /// Posts `content` in a channel as the bot, optionally as a reply to a message (pinging its
    /// author, and still posting if that message is gone). Retried like the other deliveries,
    /// within the request timeout times the attempt limit.
    ///
    /// The message carries `nonce` with `enforce_nonce`, so Discord posts it once however often
    /// it is sent in the next minutes: by a retry whose first answer was lost, or by a second
    /// process of the same bot that got the same event.
    pub async fn send_channel_message(
        &self,
        bot_token: &str,
        channel_id: u64,
        content: &str,
        reply_to: Option<u64>,
        nonce: Option<u64>,
    ) -> Result<(), DeliveryError> {
        let route = Route::ChannelMessage { channel_id };
        check_content(route, content)?;
        let token = bot_token.strip_prefix("Bot ").unwrap_or(bot_token).trim();
        let mut auth =
            HeaderValue::from_str(&format!("Bot {token}")).map_err(|_| DeliveryError::Invalid {
                route,
                reason: "the bot token is not a valid HTTP header value".to_string(),
            })?;
        auth.set_sensitive(true);
        let mut body = json!({
            "content": content,
            "allowed_mentions": {"parse": [], "replied_user": true},
        });
        if let Some(nonce) = nonce {
            // A snowflake has at most 20 digits: within Discord's 25-character limit.
            body["nonce"] = json!(nonce.to_string());
            body["enforce_nonce"] = json!(true);
        }
        if let Some(message_id) = reply_to {
            body["message_reference"] = json!({
                "message_id": message_id.to_string(),
                "fail_if_not_exists": false,
            });
        }
        let url = format!("{}/channels/{channel_id}/messages", self.api);
        let deadline = Instant::now() + self.request_timeout * DELIVERY_ATTEMPTS + BACKOFF_CAP;
        let policy = self.delivery_policy(deadline);
        let call = Call {
            route,
            method: Method::POST,
            url,
            auth: Some(auth),
            body,
            secret: token,
        };
        self.send(call, policy).await
    }

    async fn callback(
        &self,
        interaction_id: u64,
        token: &str,
        body: Value,
    ) -> Result<(), DeliveryError> {
        let route = Route::Callback { interaction_id };
        check_token(route, token)?;
        let url = format!(
            "{}/interactions/{interaction_id}/{token}/callback",
            self.api
        );
        let policy = Policy {
            deadline: Instant::now() + ACK_BUDGET,
            max_attempts: 2,
            attempt_timeout: self.request_timeout.min(ACK_ATTEMPT_TIMEOUT),
            transient_wait: |_| ACK_RETRY_DELAY,
        };
        let call = Call {
            route,
            method: Method::POST,
            url,
            auth: None,
            body,
            secret: token,
        };
        self.send(call, policy).await
    }

    pub(super) fn delivery_policy(&self, deadline: Instant) -> Policy {
        Policy {
            deadline,
            max_attempts: DELIVERY_ATTEMPTS,
            attempt_timeout: self.request_timeout,
            transient_wait: backoff,
        }
    }

    /// Makes `call`, retrying as `policy` allows.
    pub(super) async fn send(&self, call: Call<'_>, policy: Policy) -> Result<(), DeliveryError> {
        self.send_for_body(call, policy).await.map(drop)
    }

    /// Like [`send`](Self::send), returning the body of the successful response.
    pub(super) async fn send_for_body(
        &self,
        call: Call<'_>,
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
            if !body.is_null() {
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

pub(super) fn message_body(content: &str) -> Value {
    json!({"content": content, "allowed_mentions": {"parse": []}})
}

/// Refuses content Discord would reject, before spending a request (and an invalid-request
/// strike) on it.
pub(super) fn check_content(route: Route, content: &str) -> Result<(), DeliveryError> {
    let units = content.encode_utf16().count();
    let reason = if content.trim().is_empty() {
        "the message is empty".to_string()
    } else if units > MAX_CONTENT_UNITS {
        format!(
            "the message is {units} UTF-16 units long and Discord allows {MAX_CONTENT_UNITS}; \
             split it first"
        )
    } else {
        return Ok(());
    };
    Err(DeliveryError::Invalid { route, reason })
}

/// Interaction tokens go into URL paths: anything that could change the path is refused.
pub(super) fn check_token(route: Route, token: &str) -> Result<(), DeliveryError> {
    let valid = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='));
    if valid {
        Ok(())
    } else {
        Err(DeliveryError::Invalid {
            route,
            reason: "the interaction token is empty or has characters tokens never contain"
                .to_string(),
        })
    }
}

/// Backoff for attempt `attempt` (1-based) of a delivery, from the shared retry policy: 0.5 s,
/// 1 s, 2 s, 4 s… capped at 30 s, each plus up to half again of random jitter.
fn backoff(attempt: u32) -> Duration {
    retry::Backoff::new(BACKOFF_BASE, BACKOFF_CAP).delay(attempt.saturating_sub(1))
}

/// How long a 429 asks us to wait: the headers as the shared policy reads them (`Retry-After`,
/// else `X-RateLimit-Reset-After`), else the body's `retry_after`, else 1 s. Absurd values are
/// clamped to an hour (past any delivery deadline), nonsense ones ignored.
pub(super) fn rate_limit_wait(headers: &HeaderMap, body: &[u8]) -> Duration {
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

/// Discord's `{"code": …, "message": …}` error body, if that is what came back.
pub(super) fn api_error(body: &[u8], secret: &str) -> (Option<u64>, Option<String>) {
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
pub(super) fn describe(err: reqwest::Error, secret: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn rate_limit_wait_prefers_retry_after_then_reset_after_then_body() {
        let body =
            br#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#;
        let both = headers(&[("retry-after", "2"), ("x-ratelimit-reset-after", "1.5")]);
        assert_eq!(rate_limit_wait(&both, body), Duration::from_secs(2));
        let reset = headers(&[("x-ratelimit-reset-after", "1.5")]);
        assert_eq!(rate_limit_wait(&reset, body), Duration::from_millis(1500));
        assert_eq!(
            rate_limit_wait(&HeaderMap::new(), body),
            Duration::from_millis(250)
        );
        assert_eq!(
            rate_limit_wait(&HeaderMap::new(), b"not json"),
            DEFAULT_RATE_LIMIT_WAIT
        );
    }

    #[test]
    fn rate_limit_wait_ignores_nonsense_values() {
        let bad = headers(&[("retry-after", "soon"), ("x-ratelimit-reset-after", "-3")]);
        let body = br#"{"retry_after":"NaN"}"#;
        assert_eq!(rate_limit_wait(&bad, body), DEFAULT_RATE_LIMIT_WAIT);
        let fractional = headers(&[("retry-after", " 0.5 ")]);
        assert_eq!(
            rate_limit_wait(&fractional, b""),
            Duration::from_millis(500)
        );
        let huge = headers(&[("retry-after", "1e300")]);
        assert_eq!(rate_limit_wait(&huge, b""), retry::MAX_SERVER_WAIT);
    }

    #[test]
    fn backoff_doubles_from_half_a_second_and_caps_at_thirty() {
        let ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
        for (attempt, ceiling) in (1..=9).zip(ceilings) {
            let wait = backoff(attempt).as_secs_f64();
            assert!(
                wait >= ceiling && wait <= ceiling * 1.5,
                "{attempt}: {wait}"
            );
        }
        assert!(backoff(0) >= BACKOFF_BASE && backoff(0) <= BACKOFF_BASE * 3 / 2);
        assert!(backoff(u32::MAX) >= BACKOFF_CAP && backoff(u32::MAX) <= BACKOFF_CAP * 3 / 2);
    }

    #[test]
    fn rate_limit_wait_survives_absurd_values() {
        for value in [
            "1e20",
            "inf",
            "-inf",
            "NaN",
            "-1",
            "99999999999999999999999999",
        ] {
            let wait = rate_limit_wait(&headers(&[("retry-after", value)]), b"");
            assert!(wait <= retry::MAX_SERVER_WAIT, "{value}: {wait:?}");
        }
        let body = br#"{"retry_after":1e300}"#;
        assert_eq!(
            rate_limit_wait(&HeaderMap::new(), body),
            retry::MAX_SERVER_WAIT
        );
    }

    #[test]
    fn routes_and_errors_never_show_tokens() {
        let routes = [
            Route::Callback { interaction_id: 7 },
            Route::EditOriginal,
            Route::FollowUp,
            Route::ChannelMessage { channel_id: 9 },
        ];
        for route in routes {
            let shown = route.to_string();
            assert!(shown.contains(":token") || shown.contains("/channels/"));
        }
        let (code, message) = api_error(
            br#"{"code":10062,"message":"Unknown interaction sekrit"}"#,
            "sekrit",
        );
        let err = DeliveryError::Rejected {
            route: Route::EditOriginal,
            status: 404,
            code,
            message,
        };
        assert!(matches!(
            err,
            DeliveryError::Rejected {
                code: Some(UNKNOWN_INTERACTION),
                ..
            }
        ));
        assert_eq!(err.status(), Some(404));
        assert_eq!(
            err.to_string(),
            "Discord rejected PATCH /webhooks/:app/:token/messages/@original with HTTP 404: \
             Unknown interaction :token (code 10062)"
        );
    }

    #[test]
    fn content_and_tokens_are_checked_before_sending() {
        let route = Route::FollowUp;
        assert!(check_content(route, "なのだ").is_ok());
        assert!(check_content(route, " \n ").is_err());
        assert!(check_content(route, &"😀".repeat(1000)).is_ok());
        assert!(check_content(route, &"😀".repeat(1001)).is_err());
        assert!(check_token(route, "aW50ZXJhY3Rpb246MTIz-_.=").is_ok());
        assert!(check_token(route, "").is_err());
        assert!(check_token(route, "abc/../../channels").is_err());
        assert!(check_token(route, "abc?x=1").is_err());
    }

    #[test]
    fn every_message_body_disables_mentions() {
        let body = message_body("@everyone hi");
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
        assert_eq!(body["content"], "@everyone hi");
    }

    #[test]
    fn api_base_is_normalised() {
        for base in [
            "https://discord.com",
            "https://discord.com/",
            "https://discord.com/api",
            "https://discord.com/api/v10/",
        ] {
            let delivery = Delivery::new(base, 1, Duration::from_secs(1));
            assert_eq!(delivery.api, "https://discord.com/api/v10");
        }
    }

    #[tokio::test]
    async fn unreachable_discord_gives_up_without_leaking_the_token() {
        // A port that was just free: connections are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let delivery = Delivery::new(&base, 1, Duration::from_millis(500));
        let token = "c2VjcmV0LXRva2Vu";
        let deadline = Instant::now() + Duration::from_millis(1200);
        let err = delivery
            .edit_original(token, "hello", deadline)
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(token), "{shown}");
        assert!(
            matches!(err, DeliveryError::GaveUp { attempts: 2.., .. }),
            "{shown}"
        );

        let err = delivery.defer(1, token).await.unwrap_err();
        assert!(
            matches!(err, DeliveryError::GaveUp { attempts: 2, .. }),
            "{err}"
        );
        assert!(!format!("{err:?}").contains(token));
    }

    #[tokio::test]
    async fn empty_delivery_is_refused() {
        let delivery = Delivery::new("http://127.0.0.1:9", 1, Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(1);
        let err = delivery.deliver("t", &[], deadline).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Invalid { .. }));
        let parts = vec!["fine".to_string(), String::new()];
        let err = delivery.deliver("t", &parts, deadline).await.unwrap_err();
        assert!(matches!(
            err,
            DeliveryError::Invalid {
                route: Route::FollowUp,
                ..
            }
        ));
    }
}
