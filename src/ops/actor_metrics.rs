//! Metrics for tuning eviction: values set from the actor system's [`StatsSnapshot`] at scrape
//! time (evictions by reason, cold-load times) and the process's resident memory, read from
//! `/proc` when scraped. Each type encodes itself, so scraping never diffs against earlier values.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use zundamon_actors::{EvictReason, LoadTimesSnapshot, StatsSnapshot, COLD_LOAD_BUCKETS};

/// `zundamon_channel_evictions_total{reason}`: every reason is exported, zeros included.
#[derive(Clone, Debug, Default)]
pub struct EvictionsByReason(Arc<Mutex<[u64; EvictReason::ALL.len()]>>);

impl EvictionsByReason {
    pub fn set(&self, stats: &StatsSnapshot) {
        *self.0.lock().expect("evictions poisoned") = stats.evicted_by;
    }
}

impl EncodeMetric for EvictionsByReason {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = *self.0.lock().expect("evictions poisoned");
        for (reason, count) in EvictReason::ALL.iter().zip(counts) {
            let labels = [("reason", reason.label())];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// `zundamon_cold_load_seconds`: the actor system's load-time histogram as of the last scrape.
#[derive(Clone, Debug, Default)]
pub struct ColdLoads(Arc<Mutex<LoadTimesSnapshot>>);

impl ColdLoads {
    pub fn set(&self, loads: LoadTimesSnapshot) {
        *self.0.lock().expect("cold loads poisoned") = loads;
    }
}

impl EncodeMetric for ColdLoads {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let loads = *self.0.lock().expect("cold loads poisoned");
        let buckets: Vec<(f64, u64)> = COLD_LOAD_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(loads.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(loads.sum_secs(), loads.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `zundamon_process_resident_memory_bytes`, read when scraped.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResidentMemory;

impl EncodeMetric for ResidentMemory {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(resident_bytes().unwrap_or(0) as i64))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`); `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// The value of a `Name:   1234 kB` line of `/proc/self/status`, in KiB.
pub fn parse_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmrss_from_status_text() {
        let status = "Name:\tzundamon\nVmHWM:\t   20000 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(parse_kib(status, "VmRSS:"), Some(12345));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().unwrap() > 1024 * 1024);
        }
    }
}
