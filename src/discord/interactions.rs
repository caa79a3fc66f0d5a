//! Discord's HTTP interactions endpoint (`POST /interactions`), an alternative to receiving
//! commands over the gateway: set the application's "Interactions Endpoint URL" to it and
//! `DISCORD_PUBLIC_KEY` to the application's public key.
//!
//! Every request must carry a valid Ed25519 signature of `X-Signature-Timestamp + body` (Discord
//! probes the endpoint with bad signatures and expects 401). PING is answered with PONG; `/zunda`
//! is answered in the HTTP response itself (`ちょっと待ってね。`, or a limit reply), and the answer
//! then replaces that message, exactly as after a deferral on the gateway path.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::{HeaderMap, StatusCode};
use ractor::ActorRef;
use serde_json::{json, Value};
use serenity::interactions_endpoint::Verifier;
use tokio::time::Instant;
use tracing::{error, warn};

use super::router::{CommandEvent, RouterMsg};
use super::{COMMAND_NAME, OPTION_NAME};

/// The endpoint's path.
pub const PATH: &str = "/interactions";
/// Interaction payloads are a few KiB; anything far larger is refused unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Signed requests older (or newer) than this are refused, so a captured request cannot be
/// replayed later.
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Parses the application's public key (64 hex digits, from the Developer Portal).
pub fn verifier(public_key: &str) -> Result<Verifier, String> {
    let hex = public_key.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "DISCORD_PUBLIC_KEY must be the application's public key: 64 hex digits".into(),
        );
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex digits");
    }
    Verifier::try_new(key)
        .map_err(|err| format!("DISCORD_PUBLIC_KEY is not a valid Ed25519 key: {err}"))
}

pub struct InteractionsEndpoint {
    verifier: Verifier,
    router: ActorRef<RouterMsg>,
}

impl InteractionsEndpoint {
    pub fn new(verifier: Verifier, router: ActorRef<RouterMsg>) -> Self {
        Self { verifier, router }
    }

    /// Answers one request: the status and the JSON body (or a short error text).
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Value) {
        let received = Instant::now();
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) = (
            header("x-signature-ed25519"),
            header("x-signature-timestamp"),
        ) else {
            return unauthorized();
        };
        if self.verifier.verify(signature, timestamp, body).is_err() || !is_fresh(timestamp) {
            return unauthorized();
        }
        let Ok(interaction) = serde_json::from_slice::<Value>(body) else {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": "body is not JSON"}),
            );
        };
        match interaction["type"].as_u64() {
            Some(1) => (StatusCode::OK, json!({"type": 1})),
            Some(2) => self.command(&interaction, received).await,
            other => {
                warn!(kind = ?other, "interactions endpoint: unsupported interaction type");
                (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported interaction type"}),
                )
            }
        }
    }

    async fn command(&self, interaction: &Value, received: Instant) -> (StatusCode, Value) {
        let Some(event) = command_event(interaction, received) else {
            warn!("interactions endpoint: a command without the fields of /zunda");
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": "not a /zunda command"}),
            );
        };
        let text = match self
            .router
            .call(|reply| RouterMsg::HttpCommand(event, reply), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(text)) => text,
            _ => {
                error!("interactions endpoint: the event actor did not answer");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "unavailable"}),
                );
            }
        };
        let message = json!({"content": text, "allowed_mentions": {"parse": []}});
        (StatusCode::OK, json!({"type": 4, "data": message}))
    }
}

fn unauthorized() -> (StatusCode, Value) {
    (
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid request signature"}),
    )
}

fn is_fresh(timestamp: &str) -> bool {
    let Ok(sent) = timestamp.trim().parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    now.abs_diff(sent) <= MAX_CLOCK_SKEW_SECS
}

fn snowflake(value: &Value) -> Option<u64> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_u64())
}

/// The `/zunda` use in an APPLICATION_COMMAND payload (guild or DM).
fn command_event(interaction: &Value, received: Instant) -> Option<CommandEvent> {
    let data = &interaction["data"];
    if data["name"].as_str()? != COMMAND_NAME {
        return None;
    }
    let question = data["options"]
        .as_array()?
        .iter()
        .find(|option| option["name"] == OPTION_NAME)
        .and_then(|option| option["value"].as_str())
        .unwrap_or_default();
    let member = &interaction["member"];
    let user = if member["user"].is_object() {
        &member["user"]
    } else {
        &interaction["user"]
    };
    let user_name = [&member["nick"], &user["global_name"], &user["username"]]
        .into_iter()
        .find_map(|name| name.as_str().filter(|n| !n.is_empty()))
        .unwrap_or("user");
    let channel_id = snowflake(&interaction["channel_id"])
        .or_else(|| snowflake(&interaction["channel"]["id"]))?;
    Some(CommandEvent {
        interaction_id: snowflake(&interaction["id"])?,
        application_id: snowflake(&interaction["application_id"])?,
        token: interaction["token"].as_str()?.to_owned(),
        channel_id,
        guild_id: snowflake(&interaction["guild_id"]),
        user_id: snowflake(&user["id"])?,
        user_name: user_name.to_owned(),
        question: question.to_owned(),
        received,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_are_checked() {
        assert!(verifier("zz").is_err());
        assert!(verifier(&"g".repeat(64)).is_err());
        // A valid Ed25519 public key (RFC 8032 test vector 1).
        assert!(
            verifier("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").is_ok()
        );
    }

    #[test]
    fn stale_timestamps_are_refused() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(is_fresh(&now.to_string()));
        assert!(!is_fresh(&(now - 3600).to_string()));
        assert!(!is_fresh("yesterday"));
    }

    #[test]
    fn reads_the_command_from_a_guild_or_dm_payload() {
        let guild = json!({
            "id": "11", "application_id": "22", "type": 2, "token": "tok", "channel_id": "33",
            "data": {"name": "zunda", "options": [{"name": "question", "type": 3, "value": "なに？"}]},
            "member": {"nick": "ずんだ", "user": {"id": "44", "username": "zun"}}
        });
        let event = command_event(&guild, Instant::now()).unwrap();
        assert_eq!(
            (
                event.interaction_id,
                event.application_id,
                event.channel_id,
                event.user_id
            ),
            (11, 22, 33, 44)
        );
        assert_eq!(event.user_name, "ずんだ");
        assert_eq!(event.question, "なに？");
        let dm = json!({
            "id": "11", "application_id": "22", "type": 2, "token": "tok", "channel": {"id": "35"},
            "data": {"name": "zunda", "options": []},
            "user": {"id": "45", "username": "zun", "global_name": "Zun"}
        });
        let event = command_event(&dm, Instant::now()).unwrap();
        assert_eq!((event.channel_id, event.user_id), (35, 45));
        assert_eq!(event.user_name, "Zun");
        assert_eq!(event.question, "");
        let other = json!({"id": "1", "application_id": "2", "token": "t", "data": {"name": "other", "options": []}});
        assert!(command_event(&other, Instant::now()).is_none());
    }
}
