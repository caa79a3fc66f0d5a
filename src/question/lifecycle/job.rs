//! A question's task ([`Job`]: everything it holds until its answer is delivered, with the
//! [`PendingAnswer`] from its channel's queue) and this process's claims on interaction ids
//! ([`Active`], [`ActiveGuard`]), so a question is never started twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;
use zundamon_actors::{AskError, Started};

use super::TOKEN_LIFETIME;
use crate::discord::live::View;
use crate::discord::recent::RecentIds;
use crate::ops::shutdown::InFlightGuard;
use crate::question::admission::Permit;
use crate::store::{Fence, PendingQuestion};

/// Remembered interaction ids beyond which finished ones are swept.
const SWEEP_ACTIVE_AT: usize = 4096;

/// A question on its way through its channel's queue.
pub type PendingAnswer = Pin<Box<dyn Future<Output = Result<String, AskError>> + Send>>;

/// The interaction ids this process is handling or has handled within a token's lifetime, so a
/// resumed or replayed question (a fleet scan that read a row just before it was deleted, events
/// re-sent after a RESUME) is not started twice.
#[derive(Clone, Default)]
pub struct Active(Arc<Mutex<RecentIds<Instant>>>);

/// Marks its interaction id finished in [`Active`] when dropped (or forgets it, after
/// [`release`](ActiveGuard::release)).
pub struct ActiveGuard {
    active: Active,
    id: u64,
    release: bool,
}

impl Active {
    /// Marks `id` as in hand; `None` if it already was.
    pub fn claim(&self, id: u64) -> Option<ActiveGuard> {
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.len() >= SWEEP_ACTIVE_AT {
            // Finished ones older than a token cannot come back usefully.
            ids.forget_expired(Instant::now());
        }
        if !ids.hold(id) {
            return None;
        }
        Some(ActiveGuard {
            active: self.clone(),
            id,
            release: false,
        })
    }
}

impl ActiveGuard {
    /// Forgets the id when dropped instead of remembering it as finished: the question is left
    /// to be resumed later (by this process too).
    pub fn release(&mut self) {
        self.release = true;
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut ids = self.active.0.lock().unwrap_or_else(PoisonError::into_inner);
        if self.release {
            ids.forget(self.id);
        } else {
            ids.remember_until(self.id, Instant::now() + TOKEN_LIFETIME);
        }
    }
}

/// Everything a question's task holds until its answer is delivered.
pub struct Job {
    pub question: PendingQuestion,
    /// When this process received it (or resumed it), for latency metrics.
    pub received: Instant,
    /// The last moment the answer can be delivered (the token's life, with a margin).
    pub deliver_by: Instant,
    pub answer: PendingAnswer,
    /// Set when the channel actor starts answering: the service time excludes the wait.
    pub started: Started,
    pub permit: Option<Permit>,
    /// The fence this process holds the question's row with; `None` when it could not be
    /// recorded (answered without the crash-safe record, unfenced).
    pub fence: Option<Fence>,
    /// Leave the row in the pending table when the question is withdrawn (another process won
    /// the acknowledgement and takes the row over).
    pub keep_row: bool,
    /// The live view following the answer as it streams, if streaming.
    pub live: Option<View>,
    pub active: ActiveGuard,
    pub in_flight: InFlightGuard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_in_hand_or_finished_is_not_claimed_again() {
        let active = Active::default();
        let guard = active.claim(1).expect("first claim");
        assert!(active.claim(1).is_none(), "in hand");
        drop(guard);
        assert!(
            active.claim(1).is_none(),
            "finished within a token's lifetime"
        );
    }

    #[test]
    fn a_released_id_can_be_claimed_again() {
        let active = Active::default();
        let mut guard = active.claim(1).expect("first claim");
        guard.release();
        assert!(active.claim(1).is_none(), "still in hand until dropped");
        drop(guard);
        assert!(active.claim(1).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn finished_ids_are_swept_after_a_token_lifetime_but_held_ones_stay() {
        let active = Active::default();
        let held = active.claim(0).expect("claim");
        for id in 1..SWEEP_ACTIVE_AT as u64 {
            drop(active.claim(id).expect("claim"));
        }
        tokio::time::advance(TOKEN_LIFETIME).await;
        // The claim that finds the set full sweeps the finished ones first.
        drop(active.claim(SWEEP_ACTIVE_AT as u64).expect("claim"));
        assert!(active.claim(1).is_some(), "swept after a token's lifetime");
        assert!(active.claim(0).is_none(), "held ids never expire");
        assert!(active.claim(SWEEP_ACTIVE_AT as u64).is_none());
        drop(held);
    }
}
