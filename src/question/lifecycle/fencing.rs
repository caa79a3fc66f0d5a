//! Fencing: whether this process still holds a question ([`Holding`]), and what happens when
//! another process took it over ([`Lifecycle::fenced`]).

use tracing::warn;

use super::Lifecycle;
use crate::store::{Fence, PendingQuestion, STORE_BUDGET};

/// Whether this process still holds a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holding {
    Held,
    /// Another process took it over (or it was finished): this process must not write for it.
    Lost,
    /// The store did not say: write nothing now and leave the question to be resumed.
    Unknown,
}

impl Lifecycle {
    /// Whether this process still holds the question (see [`Holding`]); a question lost to
    /// another process is [`fenced`](Self::fenced).
    pub(super) async fn holding(
        &self,
        question: &PendingQuestion,
        fence: Option<Fence>,
    ) -> Holding {
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
}
