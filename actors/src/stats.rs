//! Counters the actor system keeps for the binary's metrics; read without messaging any actor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

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
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            live_channels: self.live_channels.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            spawned: self.spawned.load(Relaxed),
            answered: self.answered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            panics: self.panics.load(Relaxed),
            withdrawn: self.withdrawn.load(Relaxed),
        }
    }
}
