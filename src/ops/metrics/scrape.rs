//! Rendering a scrape: the registry's text exposition followed by the actor system's counts,
//! encoded by a collector from the scrape's own [`StatsSnapshot`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use zundamon_actors::StatsSnapshot;

use super::Metrics;
use crate::ops::actor_metrics::{ColdLoads, EvictionsByReason};

impl Metrics {
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
