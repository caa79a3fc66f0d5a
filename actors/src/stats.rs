//! Counters the actor system keeps for the binary's metrics; read without messaging any actor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) live_channels: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) evictions: AtomicU64,
    pub(crate) spawned: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) withdrawn: AtomicU64,
    pub(crate) evicted_by: [AtomicU64; EvictReason::ALL.len()],
    pub(crate) cold_questions: AtomicU64,
    pub(crate) cold_load: LoadTimes,
}

/// Why a channel actor left memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// Idle for longer than the idle timeout.
    Idle,
    /// The least recently used idle actor, to stay within the channel cap.
    Cap,
    /// Its conversation was reset on request.
    Reset,
}

impl EvictReason {
    pub const ALL: [EvictReason; 3] = [EvictReason::Idle, EvictReason::Cap, EvictReason::Reset];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            EvictReason::Idle => "idle",
            EvictReason::Cap => "cap",
            EvictReason::Reset => "reset",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds, in seconds, of the cold-load histogram's buckets (a last `+Inf` bucket follows).
pub const COLD_LOAD_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A lock-free histogram of load times with [`COLD_LOAD_BUCKETS`].
#[derive(Debug, Default)]
pub(crate) struct LoadTimes {
    buckets: [AtomicU64; COLD_LOAD_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LoadTimes {
    pub(crate) fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = COLD_LOAD_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(COLD_LOAD_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(took.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    fn snapshot(&self) -> LoadTimesSnapshot {
        let mut buckets = [0; COLD_LOAD_BUCKETS.len() + 1];
        for (out, bucket) in buckets.iter_mut().zip(&self.buckets) {
            *out = bucket.load(Relaxed);
        }
        LoadTimesSnapshot {
            buckets,
            sum_nanos: self.sum_nanos.load(Relaxed),
        }
    }
}

/// The cold-load histogram at one moment: per-bucket (not cumulative) counts, the last one `+Inf`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadTimesSnapshot {
    pub buckets: [u64; COLD_LOAD_BUCKETS.len() + 1],
    pub sum_nanos: u64,
}

impl LoadTimesSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum_secs(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Channel actors alive now.
    pub live_channels: usize,
    /// Questions routed to a channel actor and not yet answered.
    pub in_flight: usize,
    /// Channel actors stopped for idleness or for the cap.
    pub evictions: u64,
    /// Channel actors spawned since start.
    pub spawned: u64,
    /// Questions answered.
    pub answered: u64,
    /// Questions that got an error reply (answerer error or panic).
    pub failed: u64,
    /// Answerer panics survived.
    pub panics: u64,
    /// Questions withdrawn before the model was asked (nobody would see the answer).
    pub withdrawn: u64,
    /// Evictions by reason, indexed like [`EvictReason::ALL`].
    pub evicted_by: [u64; EvictReason::ALL.len()],
    /// Questions that found their channel out of memory and loaded a stored window.
    pub cold_questions: u64,
    /// How long those loads took.
    pub cold_load: LoadTimesSnapshot,
}

impl StatsSnapshot {
    /// Evictions for one reason.
    pub fn evicted(&self, reason: EvictReason) -> u64 {
        self.evicted_by[reason.index()]
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut evicted_by = [0; EvictReason::ALL.len()];
        for (out, count) in evicted_by.iter_mut().zip(&self.evicted_by) {
            *out = count.load(Relaxed);
        }
        StatsSnapshot {
            live_channels: self.live_channels.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            spawned: self.spawned.load(Relaxed),
            answered: self.answered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            panics: self.panics.load(Relaxed),
            withdrawn: self.withdrawn.load(Relaxed),
            evicted_by,
            cold_questions: self.cold_questions.load(Relaxed),
            cold_load: self.cold_load.snapshot(),
        }
    }

    pub(crate) fn evicted(&self, reason: EvictReason) {
        self.evictions.fetch_add(1, Relaxed);
        self.evicted_by[reason.index()].fetch_add(1, Relaxed);
    }

    /// A window forgotten on request (`/zunda-reset`): counted under `reset`, though the actor
    /// itself stays.
    pub(crate) fn window_reset(&self) {
        self.evicted_by[EvictReason::Reset.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn cold_question(&self, load_took: Duration) {
        self.cold_questions.fetch_add(1, Relaxed);
        self.cold_load.observe(load_took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_times_fall_in_their_buckets() {
        let stats = Stats::default();
        stats.cold_question(Duration::from_micros(300));
        stats.cold_question(Duration::from_millis(2));
        stats.cold_question(Duration::from_secs(60));
        let snap = stats.snapshot();
        assert_eq!(snap.cold_questions, 3);
        assert_eq!(snap.cold_load.count(), 3);
        assert_eq!(snap.cold_load.buckets[0], 1); // ≤ 0.5 ms
        assert_eq!(snap.cold_load.buckets[2], 1); // ≤ 2.5 ms
        assert_eq!(snap.cold_load.buckets[COLD_LOAD_BUCKETS.len()], 1); // +Inf
        assert!((snap.cold_load.sum_secs() - 60.0023).abs() < 1e-6);
    }

    #[test]
    fn evictions_count_in_total_and_by_reason() {
        let stats = Stats::default();
        stats.evicted(EvictReason::Idle);
        stats.evicted(EvictReason::Cap);
        stats.evicted(EvictReason::Cap);
        let snap = stats.snapshot();
        assert_eq!(snap.evictions, 3);
        assert_eq!(snap.evicted(EvictReason::Idle), 1);
        assert_eq!(snap.evicted(EvictReason::Cap), 2);
        assert_eq!(snap.evicted(EvictReason::Reset), 0);
    }
}
