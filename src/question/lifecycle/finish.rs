//! The end of a question's life: waiting for its answer, delivering it part by part (over what a
//! live view shows) while this process still holds it, and forgetting it.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};
use zundamon_actors::{AnswerError, AskError};

use super::fencing::Holding;
use super::{Job, Lifecycle};
use crate::discord::deliver::DeliveryError;
use crate::discord::follow_ups::Origin;
use crate::discord::live::Shown;
use crate::discord::{lay_out_answer, Reply, ERROR_REPLY};
use crate::store::{Fence, PendingQuestion, STORE_BUDGET};

/// How long a live view may take to stop by itself after the answer is complete (one write in
/// flight) before it is aborted: the final delivery starts only once the view has ended.
const LIVE_STOP_GRACE: Duration = Duration::from_secs(2);

impl Lifecycle {
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
        let (kind, reply) = match result {
            Ok(answer) => ("answer", lay_out_answer(&job.question.question, &answer)),
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
            // The user's to fix (an attachment that cannot be read): told so, in Zundamon's voice.
            Err(AskError::Failed(AnswerError {
                reason,
                reply: Some(reply),
            })) => {
                warn!("no answer: {reason}");
                ("attachment", Reply::text(&reply))
            }
            Err(err) => {
                match &err {
                    AskError::Failed(_) => warn!("no answer: {err}"),
                    _ => error!("no answer: {err}"),
                }
                ("error", Reply::text(ERROR_REPLY))
            }
        };
        self.metrics.observe_answer(took.as_secs_f64());
        let Reply { parts, file } = reply;
        let filed = file.is_some();
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
        if let Some(file) = file {
            // The last part, a follow-up: noted delivered like the others once posted, so a
            // resumed delivery never posts the file again (it edits the message it finds).
            shown.attach(parts.len() - 1, file);
        }
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
                    info!(parts = parts.len(), filed, total_ms, "answer delivered");
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
