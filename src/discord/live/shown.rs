//! What an interaction's messages show: the original response and its follow-ups (with the ids
//! whose post had an unknown outcome kept "unsure"), and where their ids are noted so that a
//! process that dies mid-answer leaves them to the next.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::warn;

use crate::discord::deliver::TextFile;
use crate::discord::follow_ups::Origin;
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
    pub(super) async fn holds(&self) -> bool {
        let Some(fence) = self.fence else {
            return true;
        };
        let check = self.store.holds(self.interaction_id, fence);
        matches!(
            tokio::time::timeout(STORE_BUDGET, check).await,
            Ok(Ok(true))
        )
    }

    pub(super) async fn note(&self, ids: &[u64]) {
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
pub(super) const UNSURE: u64 = 0;
/// The messages an interaction shows: index 0 is the original response, the others follow-ups.
#[derive(Clone, Debug, Default)]
pub struct Shown {
    /// Follow-up message ids, in order (message `i + 1`); [`UNSURE`] for one that may or may not
    /// have been posted.
    pub(super) follow_ups: Vec<u64>,
    /// The content each message shows now (empty while still "thinking…").
    pub(super) contents: Vec<String>,
    /// Edits sent (for the metric and the logs).
    pub edits: u32,
    /// Discord asked (429) not to edit again before then.
    pub(super) hold_until: Option<Instant>,
    /// Where the follow-up ids are noted (none: they live only here).
    pub(super) log: Option<FollowUpLog>,
    /// The content of the follow-up being posted (the next message), while its post is under
    /// way: a view stopped meanwhile leaves it unsure.
    pub(super) posting: Option<String>,
    /// The interaction and its channel, to look for a follow-up whose outcome is unknown.
    pub(super) origin: Option<Origin>,
    /// The file message `index` carries (the final answer's last one, when it is too long for
    /// the messages): posted with it, and edited to carry exactly it.
    pub(super) file: Option<(usize, TextFile)>,
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

    /// Message `index` (a follow-up) carries `file` in the final answer.
    pub fn attach(&mut self, index: usize, file: TextFile) {
        self.file = Some((index, file));
    }

    /// The file message `index` carries, if any.
    pub(super) fn file_at(&self, index: usize) -> Option<TextFile> {
        self.file
            .as_ref()
            .filter(|(at, _)| *at == index)
            .map(|(_, file)| file.clone())
    }

    /// Where a follow-up whose outcome is unknown can be looked for.
    pub fn set_origin(&mut self, origin: Origin) {
        self.origin = Some(origin);
    }

    /// A follow-up was posted (`Some`) or deleted: note the list.
    pub(super) async fn follow_ups_changed(&mut self, posted: Option<u64>) {
        if let Some(id) = posted {
            self.follow_ups.push(id);
        }
        if let Some(log) = &self.log {
            log.note(&self.follow_ups).await;
        }
    }

    /// The next follow-up was posted showing `content` with an unknown outcome: kept unsure (and
    /// noted so, so that no later process posts it blindly either).
    pub(super) async fn unsure(&mut self, content: &str) {
        self.set(self.follow_ups.len() + 1, content);
        self.follow_ups_changed(Some(UNSURE)).await;
    }

    /// Follow-up message `index` turned out to be `id`: noted.
    pub(super) async fn settled(&mut self, index: usize, id: u64) {
        if let Some(slot) = self.follow_ups.get_mut(index - 1) {
            *slot = id;
        }
        self.follow_ups_changed(None).await;
    }

    /// What a view stopped in the middle of a write leaves: a follow-up it was posting may or may
    /// not exist. Returns whether there was one.
    pub(super) fn interrupted(&mut self) -> bool {
        let Some(content) = self.posting.take() else {
            return false;
        };
        self.follow_ups.push(UNSURE);
        self.set(self.follow_ups.len(), &content);
        true
    }

    pub(super) fn content(&self, index: usize) -> Option<&str> {
        self.contents.get(index).map(String::as_str)
    }

    pub(super) fn set(&mut self, index: usize, content: &str) {
        if self.contents.len() <= index {
            self.contents.resize(index + 1, String::new());
        }
        self.contents[index] = content.to_owned();
    }
}
