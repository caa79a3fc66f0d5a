//! What a delivery names and how it fails: the REST routes as named in errors and logs
//! ([`Route`], never holding a token), retryable failures ([`Failure`]), the final
//! [`DeliveryError`], and the Discord error codes they are read from.

use std::fmt;

/// Discord's JSON error code for "Interaction has already been acknowledged".
pub(super) const ALREADY_ACKNOWLEDGED: u64 = 40060;
/// Discord's JSON error code for "Unknown interaction" (expired or never acknowledged).
pub(super) const UNKNOWN_INTERACTION: u64 = 10062;
/// Discord's code for a webhook (an interaction token) it does not know.
pub(super) const UNKNOWN_WEBHOOK: u64 = 10015;
/// Discord's code for a message it does not know.
pub(super) const UNKNOWN_MESSAGE: u64 = 10008;

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
    /// Reading a channel (`GET /channels/{id}`), to learn its parent.
    Channel {
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
            Self::Channel { channel_id } => write!(f, "GET /channels/{channel_id}"),
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
