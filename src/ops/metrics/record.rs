//! Recording into the [`Metrics`]: one method per event (HTTP connections, the question flow,
//! model and search requests, replies, the fleet, reloads), and the [`UnknownFollowUps`] counter
//! shared with the delivery client.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Metrics, Outcome};

/// Counts what became of follow-up posts whose outcome was unknown (Discord's answer lost or a
/// server error): `found` (a look found it posted), `resent` (a look proved it missing, so it was
/// posted once more), `given_up` (no way to tell; not posted again, so it may be missing).
/// Shared with the delivery client; a default one counts into no registry.
#[derive(Clone, Default)]
pub struct UnknownFollowUps(pub(super) Family<Outcome, Counter>);

impl UnknownFollowUps {
    /// The outcomes, all exported from the start.
    pub const OUTCOMES: [&'static str; 3] = ["found", "resent", "given_up"];

    pub fn count(&self, outcome: &str) {
        self.0
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }
}

impl std::fmt::Debug for UnknownFollowUps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnknownFollowUps")
    }
}

impl Metrics {
    /// One HTTP connection opened (`+1`) or closed (`-1`).
    pub fn http_connection(&self, delta: i64) {
        self.http_connections.inc_by(delta);
    }

    /// One HTTP connection shed at the cap; `reason` is `evicted` or `refused`.
    pub fn http_connection_shed(&self, reason: &str) {
        self.http_connections_shed
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    pub fn interaction_received(&self) {
        self.interactions.inc();
    }

    pub fn observe_ack_latency(&self, seconds: f64) {
        self.ack_latency.observe(seconds);
    }

    pub fn observe_answer(&self, seconds: f64) {
        self.answer_seconds.observe(seconds);
    }

    /// Counts one chat model request; `outcome` is e.g. `ok`, `retry`, `error`, `timeout`.
    pub fn llm_request(&self, outcome: &str) {
        self.llm_requests
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Adds the tokens one chat model response reported using, under the configured model
    /// entry `model`.
    pub fn model_tokens(&self, model: &str, prompt: u64, completion: u64) {
        for (kind, tokens) in [("prompt", prompt), ("completion", completion)] {
            self.model_tokens
                .get_or_create(&vec![
                    ("model".into(), model.into()),
                    ("kind".into(), kind.into()),
                ])
                .inc_by(tokens);
        }
    }

    /// Counts one web search; `outcome` is e.g. `ok`, `cached`, `rate_limited`, `error`.
    pub fn search_request(&self, outcome: &str) {
        self.search_requests
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Counts one reply to a user; `kind` is e.g. `answer`, `error`, `rate_limited`.
    pub fn reply(&self, kind: &str) {
        self.replies
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }

    /// Counts a question refused before the model by the admins' settings; `reason` is
    /// `access`, `token_cap` or `dms`.
    pub fn question_refused(&self, reason: &str) {
        self.refused
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// Counts a question withdrawn before the model was asked; `reason` is e.g.
    /// `already_acknowledged`, `unknown_interaction`, `expired`.
    pub fn withdrawn(&self, reason: &str) {
        self.withdrawn
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// Observes how many live edits one streamed answer took.
    pub fn observe_live_edits(&self, edits: u32) {
        self.live_edits.observe(f64::from(edits));
    }

    /// Counts a pending question found at startup: `resumed` or `expired` (dropped).
    pub fn resumed(&self, outcome: &str) {
        self.resumed
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Counts one answer that came with reasoning (think tags or a reasoning field).
    pub fn reasoning_answer(&self) {
        self.reasoning_answers.inc();
    }

    /// Counts one answer sent back to be rewritten in Zundamon's voice.
    pub fn persona_rewrite(&self) {
        self.persona_rewrites.inc();
    }

    /// Counts one answer cut at the token limit (`finish_reason: "length"`).
    pub fn answer_cut(&self) {
        self.answers_cut.inc();
    }

    /// Counts one request sent again with a shorter prompt after a context overflow.
    pub fn context_trim(&self) {
        self.context_trims.inc();
    }

    pub fn set_gateway_ready(&self, ready: bool) {
        self.gateway_ready.set(i64::from(ready));
    }

    /// HTTP fleet: this instance now holds `held` channels after a lease was `event` (`taken`,
    /// `released` or `lost`).
    pub fn fleet_channel(&self, event: &str, held: usize) {
        self.fleet_channel_changes
            .get_or_create(&vec![("event".into(), event.into())])
            .inc();
        self.fleet_channels_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// An answer was dropped: its question belongs to another process now.
    pub fn fleet_fenced(&self) {
        self.fleet_fenced.inc();
    }

    /// HTTP fleet: a lease or pending-table operation (`renew`, `scan`, `acquire`, `read`,
    /// `release`) failed.
    pub fn fleet_store_error(&self, op: &str) {
        self.fleet_store_errors
            .get_or_create(&vec![("op".into(), op.into())])
            .inc();
    }

    /// The counter of follow-ups with an unknown outcome, for the delivery client.
    pub fn follow_ups_unknown(&self) -> UnknownFollowUps {
        self.follow_ups_unknown.clone()
    }

    /// Counts one configuration reload; `outcome` is `ok` or `invalid`.
    pub fn config_reload(&self, outcome: &str) {
        self.config_reloads
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }
}
