//! One question's life, from acceptance to delivered answer, kept exactly once:
//!
//! 1. The event actor fixes the question's place in its channel's queue (with a closed gate) the
//!    moment the event arrives, so a channel's order is the gateway's order.
//! 2. The question is recorded in the pending table as this process's (its owner is this
//!    process's instance id), then acknowledged. If Discord refuses the acknowledgement the gate
//!    withdraws it: no model call, nothing enters the window. An unknown interaction (10062)
//!    finishes the row; one already acknowledged (40060) by another process of the bot leaves it:
//!    the winner takes the row over ([`Lifecycle::settle`]), and should it die first, the row is
//!    still there for someone to resume. The winner opens the gate only once the row is its own.
//! 3. The answer is delivered part by part (each delivered part is noted), and only then is the
//!    question finished in the pending table (a tombstone that a late write cannot undo). Every
//!    write on the way checks that this process still holds the question with its fence: a
//!    process that froze past its heartbeat or lease, and whose questions another process took
//!    over meanwhile, drops its answer ([`Lifecycle::fenced`]). A process that dies anywhere in
//!    between leaves the row to the others, which take it once its heartbeat has expired: a
//!    question already answered is replied to from the window, parts already delivered are
//!    skipped.
//!
//! This file holds [`Lifecycle`] and its first steps (record, acknowledge, settle, forget); the
//! question's task and this process's claims on interaction ids are in [`job`], waiting for the
//! answer and delivering it in [`finish`], and the checks that this process still holds a
//! question in [`fencing`].

mod fencing;
mod finish;
mod job;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};
use zundamon_actors::{Channels, GateKeeper};

use crate::discord::deliver::Delivery;
use crate::discord::live::FollowUpLog;
use crate::ops::metrics::Metrics;
use crate::store::{Fence, PendingQuestion, PendingStore, Recorded, STORE_BUDGET};
pub use job::{Active, ActiveGuard, Job, PendingAnswer};

/// Interaction tokens live 15 minutes; stop using one a little before.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60 - 30);
/// How long a pending-table write may hold up an acknowledgement. Past it the question is
/// answered anyway (unprotected against a crash, and logged): a slow disk must not make Discord
/// drop the interaction.
const RECORD_BUDGET: Duration = Duration::from_millis(1000);

/// What the question tasks share.
#[derive(Clone)]
pub struct Lifecycle {
    pub delivery: Arc<Delivery>,
    pub store: Arc<dyn PendingStore>,
    pub metrics: Arc<Metrics>,
    /// For discarding a channel's actor when its questions were taken over.
    pub channels: Channels,
}

impl Lifecycle {
    /// Records the question in the pending table as this process's, within [`RECORD_BUDGET`].
    /// `None` if it could not be recorded (the question is answered anyway, unprotected).
    pub async fn record(&self, question: &PendingQuestion) -> Option<Recorded> {
        match tokio::time::timeout(RECORD_BUDGET, self.store.record(question)).await {
            Ok(Ok(recorded)) => Some(recorded),
            Ok(Err(err)) => {
                warn!("answering without a crash-safe record of the question: {err}");
                None
            }
            Err(_) => {
                warn!(
                    "answering without a crash-safe record of the question: the store took over {RECORD_BUDGET:?}"
                );
                None
            }
        }
    }

    /// Where the follow-up messages of `question`'s answer are noted.
    pub fn follow_up_log(&self, interaction_id: u64, fence: Option<Fence>) -> FollowUpLog {
        FollowUpLog {
            store: self.store.clone(),
            interaction_id,
            fence,
        }
    }

    /// Finishes the question in the pending table (a tombstone): with its fence only if this
    /// process still holds it. False if another process holds it.
    pub async fn forget(&self, question: &PendingQuestion, fence: Option<Fence>) -> bool {
        let finished = self.store.finish(question, fence);
        match tokio::time::timeout(STORE_BUDGET, finished).await {
            Ok(Ok(finished)) => finished,
            Ok(Err(err)) => {
                warn!("cannot finish a question in the pending table: {err}");
                true
            }
            Err(_) => {
                warn!("cannot finish a question in the pending table: timed out");
                true
            }
        }
    }

    /// Defers the interaction. `Err` carries the refusal's metric label.
    pub async fn acknowledge(
        &self,
        question: &PendingQuestion,
        received: Instant,
    ) -> Result<(), &'static str> {
        match self
            .delivery
            .defer(question.interaction_id, question.token.expose())
            .await
        {
            Ok(()) => {
                let ack = received.elapsed();
                self.metrics.observe_ack_latency(ack.as_secs_f64());
                info!(ack_ms = ack.as_millis() as u64, "deferred");
                Ok(())
            }
            Err(err) => {
                let reason = err.refusal().unwrap_or("ack_failed");
                warn!(
                    reason,
                    "acknowledgement refused, withdrawing the question: {err}"
                );
                Err(reason)
            }
        }
    }

    /// Decides a question's fate once it is recorded (or not) and acknowledged (or not), and
    /// sets the job's fence. Acknowledged: the row must be this process's before the gate opens,
    /// so if another process of the bot recorded it first (it got the same event) this one takes
    /// it over. Refused: the gate withdraws the question; its row is finished, except when
    /// another process won the acknowledgement (40060), which takes the row over (if it died
    /// first, this process resumes the row once its own heartbeat scan finds it unheld).
    /// True if the gate opened.
    pub async fn settle(
        &self,
        job: &mut Job,
        recorded: Option<Recorded>,
        acknowledged: Result<(), &'static str>,
        keeper: GateKeeper,
    ) -> bool {
        match acknowledged {
            Ok(()) => {
                job.fence = match recorded {
                    Some(Recorded::Mine(fence)) => Some(fence),
                    _ => {
                        let adopt = self.store.adopt(&job.question);
                        match tokio::time::timeout(RECORD_BUDGET, adopt).await {
                            Ok(Ok(Some(fence))) => Some(fence),
                            Ok(Ok(None)) => {
                                // Finished already: answered, or withdrawn, by whoever held it.
                                warn!("the question was finished elsewhere: withdrawing it");
                                self.metrics.withdrawn("already_acknowledged");
                                keeper.withdraw("finished elsewhere");
                                job.keep_row = true;
                                return false;
                            }
                            Ok(Err(err)) => {
                                warn!("answering without owning the question's record: {err}");
                                None
                            }
                            Err(_) => {
                                warn!("answering without owning the question's record: the store took too long");
                                None
                            }
                        }
                    }
                };
                keeper.open();
                true
            }
            Err(reason) => {
                self.metrics.withdrawn(reason);
                job.keep_row = reason == "already_acknowledged";
                if job.keep_row {
                    // Not remembered as handled: if the winner never takes the row, this
                    // process's scan resumes it.
                    job.active.release();
                }
                keeper.withdraw(reason);
                false
            }
        }
    }
}
