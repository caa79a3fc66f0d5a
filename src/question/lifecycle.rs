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

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};
use zundamon_actors::{AskError, Channels, GateKeeper, Started};

use super::admission::Permit;
use crate::discord::deliver::{Delivery, DeliveryError};
use crate::discord::follow_ups::Origin;
use crate::discord::live::{FollowUpLog, Shown, View};
use crate::discord::recent::RecentIds;
use crate::discord::split::split_message;
use crate::discord::{bound_reply, quote_answer, ERROR_REPLY, MESSAGE_LIMIT};
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::InFlightGuard;
use crate::store::{Fence, PendingQuestion, PendingStore, Recorded, STORE_BUDGET};

/// Interaction tokens live 15 minutes; stop using one a little before.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60 - 30);
/// How long a pending-table write may hold up an acknowledgement. Past it the question is
/// answered anyway (unprotected against a crash, and logged): a slow disk must not make Discord
/// drop the interaction.
const RECORD_BUDGET: Duration = Duration::from_millis(1000);
/// Remembered interaction ids beyond which finished ones are swept.
const SWEEP_ACTIVE_AT: usize = 4096;
/// How long a live view may take to stop by itself after the answer is complete (one write in
/// flight) before it is aborted: the final delivery starts only once the view has ended.
const LIVE_STOP_GRACE: Duration = Duration::from_secs(2);

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

/// Whether this process still holds a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    Held,
    /// Another process took it over (or it was finished): this process must not write for it.
    Lost,
    /// The store did not say: write nothing now and leave the question to be resumed.
    Unknown,
}

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

    /// Whether this process still holds the question (see [`Holding`]); a question lost to
    /// another process is [`fenced`](Self::fenced).
    async fn holding(&self, question: &PendingQuestion, fence: Option<Fence>) -> Holding {
        let Some(fence) = fence else {
            return Holding::Held; // never recorded: nobody else can hold it
        };
        let check = self.store.holds(question.interaction_id, fence);
        match tokio::time::timeout(STORE_BUDGET, check).await {
            Ok(Ok(true)) => Holding::Held,
            Ok(Ok(false)) => {
                self.fenced(question);
                Holding::Lost
            }
            Ok(Err(err)) => {
                warn!(
                    "cannot check the question is still this process's, leaving it pending: {err}"
                );
                Holding::Unknown
            }
            Err(_) => {
                warn!("cannot check the question is still this process's, leaving it pending: the store took too long");
                Holding::Unknown
            }
        }
    }

    /// Another process took the question over while this one was answering it (this process
    /// froze, or was cut off from the store, past its heartbeat or lease): drop the answer, and
    /// the channel's actor, whose window may be stale now.
    pub fn fenced(&self, question: &PendingQuestion) {
        warn!(
            channel_id = question.channel_id,
            "the question belongs to another process now: dropping this answer"
        );
        self.metrics.fleet_fenced();
        self.channels.discard(question.channel_id);
    }

    /// Waits for the answer, delivers it and forgets the question. Questions that were withdrawn
    /// are forgotten without a delivery.
    pub async fn finish(&self, mut job: Job) {
        let result = (&mut job.answer).await;
        let took = job.received.elapsed();
        if let (Some(permit), Some(started)) = (&job.permit, job.started.get()) {
            // Service time, not time in the queue: the expiry estimate multiplies it by the
            // questions ahead.
            if result.is_ok() {
                permit.answered_in(started.elapsed());
            }
        }
        // The queue place is free as soon as the channel is done with the question.
        drop(job.permit.take());
        let (kind, content) = match result {
            Ok(answer) => (
                "answer",
                bound_reply(&quote_answer(&job.question.question, &answer)),
            ),
            Err(AskError::Withdrawn(_)) => {
                // Counted where the acknowledgement was refused.
                if !job.keep_row {
                    self.forget(&job.question, job.fence).await;
                }
                return;
            }
            Err(AskError::Expired(_)) => {
                warn!("the token expired while the question waited: withdrawn");
                self.metrics.withdrawn("expired");
                self.forget(&job.question, job.fence).await;
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
        // The answerer has finished, which tells the view to stop; nothing of it is sent once
        // `stop` returns, so no live edit can land after the final messages.
        let viewed = match job.live.take() {
            Some(view) => Some(view.stop(LIVE_STOP_GRACE).await),
            None => None,
        };
        // Not streamed, or resumed: the follow-ups an earlier process posted, if any.
        let mut shown = viewed.unwrap_or_else(|| {
            Shown::new(
                Some(self.follow_up_log(job.question.interaction_id, job.fence)),
                job.question.follow_ups.clone(),
            )
        });
        shown.set_origin(Origin {
            interaction_id: job.question.interaction_id,
            channel_id: job.question.channel_id,
        });
        if shown.edits > 0 {
            self.metrics.observe_live_edits(shown.edits);
        }
        match self
            .deliver(&job.question, job.fence, job.deliver_by, &mut shown, &parts)
            .await
        {
            Ok(Holding::Held) => {
                self.metrics.reply(kind);
                let total_ms = job.received.elapsed().as_millis() as u64;
                if kind == "error" {
                    info!(parts = parts.len(), total_ms, "error reply delivered");
                } else {
                    info!(parts = parts.len(), total_ms, "answer delivered");
                }
                if !self.forget(&job.question, job.fence).await {
                    // Taken over between the last check and the last Discord call.
                    self.fenced(&job.question);
                }
            }
            Ok(Holding::Lost) => {}
            Ok(Holding::Unknown) => {
                // Left in the pending table, and not remembered as handled: this process (or
                // another, if this one's heartbeat lapses) resumes it when the store answers.
                job.active.release();
            }
            Err(err) if err.is_final() => {
                self.metrics.reply("undelivered");
                error!("cannot deliver the answer, giving up: {err}");
                self.forget(&job.question, job.fence).await;
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
    /// the pending table. Before each part it checks that this process still holds the question
    /// and stops (delivering nothing more) when it does not.
    async fn deliver(
        &self,
        question: &PendingQuestion,
        fence: Option<Fence>,
        deliver_by: Instant,
        shown: &mut Shown,
        parts: &[String],
    ) -> Result<Holding, DeliveryError> {
        let start = usize::try_from(question.delivered_parts).unwrap_or(usize::MAX);
        let token = question.token.expose();
        for (index, part) in parts.iter().enumerate().skip(start) {
            let holding = self.holding(question, fence).await;
            if holding != Holding::Held {
                return Ok(holding);
            }
            shown
                .finish_part(&self.delivery, token, index, part, deliver_by)
                .await?;
            // Re-editing the original message is harmless; a follow-up posted twice is not.
            if let (true, Some(fence)) = (parts.len() > 1, fence) {
                let noted =
                    self.store
                        .delivered_parts(question.interaction_id, (index + 1) as u32, fence);
                match tokio::time::timeout(STORE_BUDGET, noted).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        self.fenced(question);
                        return Ok(Holding::Lost);
                    }
                    Ok(Err(err)) => warn!("cannot note a delivered part: {err}"),
                    Err(_) => warn!("cannot note a delivered part: timed out"),
                }
            }
        }
        let holding = self.holding(question, fence).await;
        if holding != Holding::Held {
            return Ok(holding);
        }
        shown
            .finish_extras(&self.delivery, token, parts.len(), deliver_by)
            .await?;
        Ok(Holding::Held)
    }
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
