//! The bot's Prometheus metrics: one registry per application, rendered on `GET /metrics`.
//! Counts owned by the actor system are encoded straight from the [`StatsSnapshot`] taken for the
//! scrape (a collector), never copied into shared counters, so concurrent scrapes cannot
//! double-count.
//!
//! This module owns the [`Metrics`] families and their registration; the recording methods live
//! in [`record`], and rendering a scrape (with the actor system's collector) in [`scrape`].
//!
//! [`StatsSnapshot`]: zundamon_actors::StatsSnapshot

mod record;
mod scrape;

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::ops::actor_metrics::ResidentMemory;

pub use record::UnknownFollowUps;

type Outcome = Vec<(String, String)>;

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
    model_tokens: Family<Outcome, Counter>,
    search_requests: Family<Outcome, Counter>,
    replies: Family<Outcome, Counter>,
    gateway_ready: Gauge<i64, AtomicI64>,
    withdrawn: Family<Outcome, Counter>,
    refused: Family<Outcome, Counter>,
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
            model_tokens: Family::default(),
            search_requests: Family::default(),
            replies: Family::default(),
            gateway_ready: Gauge::default(),
            withdrawn: Family::default(),
            refused: Family::default(),
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
            "zundamon_model_tokens",
            "Tokens the chat model servers reported using (usage), by configured model entry and \
             kind (prompt: sent to the model, completion: written by it); answers whose server \
             reports no usage are not counted",
            metrics.model_tokens.clone(),
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
            "zundamon_questions_refused",
            "Questions refused before the model by the admins' settings, by reason: access (the \
             access lists), token_cap (the user's daily token budget), dms (asked outside a guild \
             with [access] allow_dms off)",
            metrics.refused.clone(),
        );
        for reason in ["access", "token_cap", "dms"] {
            let _ = metrics
                .refused
                .get_or_create(&vec![("reason".into(), reason.into())]);
        }
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
        for kind in ["prompt", "completion"] {
            let _ = metrics.model_tokens.get_or_create(&vec![
                ("model".into(), "default".into()),
                ("kind".into(), kind.into()),
            ]);
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
}

#[cfg(test)]
mod tests {
    use zundamon_actors::StatsSnapshot;

    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let metrics = Metrics::new();
        metrics.interaction_received();
        metrics.observe_ack_latency(0.01);
        metrics.observe_answer(1.5);
        metrics.llm_request("ok");
        metrics.model_tokens("default", 120, 7);
        metrics.model_tokens("small", 5, 0);
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
            "# TYPE zundamon_model_tokens counter",
            "zundamon_model_tokens_total{model=\"default\",kind=\"prompt\"} 120",
            "zundamon_model_tokens_total{model=\"default\",kind=\"completion\"} 7",
            "zundamon_model_tokens_total{model=\"small\",kind=\"prompt\"} 5",
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
