//! The pending table as an HTTP fleet instance's event actor sees it: questions are recorded as
//! fleet questions (which wakes the instances, and is refused past the queue limits), and the
//! holder's writes for the questions it claimed go to the store, fenced by the lease token it
//! claimed them with.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zundamon_actors::StoreError;

use super::{Fence, PendingQuestion, PendingStore, PostgresStore, Recorded, Wanted};

/// The pending table as the event actor sees it in fleet mode: questions are recorded as fleet
/// questions (which wakes the instances, and is refused past the queue limits), and the holder's
/// writes for the questions it claimed go to the store, fenced by the lease token it claimed them
/// with.
pub struct FleetPending(pub Arc<PostgresStore>);

impl FleetPending {
    /// Records a question for the fleet; `false` when the channel's queue (`max_queued`) or the
    /// fleet's (`max_pending`) is full.
    pub async fn record_within(
        &self,
        question: &PendingQuestion,
        max_queued: usize,
        max_pending: usize,
    ) -> Result<bool, StoreError> {
        self.0
            .record_for_fleet(question, max_queued, max_pending)
            .await
    }
}

#[async_trait]
impl PendingStore for FleetPending {
    fn instance(&self) -> &str {
        self.0.instance()
    }

    async fn record(&self, question: &PendingQuestion) -> Result<Recorded, StoreError> {
        self.0.record_for_fleet(question, 0, 0).await?;
        // A fleet question belongs to whichever instance claims its channel, not to its recorder.
        Ok(Recorded::Existing)
    }

    async fn adopt(&self, question: &PendingQuestion) -> Result<Option<Fence>, StoreError> {
        self.0.adopt(question).await
    }

    async fn holds(&self, interaction_id: u64, fence: Fence) -> Result<bool, StoreError> {
        self.0.holds(interaction_id, fence).await
    }

    async fn delivered_parts(
        &self,
        interaction_id: u64,
        parts: u32,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        self.0.delivered_parts(interaction_id, parts, fence).await
    }

    async fn follow_ups(
        &self,
        interaction_id: u64,
        ids: &[u64],
        fence: Fence,
    ) -> Result<bool, StoreError> {
        self.0.follow_ups(interaction_id, ids, fence).await
    }

    async fn finish(
        &self,
        question: &PendingQuestion,
        fence: Option<Fence>,
    ) -> Result<bool, StoreError> {
        self.0.finish(question, fence).await
    }

    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError> {
        self.0.pending().await
    }

    async fn heartbeat(&self, lease: Duration) -> Result<(), StoreError> {
        self.0.heartbeat(lease).await
    }

    async fn leave(&self) -> Result<(), StoreError> {
        self.0.leave().await
    }

    async fn claim_orphans(
        &self,
        unheld_after: Duration,
        wanted: Wanted,
    ) -> Result<Vec<PendingQuestion>, StoreError> {
        self.0.claim_orphans(unheld_after, wanted).await
    }
}
