//! The live view of an answer: while the channel actor answers, the interaction's message is
//! edited to show the status line (searching…) and then the answer as it streams.
//!
//! Each interaction is paced on its own (no shared timer): at most one edit per `every`, longer
//! when Discord's rate-limit headers say the message's bucket is nearly empty, and after a 429 it
//! waits what Discord says. Edits coalesce: the answerer publishes into a `watch` channel, which
//! holds only the latest state, so a slow edit never queues up stale ones. Text past 2000 UTF-16
//! units continues in follow-up messages, split as the final answer will be. When the answer is
//! complete, [`deliver_final`] brings the messages to exactly what the non-streaming path sends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};
use zundamon_actors::Live;

use super::deliver::{Delivery, DeliveryError};
use super::edits::LiveEdit;
use super::lifecycle::STORE_BUDGET;
use super::split::split_message;
use super::{bound_reply, quote_answer, MESSAGE_LIMIT};
use crate::config::Secret;
use crate::store::{Fence, PendingStore};

/// Where an answer's follow-up message ids are kept while it is pending, so that a process that
/// dies mid-answer leaves them to the next one (which edits them instead of posting them again).
#[derive(Clone)]
pub struct FollowUpLog {
    pub store: Arc<dyn PendingStore>,
    pub interaction_id: u64,
    /// The fence the question is held with (`None`: it was never recorded, nothing to note).
    pub fence: Option<Fence>,
}

impl std::fmt::Debug for FollowUpLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowUpLog")
            .field("interaction_id", &self.interaction_id)
            .finish_non_exhaustive()
    }
}

impl FollowUpLog {
    async fn note(&self, ids: &[u64]) {
        let Some(fence) = self.fence else {
            return;
        };
        let noted = self.store.follow_ups(self.interaction_id, ids, fence);
        match tokio::time::timeout(STORE_BUDGET, noted).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                warn!("cannot note the answer's follow-up messages: the question is no longer this process's")
            }
            Ok(Err(err)) => warn!("cannot note the answer's follow-up messages: {err}"),
            Err(_) => warn!("cannot note the answer's follow-up messages: the store took too long"),
        }
    }
}

/// The messages an interaction shows: index 0 is the original response, the others follow-ups.
#[derive(Debug, Default)]
pub struct Shown {
    /// Follow-up message ids, in order (message `i + 1`).
    follow_ups: Vec<u64>,
    /// The content each message shows now (empty while still "thinking…").
    contents: Vec<String>,
    /// Edits sent (for the metric and the logs).
    pub edits: u32,
    /// Discord asked (429) not to edit again before then.
    hold_until: Option<Instant>,
    /// Where the follow-up ids are noted (none: they live only here).
    log: Option<FollowUpLog>,
}

impl Shown {
    /// What an answer shows when its delivery (re)starts: the follow-ups a live view posted
    /// before (their content unknown, so each is edited to its final part), noted in `log`.
    pub fn new(log: Option<FollowUpLog>, follow_ups: Vec<u64>) -> Self {
        Self {
            follow_ups,
            log,
            ..Self::default()
        }
    }

    /// A follow-up was posted (`Some`) or deleted: note the list.
    async fn follow_ups_changed(&mut self, posted: Option<u64>) {
        if let Some(id) = posted {
            self.follow_ups.push(id);
        }
        if let Some(log) = &self.log {
            log.note(&self.follow_ups).await;
        }
    }

    fn content(&self, index: usize) -> Option<&str> {
        self.contents.get(index).map(String::as_str)
    }

    fn set(&mut self, index: usize, content: &str) {
        if self.contents.len() <= index {
            self.contents.resize(index + 1, String::new());
        }
        self.contents[index] = content.to_owned();
    }
}

/// What the message shows for `state`: the quoted question, then the status line or the text.
fn render(question: &str, state: &Live) -> Option<Vec<String>> {
    let shown = match state {
        Live::Waiting => return None,
        Live::Status(status) => status,
        Live::Text(text) if text.trim().is_empty() => return None,
        Live::Text(text) => text,
    };
    Some(split_message(
        &bound_reply(&quote_answer(question, shown)),
        MESSAGE_LIMIT,
    ))
}

/// Follows `states` until the answerer drops its sender, editing the messages as described in
/// the module docs. Returns what the messages show at the end.
pub async fn follow(
    delivery: Arc<Delivery>,
    token: Secret,
    question: String,
    mut states: watch::Receiver<Live>,
    every: Duration,
    deliver_by: Instant,
    log: Option<FollowUpLog>,
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
            let token = token.expose();
            let outcome = if index == 0 || index <= shown.follow_ups.len() {
                let message = index.checked_sub(1).map(|i| shown.follow_ups[i]);
                delivery.edit_live(token, message, part).await
            } else {
                match delivery.create_follow_up(token, part, deliver_by).await {
                    Ok(id) => {
                        shown.follow_ups_changed(Some(id)).await;
                        LiveEdit::Done {
                            slow_down: Duration::ZERO,
                        }
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
                    // Mark the state unseen so the latest text goes out at the next slot.
                    states.mark_changed();
                    continue 'states;
                }
                LiveEdit::Failed(err) => {
                    warn!("a live edit failed (the final answer is still delivered): {err}");
                    next_edit = Instant::now() + every;
                }
            }
        }
    }
    shown
}

impl Shown {
    /// Brings message `index` to `part` (the final answer's part, as the non-streaming path
    /// splits it): edits it if it shows something else, posts it if it does not exist yet. With
    /// nothing shown this is the plain delivery.
    pub async fn finish_part(
        &mut self,
        delivery: &Delivery,
        token: &str,
        index: usize,
        part: &str,
        deliver_by: Instant,
    ) -> Result<(), DeliveryError> {
        if self.content(index) == Some(part) {
            return Ok(());
        }
        if let Some(until) = self.hold_until.take() {
            tokio::time::sleep_until(until).await;
        }
        match index {
            0 => delivery.edit_original(token, part, deliver_by).await?,
            _ => match self.follow_ups.get(index - 1) {
                Some(&id) => delivery.edit_follow_up(token, id, part, deliver_by).await?,
                None => {
                    let id = delivery.create_follow_up(token, part, deliver_by).await?;
                    self.follow_ups_changed(Some(id)).await;
                }
            },
        }
        self.set(index, part);
        Ok(())
    }

    /// Deletes the follow-ups past the first `parts` messages (the final split needed fewer than
    /// the stream had, because a boundary moved).
    pub async fn finish_extras(
        &mut self,
        delivery: &Delivery,
        token: &str,
        parts: usize,
        deliver_by: Instant,
    ) -> Result<(), DeliveryError> {
        let keep = parts.saturating_sub(1);
        if self.follow_ups.len() <= keep {
            return Ok(());
        }
        let extras = self.follow_ups.split_off(keep);
        self.contents.truncate(keep + 1);
        // Noted gone first: a process dying in between leaves a stray message, never an id the
        // next one would fail to edit.
        self.follow_ups_changed(None).await;
        for extra in extras.into_iter().rev() {
            delivery.delete_follow_up(token, extra, deliver_by).await?;
        }
        Ok(())
    }
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
