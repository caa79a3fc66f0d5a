//! Discord's HTTP interactions endpoint (`POST /interactions`), an alternative to receiving
//! commands over the gateway: set the application's "Interactions Endpoint URL" to it and
//! `DISCORD_PUBLIC_KEY` to the application's public key.
//!
//! Every request must carry a valid Ed25519 signature of `X-Signature-Timestamp + body` (Discord
//! probes the endpoint with bad signatures and expects 401). PING is answered with PONG; `/zunda`
//! is answered in the HTTP response itself (`ちょっと待ってね。`, or a limit reply), and the answer
//! then replaces that message, exactly as after a deferral on the gateway path. `/zunda-reset` and
//! `/zunda-memory` are deferred in the response (or refused in it) and answered by an edit.
//! Commands are read with serenity's own model and turned into the event actor's messages by
//! [`command_use`], as on the gateway; a body serenity cannot read gets 400.
//!
//! A signed command is used once: its interaction id is remembered for as long as its timestamp
//! would be accepted, and a replay gets 409 without reaching the event actor. The endpoint keeps
//! inside Discord's 3-second budget whatever the event actor does: if the question is not taken
//! within [`BUDGET`] of the request's arrival, the answer is [`BUSY_REPLY`].

mod replay;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::{HeaderMap, StatusCode};
use ractor::ActorRef;
use serde_json::{json, Value};
use serenity::all::Interaction;
use serenity::interactions_endpoint::Verifier;
use tokio::time::Instant;
use tracing::{error, warn};

use self::replay::ReplayGuard;
use super::command::{autocomplete_choices, command_use, CommandUse};
use super::deliver::{autocomplete_response, Delivery};
use super::gateway::ModelNames;
use super::parents::Parents;
use crate::ops::metrics::Metrics;
use crate::question::limits::BUSY_REPLY;
use crate::question::router::{CommandEvent, ControlEvent, ControlReply, RouterMsg};

/// The endpoint's path.
pub const PATH: &str = "/interactions";
/// Interaction payloads are a few KiB; anything far larger is refused unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Signed requests older (or newer) than this are refused, so a captured request cannot be
/// replayed later.
const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Time from a request's arrival (its headers read) to the latest moment the event actor's answer
/// is waited for: Discord gives up after 3 s, and the response still has to travel back.
pub const BUDGET: Duration = Duration::from_millis(2500);

/// Parses the application's public key (64 hex digits, from the Developer Portal).
pub fn verifier(public_key: &str) -> Result<Verifier, String> {
    let key = crate::config::public_key(public_key)?;
    Verifier::try_new(key)
        .map_err(|err| format!("DISCORD_PUBLIC_KEY is not a valid Ed25519 key: {err}"))
}

pub struct InteractionsEndpoint {
    verifier: Verifier,
    router: ActorRef<RouterMsg>,
    seen: ReplayGuard,
    metrics: Option<Arc<Metrics>>,
    places: Option<Places>,
}

/// What the endpoint needs to place a question and offer model names.
pub struct Places {
    pub parents: Arc<Parents>,
    /// Reads a channel's parent from Discord where the interaction leaves a gap.
    pub delivery: Arc<Delivery>,
    pub model_names: ModelNames,
}

impl InteractionsEndpoint {
    pub fn new(verifier: Verifier, router: ActorRef<RouterMsg>) -> Self {
        Self {
            verifier,
            router,
            seen: ReplayGuard::new(MAX_CLOCK_SKEW_SECS),
            metrics: None,
            places: None,
        }
    }

    /// Learns where each question was asked (and offers `/zunda-model` its model names).
    pub fn with_places(mut self, places: Places) -> Self {
        self.places = Some(places);
        self
    }

    /// Counts the busy replies the endpoint gives itself (`zundamon_replies_total{kind="busy"}`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Answers one request that arrived at `received`: the status and the JSON body (or a short
    /// error text). Returns within [`BUDGET`] of `received` whatever the event actor does.
    pub async fn handle(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        received: Instant,
    ) -> (StatusCode, Value) {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) = (
            header("x-signature-ed25519"),
            header("x-signature-timestamp"),
        ) else {
            return unauthorized();
        };
        if self.verifier.verify(signature, timestamp, body).is_err() {
            return unauthorized();
        }
        let Some(sent) = fresh(timestamp, unix_now()) else {
            return unauthorized();
        };
        let Ok(interaction) = serde_json::from_slice::<Value>(body) else {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": "body is not JSON"}),
            );
        };
        match interaction["type"].as_u64() {
            Some(1) => (StatusCode::OK, json!({"type": 1})),
            Some(2) => self.command(interaction, sent, received).await,
            Some(4) => self.autocomplete(interaction),
            other => {
                warn!(kind = ?other, "interactions endpoint: unsupported interaction type");
                (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported interaction type"}),
                )
            }
        }
    }

    /// An APPLICATION_COMMAND, read by serenity exactly as the gateway's INTERACTION_CREATE is.
    async fn command(
        &self,
        interaction: Value,
        sent: u64,
        received: Instant,
    ) -> (StatusCode, Value) {
        let command = match serde_json::from_value::<Interaction>(interaction) {
            Ok(Interaction::Command(command)) => command,
            Ok(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported interaction type"}),
                )
            }
            Err(err) => {
                // Discord always sends every field serenity requires; a body without one is not
                // from Discord (or from a fake that needs completing).
                warn!(error = %err, "interactions endpoint: a command interaction serenity cannot read (a required field is missing or malformed)");
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "malformed command interaction"}),
                );
            }
        };
        if let (Some(places), Some(channel)) = (&self.places, &command.channel) {
            places.parents.learn_partial(channel);
            // A thread's channel's category may be unknown here: looked up once, within the
            // budget (the question is judged by the places known if Discord is slow).
            let lookup = places.parents.complete(&places.delivery, channel.id.get());
            let _ = tokio::time::timeout_at(received + BUDGET / 2, lookup).await;
        }
        match command_use(command, received) {
            Ok(CommandUse::Question(mut event)) => {
                // Its channel was looked up here already, within the endpoint's budget.
                event.looked_up = self.places.is_some();
                self.question(event, sent, received).await
            }
            Ok(CommandUse::Control(event)) => self.control(event, sent, received).await,
            Err(name) => {
                warn!(name = %name, "interactions endpoint: a command without the fields of /zunda");
                (
                    StatusCode::BAD_REQUEST,
                    json!({"error": "not a /zunda command"}),
                )
            }
        }
    }

    /// `/zunda`: the event actor decides the first message (the wait reply, or a limit reply)
    /// within the budget.
    async fn question(
        &self,
        event: CommandEvent,
        sent: u64,
        received: Instant,
    ) -> (StatusCode, Value) {
        let interaction_id = event.interaction_id;
        if let Some(replayed) = self.replayed(interaction_id, sent) {
            return replayed;
        }
        let busy = ControlReply::Message {
            text: BUSY_REPLY.to_owned(),
            ephemeral: false,
        };
        match self
            .call_router(
                interaction_id,
                |reply| RouterMsg::HttpCommand(event, reply),
                received,
                busy,
            )
            .await
        {
            Ok(reply) => (StatusCode::OK, control_response(&reply)),
            Err(unavailable) => unavailable,
        }
    }

    /// An APPLICATION_COMMAND_AUTOCOMPLETE (the `model` option of `/zunda-model`): the model
    /// names that match what was typed.
    fn autocomplete(&self, interaction: Value) -> (StatusCode, Value) {
        let Ok(Interaction::Autocomplete(autocomplete)) =
            serde_json::from_value::<Interaction>(interaction)
        else {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": "malformed autocomplete interaction"}),
            );
        };
        let typed = autocomplete
            .data
            .autocomplete()
            .map(|option| option.value.to_owned())
            .unwrap_or_default();
        let names = self
            .places
            .as_ref()
            .map(|places| (places.model_names)())
            .unwrap_or_default();
        (
            StatusCode::OK,
            autocomplete_response(&autocomplete_choices(&names, &typed)),
        )
    }

    /// Asks the event actor for the response, waiting until [`BUDGET`] after `received`: `busy` if
    /// it did not answer by then, a 503 if it is gone. Dropping the call at the deadline drops its
    /// reply port: the event actor then sees the request gone and starts nothing (Discord already
    /// has the busy reply).
    async fn call_router<T: Send + 'static>(
        &self,
        interaction_id: u64,
        message: impl FnOnce(ractor::RpcReplyPort<T>) -> RouterMsg,
        received: Instant,
        busy: T,
    ) -> Result<T, (StatusCode, Value)> {
        let call = self.router.call(message, None);
        match tokio::time::timeout_at(received + BUDGET, call).await {
            Ok(Ok(ractor::rpc::CallResult::Success(reply))) => Ok(reply),
            Err(_) => {
                warn!(
                    interaction_id,
                    budget_ms = BUDGET.as_millis() as u64,
                    "interactions endpoint: the event actor did not take the question in time"
                );
                if let Some(metrics) = &self.metrics {
                    metrics.reply("busy");
                }
                Ok(busy)
            }
            Ok(_) => {
                error!("interactions endpoint: the event actor did not answer");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "unavailable"}),
                ))
            }
        }
    }

    /// The 409 for a signed command seen before, or `None` the first time.
    fn replayed(&self, interaction_id: u64, sent: u64) -> Option<(StatusCode, Value)> {
        if self.seen.first_use(interaction_id, sent, unix_now()) {
            return None;
        }
        warn!(
            interaction_id,
            "interactions endpoint: a replayed command, not answered again"
        );
        Some((
            StatusCode::CONFLICT,
            json!({"error": "interaction already received"}),
        ))
    }

    /// `/zunda-reset` or `/zunda-memory`: the event actor decides the response (a deferral, or
    /// the refusal) within the budget and edits the answer in afterwards.
    async fn control(
        &self,
        event: ControlEvent,
        sent: u64,
        received: Instant,
    ) -> (StatusCode, Value) {
        if let Some(replayed) = self.replayed(event.interaction_id, sent) {
            return replayed;
        }
        let busy = ControlReply::Message {
            text: BUSY_REPLY.to_owned(),
            ephemeral: true,
        };
        let interaction_id = event.interaction_id;
        let reply = match self
            .call_router(
                interaction_id,
                |reply| RouterMsg::HttpControl(event, reply),
                received,
                busy,
            )
            .await
        {
            Ok(reply) => reply,
            Err(unavailable) => return unavailable,
        };
        (StatusCode::OK, control_response(&reply))
    }
}

/// The interaction response for a channel memory command's reply (flag 64: only the asker sees it).
fn control_response(reply: &ControlReply) -> Value {
    let flags = |ephemeral: bool| if ephemeral { 64 } else { 0 };
    match reply {
        ControlReply::Defer { ephemeral } => {
            json!({"type": 5, "data": {"flags": flags(*ephemeral), "allowed_mentions": {"parse": []}}})
        }
        ControlReply::Message { text, ephemeral } => json!({"type": 4, "data": {
            "content": text, "flags": flags(*ephemeral), "allowed_mentions": {"parse": []}}}),
    }
}

fn unauthorized() -> (StatusCode, Value) {
    (
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid request signature"}),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The request's timestamp (Unix seconds) when it is within the accepted window around `now`.
fn fresh(timestamp: &str, now: u64) -> Option<u64> {
    let sent = timestamp.trim().parse::<u64>().ok()?;
    (now.abs_diff(sent) <= MAX_CLOCK_SKEW_SECS).then_some(sent)
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
        let now = unix_now();
        assert_eq!(fresh(&now.to_string(), now), Some(now));
        assert_eq!(fresh(&(now - 300).to_string(), now), Some(now - 300));
        assert_eq!(fresh(&(now + 300).to_string(), now), Some(now + 300));
        assert!(fresh(&(now - 301).to_string(), now).is_none());
        assert!(fresh(&(now + 301).to_string(), now).is_none());
        assert!(fresh(&(now - 3600).to_string(), now).is_none());
        assert!(fresh("yesterday", now).is_none());
        assert!(fresh("", now).is_none());
    }
}
