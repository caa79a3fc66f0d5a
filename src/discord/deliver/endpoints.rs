//! The endpoints: acknowledging an interaction (`defer`, `reply_now`, `reply_ephemeral`) inside
//! Discord's 3 s window, editing the original response, posting follow-ups, delivering an answer
//! and sending channel messages; with the checks on what is sent (content, tokens) and the
//! message body that disables mentions.

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::errors::DeliveryError;
use super::send::{Call, Policy, BACKOFF_CAP, DELIVERY_ATTEMPTS};
use super::{Delivery, Route, MAX_CONTENT_UNITS};

/// How long an acknowledgement may take in all: Discord drops interactions not acknowledged within
/// 3 s of their creation, and some of that is already spent on the gateway.
const ACK_BUDGET: Duration = Duration::from_millis(2500);
/// The first acknowledgement attempt gets at most this long, leaving room for the quick retry.
const ACK_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause before the one quick retry of an acknowledgement.
const ACK_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The message flag that shows a reply only to the user who invoked the command.
const EPHEMERAL: u64 = 1 << 6;

impl Delivery {
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

    /// Answers an autocomplete interaction with these choices (callback type 8).
    pub async fn autocomplete(
        &self,
        interaction_id: u64,
        token: &str,
        choices: &[String],
    ) -> Result<(), DeliveryError> {
        self.callback(interaction_id, token, autocomplete_response(choices))
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
}

pub(in crate::discord) fn message_body(content: &str) -> Value {
    json!({"content": content, "allowed_mentions": {"parse": []}})
}

/// Refuses content Discord would reject, before spending a request (and an invalid-request
/// strike) on it.
pub(in crate::discord) fn check_content(route: Route, content: &str) -> Result<(), DeliveryError> {
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
pub(in crate::discord) fn check_token(route: Route, token: &str) -> Result<(), DeliveryError> {
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

/// The interaction response listing autocomplete `choices` (at most 25, as Discord allows).
pub fn autocomplete_response(choices: &[String]) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .take(25)
        .map(|choice| json!({"name": choice, "value": choice}))
        .collect();
    json!({"type": 8, "data": {"choices": choices}})
}
