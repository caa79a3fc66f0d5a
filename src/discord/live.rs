//! The live view of an answer: while the channel actor answers, the interaction's message is
//! edited to show the status line (searching…) and then the answer as it streams.
//!
//! Each interaction is paced on its own (no shared timer): at most one edit per `every`, longer
//! when Discord's rate-limit headers say the message's bucket is nearly empty, and after a 429 it
//! waits what Discord says. Edits coalesce: the answerer publishes into a `watch` channel, which
//! holds only the latest state, so a slow edit never queues up stale ones. Text past 2000 UTF-16
//! units continues in follow-up messages, split as the final answer will be. When the answer is
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
use tracing::{debug, info, warn, Instrument};
use zundamon_actors::Live;

use super::deliver::{Delivery, DeliveryError};
use super::edits::LiveEdit;
use super::follow_ups::{Lookup, Origin};
use super::split::split_message;
use super::{bound_reply, quote_answer, MESSAGE_LIMIT};
use crate::config::Secret;
use crate::store::{Fence, PendingStore, STORE_BUDGET};

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
    /// Whether this process still holds the question (a live edit is skipped when the store
    /// cannot say: the final delivery decides).
    async fn holds(&self) -> bool {
        let Some(fence) = self.fence else {
            return true;
        };
        let check = self.store.holds(self.interaction_id, fence);
        matches!(
            tokio::time::timeout(STORE_BUDGET, check).await,
            Ok(Ok(true))
        )
    }

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

/// The id kept for a follow-up whose post had an unknown outcome (no message has id 0).
const UNSURE: u64 = 0;
/// How long after a lost answer to look for the follow-up: a request that timed out on our side
/// may still be on its way through Discord.
const SETTLE_DELAY: Duration = Duration::from_secs(1);
/// How often a follow-up proven missing is posted again (each time only after a look).
const MAX_RESENDS: u32 = 3;

/// The messages an interaction shows: index 0 is the original response, the others follow-ups.
#[derive(Clone, Debug, Default)]
pub struct Shown {
    /// Follow-up message ids, in order (message `i + 1`); [`UNSURE`] for one that may or may not
    /// have been posted.
    follow_ups: Vec<u64>,
    /// The content each message shows now (empty while still "thinking…").
    contents: Vec<String>,
    /// Edits sent (for the metric and the logs).
    pub edits: u32,
    /// Discord asked (429) not to edit again before then.
    hold_until: Option<Instant>,
    /// Where the follow-up ids are noted (none: they live only here).
    log: Option<FollowUpLog>,
    /// The content of the follow-up being posted (the next message), while its post is under
    /// way: a view stopped meanwhile leaves it unsure.
    posting: Option<String>,
    /// The interaction and its channel, to look for a follow-up whose outcome is unknown.
    origin: Option<Origin>,
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

    /// Where a follow-up whose outcome is unknown can be looked for.
    pub fn set_origin(&mut self, origin: Origin) {
        self.origin = Some(origin);
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

    /// The next follow-up was posted showing `content` with an unknown outcome: kept unsure (and
    /// noted so, so that no later process posts it blindly either).
    async fn unsure(&mut self, content: &str) {
        self.set(self.follow_ups.len() + 1, content);
        self.follow_ups_changed(Some(UNSURE)).await;
    }

    /// Follow-up message `index` turned out to be `id`: noted.
    async fn settled(&mut self, index: usize, id: u64) {
        if let Some(slot) = self.follow_ups.get_mut(index - 1) {
            *slot = id;
        }
        self.follow_ups_changed(None).await;
    }

    /// What a view stopped in the middle of a write leaves: a follow-up it was posting may or may
    /// not exist. Returns whether there was one.
    fn interrupted(&mut self) -> bool {
        let Some(content) = self.posting.take() else {
            return false;
        };
        self.follow_ups.push(UNSURE);
        self.set(self.follow_ups.len(), &content);
        true
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
        let unsure = index > 0 && self.follow_ups.get(index - 1) == Some(&UNSURE);
        if self.content(index) == Some(part) && !unsure {
            return Ok(());
        }
        if let Some(until) = self.hold_until.take() {
            tokio::time::sleep_until(until).await;
        }
        match index {
            0 => delivery.edit_original(token, part, deliver_by).await?,
            _ if unsure => return self.settle(delivery, token, index, part, deliver_by).await,
            _ => match self.follow_ups.get(index - 1) {
                Some(&id) => delivery.edit_follow_up(token, id, part, deliver_by).await?,
                None => match delivery.create_follow_up(token, part, deliver_by).await {
                    Ok(id) => self.follow_ups_changed(Some(id)).await,
                    Err(DeliveryError::Unknown { .. }) => {
                        self.unsure(part).await;
                        return self.settle(delivery, token, index, part, deliver_by).await;
                    }
                    Err(err) => return Err(err),
                },
            },
        }
        self.set(index, part);
        Ok(())
    }

    /// Message `index` is a follow-up whose post had an unknown outcome: finds out whether it
    /// exists and brings it to `part`. Found, it is kept (and edited if need be); proven missing,
    /// it is posted once more (and if that answer is lost too, looked for again, up to
    /// [`MAX_RESENDS`] times); when that cannot be told, it is left alone: a part that may be
    /// missing is better than one shown twice.
    async fn settle(
        &mut self,
        delivery: &Delivery,
        token: &str,
        index: usize,
        part: &str,
        deliver_by: Instant,
    ) -> Result<(), DeliveryError> {
        let mut resends = 0;
        loop {
            let sent = self.content(index).unwrap_or_default().to_owned();
            let lookup = match self.origin {
                Some(origin) if !sent.is_empty() => {
                    tokio::time::sleep(SETTLE_DELAY).await;
                    let known: Vec<u64> = self
                        .follow_ups
                        .iter()
                        .copied()
                        .filter(|&id| id != UNSURE)
                        .collect();
                    delivery
                        .find_follow_up(origin, &sent, &known, deliver_by)
                        .await
                }
                Some(_) => Lookup::Unknowable("what was posted is not known here".into()),
                None => Lookup::Unknowable("the channel is not known here".into()),
            };
            match lookup {
                Lookup::Found(id) => {
                    delivery.count_unknown_follow_up("found");
                    info!(
                        part = index + 1,
                        message_id = id,
                        "a follow-up whose answer was lost had been posted: keeping it"
                    );
                    self.settled(index, id).await;
                    if sent != part {
                        delivery.edit_follow_up(token, id, part, deliver_by).await?;
                    }
                    self.set(index, part);
                    return Ok(());
                }
                Lookup::Absent if resends < MAX_RESENDS => {
                    resends += 1;
                    delivery.count_unknown_follow_up("resent");
                    info!(
                        part = index + 1,
                        "a follow-up whose answer was lost was not posted: posting it once more"
                    );
                    match delivery.create_follow_up(token, part, deliver_by).await {
                        Ok(id) => {
                            self.settled(index, id).await;
                            self.set(index, part);
                            return Ok(());
                        }
                        // Unknown again: look again before anything else.
                        Err(DeliveryError::Unknown { .. }) => self.set(index, part),
                        Err(err) => return Err(err),
                    }
                }
                Lookup::Absent | Lookup::Unknowable(_) => {
                    let why = match lookup {
                        Lookup::Unknowable(why) => why,
                        _ => format!("posted {resends} more time(s), each answer lost"),
                    };
                    delivery.count_unknown_follow_up("given_up");
                    warn!(
                        part = index + 1,
                        why = %why,
                        "part of the answer may be missing: a follow-up's post had an unknown \
                         outcome and cannot be checked, so it is not posted again (it could show \
                         twice)"
                    );
                    self.set(index, part);
                    return Ok(());
                }
            }
        }
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
        // An unsure one has no id to delete by.
        for extra in extras.into_iter().rev().filter(|&id| id != UNSURE) {
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
