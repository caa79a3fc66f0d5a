//! Remembers the interaction ids the endpoint has accepted, so a captured signed request cannot
//! start a second answer. An id is kept only while a request carrying its timestamp would still
//! pass the freshness check; after that the signature check refuses the replay by itself. Only
//! requests with a valid signature are recorded, so the memory is bounded by what Discord sends
//! in one timestamp window.

use std::sync::Mutex;

use crate::discord::recent::RecentIds;

pub struct ReplayGuard {
    /// Seconds a timestamp is accepted on either side of now.
    window: u64,
    /// Accepted interaction ids, each until the first second (Unix) a request with its
    /// timestamp is refused.
    seen: Mutex<RecentIds<u64>>,
}

impl ReplayGuard {
    pub fn new(window: u64) -> Self {
        Self {
            window,
            seen: Mutex::default(),
        }
    }

    /// Records `id` (signed with timestamp `sent`) at `now`; false when it was already recorded.
    pub fn first_use(&self, id: u64, sent: u64, now: u64) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.forget_expired(now);
        if seen.contains(id) {
            return false;
        }
        // Accepted through `sent + window`, so forgotten from the second after.
        seen.remember_until(id, sent.saturating_add(self.window).saturating_add(1));
        true
    }

    /// How many ids are remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_accepted_once_within_the_window() {
        let guard = ReplayGuard::new(300);
        assert!(guard.first_use(1, 1_000, 1_000));
        assert!(!guard.first_use(1, 1_000, 1_001));
        // Still refused at the last second its timestamp is accepted.
        assert!(!guard.first_use(1, 1_000, 1_300));
        assert!(guard.first_use(2, 1_000, 1_300));
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let guard = ReplayGuard::new(300);
        for second in 0..10_000u64 {
            // Ten interactions a second, timestamps anywhere in the accepted window.
            for n in 0..10 {
                let id = second * 10 + n;
                let sent = (second + 1_000 + n * 60).saturating_sub(300);
                assert!(guard.first_use(id, sent, second + 1_000));
            }
        }
        // Only the ids whose timestamps are still accepted are kept: at most the window's worth
        // (2 × 300 s of timestamps at ten a second), not the 100 000 seen.
        assert!(guard.len() <= 10 * 601, "{} ids kept", guard.len());
        assert!(guard.len() > 0);
    }

    #[test]
    fn a_forgotten_id_is_one_whose_timestamp_is_refused_anyway() {
        let guard = ReplayGuard::new(300);
        assert!(guard.first_use(7, 1_000, 1_000));
        // At 1_301 a request signed at 1_000 fails the freshness check, so forgetting is safe.
        assert!(guard.first_use(8, 1_301, 1_301));
        assert_eq!(guard.len(), 1);
    }
}
