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
//!
//! This file holds the client ([`Delivery`]); the routes and errors are in [`errors`], the
//! endpoints (acknowledgements, edits, follow-ups, channel messages) and the checks on what is
//! sent in [`endpoints`], messages carrying a text file in [`files`], the retry loop in [`send`],
//! and the redaction of tokens from what
//! Discord says in [`redact`].

mod endpoints;
mod errors;
mod files;
mod redact;
mod send;
#[cfg(test)]
mod tests;

use std::time::Duration;

use reqwest::header::HeaderValue;

use crate::ops::metrics::UnknownFollowUps;
pub use endpoints::autocomplete_response;
pub(super) use endpoints::{check_content, check_token, message_body};
pub use errors::{DeliveryError, Failure, Route};
pub use files::{TextFile, TEXT_FILE_TYPE};
pub(super) use redact::{api_error, describe};
pub(super) use send::{rate_limit_wait, Call};

/// The User-Agent Discord asks bots to send: `DiscordBot ($url, $version)`.
pub const USER_AGENT: &str = concat!(
    "DiscordBot (https://github.com/zundamon, ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// Discord's cap on message content, in UTF-16 code units.
pub const MAX_CONTENT_UNITS: usize = 2000;

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
}
