//! The bot's Prometheus metrics: one registry per application, rendered on `GET /metrics`.
//! Counts owned by the actor system are copied from its [`StatsSnapshot`] at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use zundamon_actors::StatsSnapshot;

use crate::ops_metrics::{ColdLoads, EvictionsByReason, ResidentMemory};

type Outcome = Vec<(String, String)>;

/// Latency buckets from 5 ms to ~3 min.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0,
];

pub struct Metrics {
    registry: Registry,
    channel_actors: Gauge<i64, AtomicI64>,
    questions_in_flight: Gauge<i64, AtomicI64>,
    evictions: Counter<u64, AtomicU64>,
    interactions: Counter<u64, AtomicU64>,
    ack_latency: Histogram,
    answer_seconds: Histogram,
    llm_requests: Family<Outcome, Counter>,
    search_requests: Family<Outcome, Counter>,
    replies: Family<Outcome, Counter>,
    gateway_ready: Gauge<i64, AtomicI64>,
    evictions_by_reason: EvictionsByReason,
    cold_questions: Counter<u64, AtomicU64>,
    cold_loads: ColdLoads,
    config_reloads: Family<Outcome, Counter>,
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
            channel_actors: Gauge::default(),
            questions_in_flight: Gauge::default(),
            evictions: Counter::default(),
            interactions: Counter::default(),
            ack_latency: Histogram::new(LATENCY_BUCKETS),
            answer_seconds: Histogram::new(LATENCY_BUCKETS),
            llm_requests: Family::default(),
            search_requests: Family::default(),
            replies: Family::default(),
            gateway_ready: Gauge::default(),
            evictions_by_reason: EvictionsByReason::default(),
            cold_questions: Counter::default(),
            cold_loads: ColdLoads::default(),
            config_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "zundamon_channel_actors",
            "Live channel actors",
            metrics.channel_actors.clone(),
        );
        registry.register(
            "zundamon_questions_in_flight",
            "Questions accepted and not yet answered",
            metrics.questions_in_flight.clone(),
        );
        registry.register(
            "zundamon_evictions",
            "Channel actors evicted (idle timeout or cap)",
            metrics.evictions.clone(),
        );
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
            "zundamon_channel_evictions",
            "Channel actors evicted, by reason (idle, cap, reset)",
            metrics.evictions_by_reason.clone(),
        );
        registry.register(
            "zundamon_cold_questions",
            "Questions whose channel was not in memory and whose window was loaded from the store",
            metrics.cold_questions.clone(),
        );
        registry.register(
            "zundamon_cold_load_seconds",
            "Time a cold question spent loading its channel's window from the store",
            metrics.cold_loads.clone(),
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
        Self {
            registry,
            ..metrics
        }
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

    pub fn set_gateway_ready(&self, ready: bool) {
        self.gateway_ready.set(i64::from(ready));
    }

    /// Counts one configuration reload; `outcome` is `ok` or `invalid`.
    pub fn config_reload(&self, outcome: &str) {
        self.config_reloads
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// The Prometheus text exposition, with the actor system's counts as of now.
    pub fn render(&self, stats: &StatsSnapshot) -> String {
        self.channel_actors.set(stats.live_channels as i64);
        self.questions_in_flight.set(stats.in_flight as i64);
        let seen = self.evictions.get();
        if stats.evictions > seen {
            self.evictions.inc_by(stats.evictions - seen);
        }
        let seen = self.cold_questions.get();
        if stats.cold_questions > seen {
            self.cold_questions.inc_by(stats.cold_questions - seen);
        }
        self.evictions_by_reason.set(stats);
        self.cold_loads.set(stats.cold_load);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
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
            "zundamon_channel_evictions_total{reason=\"idle\"} 0",
            "zundamon_channel_evictions_total{reason=\"reset\"} 0",
            "zundamon_cold_questions_total 0",
            "zundamon_cold_load_seconds_count 0",
            "zundamon_process_resident_memory_bytes ",
            "zundamon_config_reloads_total{outcome=\"invalid\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        // Rendering again does not double-count evictions.
        assert!(metrics
            .render(&stats)
            .contains("zundamon_evictions_total 2"));
    }
}
