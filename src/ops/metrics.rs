//! The bot's Prometheus metrics: one registry per application, rendered on `GET /metrics`.
//! Counts owned by the actor system are encoded straight from the [`StatsSnapshot`] taken for the
//! scrape (a collector), never copied into shared counters, so concurrent scrapes cannot
//! double-count.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use zundamon_actors::StatsSnapshot;

use crate::ops::actor_metrics::{ColdLoads, EvictionsByReason, ResidentMemory};

type Outcome = Vec<(String, String)>;

/// Counts what became of follow-up posts whose outcome was unknown (Discord's answer lost or a
/// server error): `found` (a look found it posted), `resent` (a look proved it missing, so it was
/// posted once more), `given_up` (no way to tell; not posted again, so it may be missing).
/// Shared with the delivery client; a default one counts into no registry.
#[derive(Clone, Default)]
pub struct UnknownFollowUps(Family<Outcome, Counter>);

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

/// Latency buckets from 5 ms to ~3 min.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0,
];

pub struct Metrics {
    registry: Registry,
    interactions: Counter<u64, AtomicU64>,
    ack_latency: Histogram,
    answer_seconds: Histogram,
    llm_requests: Family<Outcome, Counter>,
    search_requests: Family<Outcome, Counter>,
    replies: Family<Outcome, Counter>,
    gateway_ready: Gauge<i64, AtomicI64>,
    withdrawn: Family<Outcome, Counter>,
    resumed: Family<Outcome, Counter>,
    live_edits: Histogram,
    reasoning_answers: Counter<u64, AtomicU64>,
    persona_rewrites: Counter<u64, AtomicU64>,
    answers_cut: Counter<u64, AtomicU64>,
    context_trims: Counter<u64, AtomicU64>,
    http_connections: Gauge<i64, AtomicI64>,
    http_connections_shed: Family<Outcome, Counter>,
    config_reloads: Family<Outcome, Counter>,
    fleet_channels_held: Gauge<i64, AtomicI64>,
    fleet_channel_changes: Family<Outcome, Counter>,
    fleet_store_errors: Family<Outcome, Counter>,
    fleet_fenced: Counter<u64, AtomicU64>,
    follow_ups_unknown: UnknownFollowUps,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            interactions: Counter::default(),
            ack_latency: Histogram::new(LATENCY_BUCKETS),
            answer_seconds: Histogram::new(LATENCY_BUCKETS),
            llm_requests: Family::default(),
            search_requests: Family::default(),
            replies: Family::default(),
            gateway_ready: Gauge::default(),
            withdrawn: Family::default(),
            resumed: Family::default(),
            live_edits: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            reasoning_answers: Counter::default(),
            persona_rewrites: Counter::default(),
            answers_cut: Counter::default(),
            context_trims: Counter::default(),
            http_connections: Gauge::default(),
            http_connections_shed: Family::default(),
            config_reloads: Family::default(),
            fleet_channels_held: Gauge::default(),
            fleet_channel_changes: Family::default(),
            fleet_store_errors: Family::default(),
            fleet_fenced: Counter::default(),
            follow_ups_unknown: UnknownFollowUps::default(),
            registry: Registry::default(),
        };
        registry.register(
            "zundamon_interactions",
            "/zunda interactions received",
            metrics.interactions.clone(),
        );
        registry.register(
            "zundamon_ack_latency_seconds",
            "Time from receiving an interaction to sending its deferred acknowledgement",
            metrics.ack_latency.clone(),
        );
        registry.register(
            "zundamon_answer_seconds",
            "Time from receiving a question to its answer being ready",
            metrics.answer_seconds.clone(),
        );
        registry.register(
            "zundamon_llm_requests",
            "Chat model requests by outcome",
            metrics.llm_requests.clone(),
        );
        registry.register(
            "zundamon_search_requests",
            "Web searches by outcome",
            metrics.search_requests.clone(),
        );
        registry.register(
            "zundamon_replies",
            "Replies sent to users by kind",
            metrics.replies.clone(),
        );
        registry.register(
            "zundamon_gateway_ready",
            "1 while the Discord gateway session is ready",
            metrics.gateway_ready.clone(),
        );
        registry.register(
            "zundamon_questions_withdrawn",
            "Questions withdrawn before the model was asked, because nobody would see the answer, by reason",
            metrics.withdrawn.clone(),
        );
        registry.register(
            "zundamon_pending_resumed",
            "Pending questions found at startup (left by a process that stopped), by outcome",
            metrics.resumed.clone(),
        );
        registry.register(
            "zundamon_stream_edits",
            "Edits of a streamed answer's messages before its final delivery, per answer",
            metrics.live_edits.clone(),
        );
        for reason in [
            "unknown_interaction",
            "already_acknowledged",
            "ack_failed",
            "expired",
        ] {
            let _ = metrics
                .withdrawn
                .get_or_create(&vec![("reason".into(), reason.into())]);
        }
        for outcome in ["resumed", "expired"] {
            let _ = metrics
                .resumed
                .get_or_create(&vec![("outcome".into(), outcome.into())]);
        }
        registry.register(
            "zundamon_reasoning_answers",
            "Answers whose model response contained reasoning (hidden from users)",
            metrics.reasoning_answers.clone(),
        );
        registry.register(
            "zundamon_persona_rewrites",
            "Answers without Zundamon's voice that were sent back once to be rewritten",
            metrics.persona_rewrites.clone(),
        );
        registry.register(
            "zundamon_answers_cut",
            "Answers the model stopped at the token limit (ZUNDA_MAX_ANSWER_TOKENS or its context); \
             delivered with a note that they were cut",
            metrics.answers_cut.clone(),
        );
        registry.register(
            "zundamon_context_trims",
            "Model requests sent again shorter (oldest window exchanges, then older tool results \
             left out) because the prompt did not fit the model's context",
            metrics.context_trims.clone(),
        );
        registry.register(
            "zundamon_http_connections",
            "Open HTTP connections counted against the cap (one closed to make room leaves at once)",
            metrics.http_connections.clone(),
        );
        registry.register(
            "zundamon_http_connections_shed",
            "HTTP connections closed to stay under the connection cap (evicted: an idle one made \
             room; refused: every connection was busy)",
            metrics.http_connections_shed.clone(),
        );
        registry.register(
            "zundamon_process_resident_memory_bytes",
            "Resident memory of the process (VmRSS)",
            ResidentMemory,
        );
        registry.register(
            "zundamon_config_reloads",
            "Configuration reloads (SIGHUP) by outcome",
            metrics.config_reloads.clone(),
        );
        registry.register(
            "zundamon_fleet_channels_held",
            "HTTP fleet: channels whose lease this instance holds (it answers their questions)",
            metrics.fleet_channels_held.clone(),
        );
        registry.register(
            "zundamon_fleet_channel_changes",
            "HTTP fleet: channel leases taken, released when idle, or lost (not renewed in time)",
            metrics.fleet_channel_changes.clone(),
        );
        registry.register(
            "zundamon_fleet_fenced",
            "Answers dropped because their question had been taken over by another process (a \
             fleet lease or a heartbeat that lapsed while this process was frozen or cut off)",
            metrics.fleet_fenced.clone(),
        );
        registry.register(
            "zundamon_fleet_store_errors",
            "HTTP fleet: failed lease or pending-table operations, by operation",
            metrics.fleet_store_errors.clone(),
        );
        registry.register(
            "zundamon_followups_unknown",
            "Follow-up messages whose post had an unknown outcome (answer lost or a server error), \
             by what became of them: found (it was posted), resent (proved missing, posted once \
             more), given_up (could not tell; not posted again, so it may be missing)",
            metrics.follow_ups_unknown.0.clone(),
        );
        for outcome in UnknownFollowUps::OUTCOMES {
            let _ = metrics
                .follow_ups_unknown
                .0
                .get_or_create(&vec![("outcome".into(), outcome.into())]);
        }
        for event in ["taken", "released", "lost"] {
            let _ = metrics
                .fleet_channel_changes
                .get_or_create(&vec![("event".into(), event.into())]);
        }
        for op in ["renew", "scan", "acquire", "read", "release"] {
            let _ = metrics
                .fleet_store_errors
                .get_or_create(&vec![("op".into(), op.into())]);
        }
        for outcome in ["ok", "invalid"] {
            let _ = metrics
                .config_reloads
                .get_or_create(&vec![("outcome".into(), outcome.into())]);
        }
        // Every outcome is exported from the start, so dashboards and alerts see zeros rather
        // than missing series.
        for outcome in ["ok", "retry", "error", "timeout"] {
            let _ = metrics
                .llm_requests
                .get_or_create(&vec![("outcome".into(), outcome.into())]);
        }
        for outcome in ["ok", "cached", "rate_limited", "error", "backoff"] {
            let _ = metrics
                .search_requests
                .get_or_create(&vec![("outcome".into(), outcome.into())]);
        }
        for reason in ["evicted", "refused"] {
            let _ = metrics
                .http_connections_shed
                .get_or_create(&vec![("reason".into(), reason.into())]);
        }
        Self {
            registry,
            ..metrics
        }
    }

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

    /// The Prometheus text exposition, with the actor system's counts as of `stats`.
    ///
    /// Nothing shared is written: the actor counts are encoded from `stats` by a collector in a
    /// registry of this scrape's own, so any number of scrapes may run at once.
    pub fn render(&self, stats: &StatsSnapshot) -> String {
        let mut actors = Registry::default();
        actors.register_collector(Box::new(ActorStats(*stats)));
        let by_reason = EvictionsByReason::default();
        by_reason.set(stats);
        actors.register(
            "zundamon_channel_evictions",
            "Channel actors evicted, by reason (idle, cap, reset)",
            by_reason,
        );
        let cold_loads = ColdLoads::default();
        cold_loads.set(stats.cold_load);
        actors.register(
            "zundamon_cold_load_seconds",
            "Time a cold question spent loading its channel's window from the store",
            cold_loads,
        );
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &actors))
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }
}

/// The actor system's counts, encoded as they are in one snapshot.
#[derive(Debug)]
struct ActorStats(StatsSnapshot);

impl Collector for ActorStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        for (name, help, value) in [
            (
                "zundamon_channel_actors",
                "Live channel actors",
                stats.live_channels,
            ),
            (
                "zundamon_questions_in_flight",
                "Questions accepted and not yet answered",
                stats.in_flight,
            ),
        ] {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        for (name, help, value) in [
            (
                "zundamon_evictions",
                "Channel actors evicted (idle timeout or cap)",
                stats.evictions,
            ),
            (
                "zundamon_cold_questions",
                "Questions whose channel was not in memory and whose window was loaded from the store",
                stats.cold_questions,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let metrics = Metrics::new();
        metrics.interaction_received();
        metrics.observe_ack_latency(0.01);
        metrics.observe_answer(1.5);
        metrics.llm_request("ok");
        metrics.search_request("rate_limited");
        metrics.reasoning_answer();
        let stats = StatsSnapshot {
            live_channels: 3,
            evictions: 2,
            ..StatsSnapshot::default()
        };
        let text = metrics.render(&stats);
        for needle in [
            "zundamon_channel_actors 3",
            "zundamon_interactions_total 1",
            "zundamon_ack_latency_seconds_bucket",
            "zundamon_answer_seconds_count 1",
            "zundamon_llm_requests_total{outcome=\"ok\"} 1",
            "zundamon_search_requests_total{outcome=\"rate_limited\"} 1",
            "zundamon_evictions_total 2",
            "zundamon_reasoning_answers_total 1",
            "zundamon_channel_evictions_total{reason=\"idle\"} 0",
            "zundamon_channel_evictions_total{reason=\"reset\"} 0",
            "zundamon_cold_questions_total 0",
            "zundamon_cold_load_seconds_count 0",
            "zundamon_process_resident_memory_bytes ",
            "zundamon_config_reloads_total{outcome=\"invalid\"} 0",
            "zundamon_followups_unknown_total{outcome=\"given_up\"} 0",
            "zundamon_answers_cut_total 0",
            "zundamon_context_trims_total 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        // Rendering again does not double-count evictions.
        assert!(metrics
            .render(&stats)
            .contains("zundamon_evictions_total 2"));
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    /// Scrapes racing each other each see exactly the snapshot they were given: a collector
    /// encodes it, nothing is accumulated between scrapes.
    #[test]
    fn concurrent_scrapes_never_double_count() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let threads = 8;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let metrics = metrics.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    for round in 0..200u64 {
                        // The actor system's counter only grows; each scrape sees some value of it.
                        let evictions = round * 10 + thread as u64;
                        let stats = StatsSnapshot {
                            evictions,
                            live_channels: 5,
                            ..StatsSnapshot::default()
                        };
                        let text = metrics.render(&stats);
                        let expected = format!("zundamon_evictions_total {evictions}\n");
                        assert!(text.contains(&expected), "{expected} missing from\n{text}");
                        assert!(text.contains("zundamon_channel_actors 5\n"));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }
}
