//! Follow-ups whose post had an unknown outcome: Discord's answer was a server error or was lost
//! (timeout, connection dropped after sending), so the message may or may not exist. Webhook
//! executes have no idempotency key, so posting again could show the part twice.
//!
//! Instead of posting blindly, the bot reads the channel with its bot token and looks for a
//! message of the interaction (`interaction_metadata.id`, or the older `interaction.id`) with
//! exactly the content sent. Found: that is the follow-up. Proven absent (the channel's messages
//! since the interaction, all read): it is posted once more. No way to tell (no bot token, no
//! channel, 403 in a channel the bot cannot read, an error, too many messages to read): a missing
//! part is preferred to a duplicate, so it is not posted again.

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::deliver::{Call, Delivery, DeliveryError, Route};
use crate::ops::metrics::UnknownFollowUps;

/// Messages read per page (Discord's maximum).
const PAGE: usize = 100;
/// Pages read at most: a channel busier than this since the interaction cannot be searched.
const MAX_PAGES: usize = 5;
/// How long a look may take in all.
const LOOKUP_BUDGET: Duration = Duration::from_secs(30);

/// The interaction a follow-up belongs to, and where it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub interaction_id: u64,
    pub channel_id: u64,
}

/// What a look for a follow-up found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// It was posted: its message id.
    Found(u64),
    /// Every message of the channel since the interaction was read, and it is not among them.
    Absent,
    /// It cannot be told (why, for the logs).
    Unknowable(String),
}

impl Delivery {
    /// The same client, able to read channels with the bot's token (`Bot …` or bare) when a
    /// follow-up's outcome is unknown. An empty token leaves it unable to.
    pub fn reading_channels_as(mut self, bot_token: &str) -> Self {
        let token = bot_token.strip_prefix("Bot ").unwrap_or(bot_token).trim();
        self.reader = (!token.is_empty())
            .then(|| HeaderValue::from_str(&format!("Bot {token}")).ok())
            .flatten()
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        self
    }

    /// The same client, counting follow-ups with an unknown outcome in `counter`.
    pub fn counting_unknown_follow_ups(mut self, counter: UnknownFollowUps) -> Self {
        self.unknown_follow_ups = counter;
        self
    }

    /// Counts one follow-up with an unknown outcome: `found`, `resent` or `given_up`.
    pub(super) fn count_unknown_follow_up(&self, outcome: &str) {
        self.unknown_follow_ups.count(outcome);
    }

    /// Looks in `origin`'s channel for a follow-up of its interaction showing `content`, other
    /// than the messages in `known`.
    pub async fn find_follow_up(
        &self,
        origin: Origin,
        content: &str,
        known: &[u64],
        deadline: Instant,
    ) -> Lookup {
        let Some(auth) = &self.reader else {
            return Lookup::Unknowable("no bot token to read the channel with".into());
        };
        if origin.channel_id == 0 {
            return Lookup::Unknowable("the channel is not known".into());
        }
        let route = Route::ChannelMessages {
            channel_id: origin.channel_id,
        };
        let deadline = deadline.min(Instant::now() + LOOKUP_BUDGET);
        // Message ids are time-ordered: whatever the interaction posted is after its id.
        let mut after = origin.interaction_id;
        for _ in 0..MAX_PAGES {
            let call = Call {
                route,
                method: Method::GET,
                url: format!(
                    "{}/channels/{}/messages?after={after}&limit={PAGE}",
                    self.api, origin.channel_id
                ),
                auth: Some(auth.clone()),
                body: Value::Null,
                secret: "",
            };
            let body = match self
                .send_for_body(call, self.delivery_policy(deadline))
                .await
            {
                Ok(body) => body,
                Err(err) => return Lookup::Unknowable(describe_failure(&err)),
            };
            let Ok(Value::Array(messages)) = serde_json::from_slice::<Value>(&body) else {
                return Lookup::Unknowable("the channel's messages could not be read".into());
            };
            if let Some(id) = messages
                .iter()
                .filter(|message| is_follow_up_of(message, origin.interaction_id))
                .filter(|message| message["content"].as_str() == Some(content))
                .filter_map(|message| snowflake(&message["id"]))
                .find(|id| !known.contains(id))
            {
                return Lookup::Found(id);
            }
            if messages.len() < PAGE {
                return Lookup::Absent;
            }
            match messages.iter().filter_map(|m| snowflake(&m["id"])).max() {
                Some(last) if last > after => after = last,
                _ => return Lookup::Unknowable("the channel's messages did not page".into()),
            }
        }
        Lookup::Unknowable(format!(
            "over {} messages in the channel since the question",
            PAGE * MAX_PAGES
        ))
    }
}

/// Whether `message` was sent in answer to interaction `interaction_id`.
fn is_follow_up_of(message: &Value, interaction_id: u64) -> bool {
    ["interaction_metadata", "interaction"]
        .iter()
        .any(|field| snowflake(&message[field]["id"]) == Some(interaction_id))
}

fn snowflake(value: &Value) -> Option<u64> {
    value
        .as_str()
        .and_then(|id| id.parse().ok())
        .or_else(|| value.as_u64())
}

/// Why a look failed, without anything secret (the error never holds a token).
fn describe_failure(err: &DeliveryError) -> String {
    match err.status() {
        Some(403) => "the bot may not read the channel (HTTP 403)".into(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_follow_up_is_recognised_by_either_interaction_field() {
        let new = json!({"id": "5", "interaction_metadata": {"id": "42", "type": 2}});
        let old = json!({"id": "6", "interaction": {"id": "42", "type": 2}});
        let other = json!({"id": "7", "interaction_metadata": {"id": "43"}});
        let plain = json!({"id": "8", "content": "x"});
        assert!(is_follow_up_of(&new, 42));
        assert!(is_follow_up_of(&old, 42));
        assert!(!is_follow_up_of(&other, 42));
        assert!(!is_follow_up_of(&plain, 42));
    }

    #[tokio::test]
    async fn without_a_bot_token_nothing_can_be_told() {
        let delivery = Delivery::new("http://127.0.0.1:9", 1, Duration::from_secs(1));
        let origin = Origin {
            interaction_id: 1,
            channel_id: 2,
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        assert!(matches!(
            delivery.find_follow_up(origin, "x", &[], deadline).await,
            Lookup::Unknowable(_)
        ));
        let blank = delivery.reading_channels_as("  ");
        assert!(blank.reader.is_none());
        let reading = blank.reading_channels_as("Bot abc");
        assert_eq!(
            reading.reader.as_ref().unwrap().to_str().unwrap(),
            "Bot abc"
        );
    }
}
