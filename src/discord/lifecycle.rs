//! One question's life, from acceptance to delivered answer, kept exactly once:
//!
//! 1. The event actor fixes the question's place in its channel's queue (with a closed gate) the
//!    moment the event arrives, so a channel's order is the gateway's order.
//! 2. The question is recorded in the pending table, then acknowledged. If Discord refuses the
//!    acknowledgement (10062 unknown interaction, 40060 already acknowledged by another process
//!    of the bot) the gate withdraws it: no model call, nothing enters the window. Otherwise the
//!    gate opens.
//! 3. The answer is delivered part by part (each delivered part is noted), and only then is the
//!    question removed from the pending table. A process that dies anywhere in between leaves the
//!    row to the next process, which resumes it ([`resume`]): a question already answered is
//!    replied to from the window, parts already delivered are skipped.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};
use zundamon_actors::{AskError, GateKeeper};

use super::admission::Permit;
use super::deliver::{Delivery, DeliveryError};
use super::live::{FollowUpLog, Shown};
use super::split::split_message;
use super::{bound_reply, quote_answer, ERROR_REPLY, MESSAGE_LIMIT};
use crate::metrics::Metrics;
use crate::shutdown::InFlightGuard;
use crate::store::{PendingQuestion, PendingStore};

/// Interaction tokens live 15 minutes; stop using one a little before.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60 - 30);
/// How long a pending-table write may hold up an acknowledgement. Past it the question is
/// answered anyway (unprotected against a crash, and logged): a slow disk must not make Discord
/// drop the interaction.
const RECORD_BUDGET: Duration = Duration::from_millis(1000);
/// Remembered interaction ids beyond which finished ones are swept.
const SWEEP_ACTIVE_AT: usize = 4096;
/// How long a live view may take to stop after the answer is complete (one edit in flight).
const LIVE_STOP_BUDGET: Duration = Duration::from_secs(30);
/// How long other pending-table writes may take before they are given up (and logged).
pub(super) const STORE_BUDGET: Duration = Duration::from_secs(5);

/// A question on its way through its channel's queue.
pub type PendingAnswer = Pin<Box<dyn Future<Output = Result<String, AskError>> + Send>>;

/// The interaction ids this process is handling or has handled within a token's lifetime, so a
/// resumed or replayed question (a fleet scan that read a row just before it was deleted, events
/// re-sent after a RESUME) is not started twice.
#[derive(Clone, Default)]
pub struct Active(Arc<Mutex<HashMap<u64, Option<Instant>>>>);

/// Removes its interaction id from [`Active`] when dropped.
pub struct ActiveGuard {
    active: Active,
    id: u64,
}

impl Active {
    /// Marks `id` as in hand; `None` if it already was.
    pub fn claim(&self, id: u64) -> Option<ActiveGuard> {
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.len() >= SWEEP_ACTIVE_AT {
            // Finished ones older than a token cannot come back usefully.
            ids.retain(|_, finished| finished.map_or(true, |at| at.elapsed() < TOKEN_LIFETIME));
        }
        if ids.contains_key(&id) {
            return None;
        }
        ids.insert(id, None);
        Some(ActiveGuard {
            active: self.clone(),
            id,
        })
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.active
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.id, Some(Instant::now()));
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
    pub permit: Option<Permit>,
    /// The live view following the answer as it streams, if streaming.
    pub live: Option<tokio::task::JoinHandle<Shown>>,
    pub _active: ActiveGuard,
    pub in_flight: InFlightGuard,
}

/// What the question tasks share.
#[derive(Clone)]
pub struct Lifecycle {
    pub delivery: Arc<Delivery>,
    pub store: Arc<dyn PendingStore>,
    pub metrics: Arc<Metrics>,
}

impl Lifecycle {
    /// Records the question in the pending table, within [`RECORD_BUDGET`].
    pub async fn record(&self, question: &PendingQuestion) {
        match tokio::time::timeout(RECORD_BUDGET, self.store.record(question)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!("answering without a crash-safe record of the question: {err}"),
            Err(_) => warn!(
                "answering without a crash-safe record of the question: the store took over {RECORD_BUDGET:?}"
            ),
        }
    }

    /// Where the follow-up messages of `interaction_id`'s answer are noted.
    pub fn follow_up_log(&self, interaction_id: u64) -> FollowUpLog {
        FollowUpLog {
            store: self.store.clone(),
            interaction_id,
        }
    }

    /// Forgets the question in the pending table.
    pub async fn forget(&self, interaction_id: u64) {
        match tokio::time::timeout(STORE_BUDGET, self.store.remove(interaction_id)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                warn!("cannot remove a finished question from the pending table: {err}")
            }
            Err(_) => warn!("cannot remove a finished question from the pending table: timed out"),
        }
    }

    /// Defers the interaction and decides the gate. Returns whether the question goes ahead.
    pub async fn acknowledge(
        &self,
        question: &PendingQuestion,
        received: Instant,
        keeper: GateKeeper,
    ) -> bool {
        match self
            .delivery
            .defer(question.interaction_id, question.token.expose())
            .await
        {
            Ok(()) => {
                let ack = received.elapsed();
                self.metrics.observe_ack_latency(ack.as_secs_f64());
                info!(ack_ms = ack.as_millis() as u64, "deferred");
                keeper.open();
                true
            }
            Err(err) => {
                let reason = err.refusal().unwrap_or("ack_failed");
                warn!(
                    reason,
                    "acknowledgement refused, withdrawing the question: {err}"
                );
                self.metrics.withdrawn(reason);
                keeper.withdraw(reason);
                false
            }
        }
    }

    /// Waits for the answer, delivers it and forgets the question. Questions that were withdrawn
    /// are forgotten without a delivery.
    pub async fn finish(&self, mut job: Job) {
        let result = (&mut job.answer).await;
        let took = job.received.elapsed();
        if let Some(permit) = &job.permit {
            if result.is_ok() {
                permit.answered_in(took);
            }
        }
        // The queue place is free as soon as the channel is done with the question.
        drop(job.permit.take());
        let interaction_id = job.question.interaction_id;
        let (kind, content) = match result {
            Ok(answer) => (
                "answer",
                bound_reply(&quote_answer(&job.question.question, &answer)),
            ),
            Err(AskError::Withdrawn(_)) => {
                // Counted where the acknowledgement was refused.
                self.forget(interaction_id).await;
                return;
            }
            Err(AskError::Expired(_)) => {
                warn!("the token expired while the question waited: withdrawn");
                self.metrics.withdrawn("expired");
                self.forget(interaction_id).await;
                return;
            }
            Err(AskError::Unavailable(why)) if job.in_flight.abandoned() => {
                // Shutting down past the grace period: the row stays for the next process.
                warn!(
                    "shutting down before the answer was ready ({why}): left for the next process"
                );
                return;
            }
            Err(err) => {
                match &err {
                    AskError::Failed(_) => warn!("no answer: {err}"),
                    _ => error!("no answer: {err}"),
                }
                ("error", ERROR_REPLY.to_owned())
            }
        };
        self.metrics.observe_answer(took.as_secs_f64());
        let parts = split_message(&content, MESSAGE_LIMIT);
        let viewed = match job.live.take() {
            // The answerer has finished, so the view stops after its current edit at most.
            Some(view) => match tokio::time::timeout(LIVE_STOP_BUDGET, view).await {
                Ok(Ok(shown)) => Some(shown),
                _ => {
                    warn!("the live view did not stop in time; delivering over it");
                    None
                }
            },
            None => None,
        };
        // Not streamed, or resumed: the follow-ups an earlier process posted, if any.
        let mut shown = viewed.unwrap_or_else(|| {
            Shown::new(
                Some(self.follow_up_log(interaction_id)),
                job.question.follow_ups.clone(),
            )
        });
        if shown.edits > 0 {
            self.metrics.observe_live_edits(shown.edits);
        }
        match self
            .deliver(&job.question, job.deliver_by, &mut shown, &parts)
            .await
        {
            Ok(()) => {
                self.metrics.reply(kind);
                let total_ms = job.received.elapsed().as_millis() as u64;
                if kind == "error" {
                    info!(parts = parts.len(), total_ms, "error reply delivered");
                } else {
                    info!(parts = parts.len(), total_ms, "answer delivered");
                }
                self.forget(interaction_id).await;
            }
            Err(err) if err.is_final() => {
                self.metrics.reply("undelivered");
                error!("cannot deliver the answer, giving up: {err}");
                self.forget(interaction_id).await;
            }
            Err(err) => {
                // Left in the pending table: the next process (or a restart) tries again while
                // the token lives.
                self.metrics.reply("undelivered");
                error!("cannot deliver the answer now, leaving it pending: {err}");
            }
        }
    }

    /// Delivers the parts not delivered yet (over what a live view shows), noting each one in
    /// the pending table.
    async fn deliver(
        &self,
        question: &PendingQuestion,
        deliver_by: Instant,
        shown: &mut Shown,
        parts: &[String],
    ) -> Result<(), DeliveryError> {
        let start = usize::try_from(question.delivered_parts).unwrap_or(usize::MAX);
        let token = question.token.expose();
        for (index, part) in parts.iter().enumerate().skip(start) {
            shown
                .finish_part(&self.delivery, token, index, part, deliver_by)
                .await?;
            // Re-editing the original message is harmless; a follow-up posted twice is not.
            if parts.len() > 1 {
                let noted = self
                    .store
                    .delivered_parts(question.interaction_id, (index + 1) as u32);
                if let Err(err) = tokio::time::timeout(STORE_BUDGET, noted)
                    .await
                    .unwrap_or_else(|_| Err(zundamon_actors::StoreError("timed out".into())))
                {
                    warn!("cannot note a delivered part: {err}");
                }
            }
        }
        shown
            .finish_extras(&self.delivery, token, parts.len(), deliver_by)
            .await
    }
}
