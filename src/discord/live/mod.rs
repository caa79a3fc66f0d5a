//! The live view of an answer: while the channel actor answers, the interaction's message is
//! edited to show the status line (searching…) and then the answer as it streams.
//!
//! Each interaction is paced on its own (no shared timer): at most one edit per `every`, longer
//! when Discord's rate-limit headers say the message's bucket is nearly empty, and after a 429 it
//! waits what Discord says. Edits coalesce: the answerer publishes into a `watch` channel, which
//! holds only the latest state, so a slow edit never queues up stale ones. Text past 2000 UTF-16
//! units continues in follow-up messages, split as the final answer will be (at most five
//! messages; a longer final answer turns its fifth into a note carrying the whole answer as a
//! file, see [`super::lay_out_answer`]). When the answer is
//! complete, the view is stopped ([`View::stop`]) before the final delivery starts, and
//! [`Shown::finish_part`] brings the messages to exactly what the non-streaming path sends.
//!
//! A follow-up whose post had an unknown outcome is never posted again blindly: it is kept as
//! "unsure" and settled by the final delivery (see [`super::follow_ups`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};
use zundamon_actors::Live;

use super::deliver::{Delivery, DeliveryError};
use super::edits::LiveEdit;
use super::split::split_message;
use super::{bound_reply, quote_answer, MAX_REPLY_MESSAGES, MESSAGE_LIMIT};
use crate::config::Secret;
use shown::UNSURE;
pub use shown::{FollowUpLog, Shown};

mod finish;
mod shown;

/// What the message shows for `state`: the quoted question, then the status line or the text.
fn render(question: &str, state: &Live) -> Option<Vec<String>> {
    let shown = match state {
        Live::Waiting => return None,
        Live::Status(status) => status,
        Live::Text(text) if text.trim().is_empty() => return None,
        Live::Text(text) => text,
    };
    let mut parts = split_message(&bound_reply(&quote_answer(question, shown)), MESSAGE_LIMIT);
    // Never more messages than the final answer may have (an interaction's webhook takes only
    // so many follow-ups).
    parts.truncate(MAX_REPLY_MESSAGES);
    Some(parts)
}

/// A live view on its own task. What it shows is published after each write, so stopping it
/// mid-write never loses the follow-ups it posted.
pub struct View {
    task: JoinHandle<Shown>,
    latest: watch::Receiver<Shown>,
}

impl View {
    /// Starts following `states` on a task of its own, in the current span: until the answerer
    /// drops its sender, the messages are edited as described in the module docs.
    pub fn start(
        delivery: Arc<Delivery>,
        token: Secret,
        question: String,
        states: watch::Receiver<Live>,
        every: Duration,
        deliver_by: Instant,
        log: Option<FollowUpLog>,
    ) -> Self {
        let (publish, latest) = watch::channel(Shown::new(log.clone(), Vec::new()));
        let task = tokio::spawn(
            run(
                delivery, token, question, states, every, deliver_by, log, publish,
            )
            .in_current_span(),
        );
        Self { task, latest }
    }

    /// Stops the view once the answer is complete (the answerer dropping its sender tells it to):
    /// it ends by itself after its current write; one still writing after `grace` (a request
    /// stuck on a slow Discord) is aborted. Returns only when the task has ended, with what the
    /// messages show, so nothing of the view is sent after this.
    pub async fn stop(mut self, grace: Duration) -> Shown {
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(Ok(shown)) => return shown,
            Ok(Err(err)) => warn!("the live view ended abnormally: {err}"),
            Err(_) => {
                self.task.abort();
                let _ = (&mut self.task).await;
                warn!(
                    grace_ms = grace.as_millis() as u64,
                    "the live view was still writing after the answer was complete: stopped it"
                );
            }
        }
        let mut shown = self.latest.borrow().clone();
        if shown.interrupted() {
            shown.follow_ups_changed(None).await;
        }
        shown
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    delivery: Arc<Delivery>,
    token: Secret,
    question: String,
    mut states: watch::Receiver<Live>,
    every: Duration,
    deliver_by: Instant,
    log: Option<FollowUpLog>,
    latest: watch::Sender<Shown>,
) -> Shown {
    let mut shown = Shown::new(log, Vec::new());
    let mut next_edit = Instant::now();
    'states: loop {
        if states.changed().await.is_err() {
            break;
        }
        // Pace: wait for this interaction's next slot; newer states replace older ones meanwhile.
        while Instant::now() < next_edit {
            tokio::select! {
                () = tokio::time::sleep_until(next_edit) => {}
                changed = states.changed() => if changed.is_err() { break 'states },
            }
        }
        let state = states.borrow_and_update().clone();
        let Some(parts) = render(&question, &state) else {
            continue;
        };
        for (index, part) in parts.iter().enumerate() {
            if shown.content(index) == Some(part.as_str()) {
                continue;
            }
            // Fenced like every write of a holder: a process that froze and lost the question
            // to another shows nothing more of its answer.
            if let Some(log) = &shown.log {
                if !log.holds().await {
                    debug!("the question is no longer this process's: the live view stops");
                    break 'states;
                }
            }
            let token = token.expose();
            let outcome = if index == 0 || index <= shown.follow_ups.len() {
                let message = index.checked_sub(1).map(|i| shown.follow_ups[i]);
                if message == Some(UNSURE) {
                    // Its id is unknown: the final delivery settles it.
                    continue;
                }
                delivery.edit_live(token, message, part).await
            } else {
                shown.posting = Some(part.clone());
                latest.send_replace(shown.clone());
                let posted = delivery.create_follow_up(token, part, deliver_by).await;
                shown.posting = None;
                match posted {
                    Ok(id) => {
                        shown.follow_ups_changed(Some(id)).await;
                        LiveEdit::Done {
                            slow_down: Duration::ZERO,
                        }
                    }
                    Err(err @ DeliveryError::Unknown { .. }) => {
                        shown.unsure(part).await;
                        LiveEdit::Failed(err)
                    }
                    Err(err) => LiveEdit::Failed(err),
                }
            };
            shown.edits += 1;
            match outcome {
                LiveEdit::Done { slow_down } => {
                    shown.set(index, part);
                    next_edit = Instant::now() + every.max(slow_down);
                }
                LiveEdit::RateLimited(wait) => {
                    debug!(wait_ms = wait.as_millis() as u64, "live edit rate limited");
                    next_edit = Instant::now() + every.max(wait);
                    shown.hold_until = Some(Instant::now() + wait);
                    latest.send_replace(shown.clone());
                    // Mark the state unseen so the latest text goes out at the next slot.
                    states.mark_changed();
                    continue 'states;
                }
                LiveEdit::Failed(err) => {
                    warn!("a live edit failed (the final answer is still delivered): {err}");
                    next_edit = Instant::now() + every;
                }
            }
            latest.send_replace(shown.clone());
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_view_is_laid_out_like_the_final_answer() {
        assert_eq!(render("q", &Live::Waiting), None);
        assert_eq!(render("q", &Live::Text("  ".into())), None);
        assert_eq!(
            render("q", &Live::Status("🔍『ずんだ』を調べているのだ…".into())),
            Some(vec!["> q\n🔍『ずんだ』を調べているのだ…".to_owned()])
        );
        let long = "あ".repeat(2500);
        let parts = render("q", &Live::Text(long.clone())).unwrap();
        assert_eq!(
            parts,
            split_message(&quote_answer("q", &long), MESSAGE_LIMIT)
        );
        assert_eq!(parts.len(), 2);
    }
}
