//! The fleet's queries: per-channel leases (a row with an expiry on the server's clock) and the
//! questions recorded for the fleet.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zundamon_actors::{ChannelId, StoreError};

use crate::store::postgres::failed;
use crate::store::sqlite::{channel_key, unkey};
use crate::store::{PendingQuestion, PendingStore, PostgresStore};

/// Lease operations for one instance (`holder`).
#[derive(Clone)]
pub struct Leases {
    store: Arc<PostgresStore>,
    holder: Arc<str>,
    lease_ms: f64,
}

impl Leases {
    pub fn new(store: Arc<PostgresStore>, holder: &str, lease: Duration) -> Self {
        Self {
            store,
            holder: holder.into(),
            lease_ms: lease.as_secs_f64() * 1000.0,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes `channel`'s lease if it is free or lapsed, or renews it if this instance holds it.
    /// True if this instance holds it now.
    pub async fn acquire(&self, channel: ChannelId) -> Result<bool, StoreError> {
        let client = self.store.client("take a channel lease").await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO channel_leases (channel_id, holder, expires_at)
                 VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (channel_id) DO UPDATE
                     SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                     WHERE channel_leases.holder = EXCLUDED.holder
                        OR channel_leases.expires_at < now()
                 RETURNING channel_id",
            )
            .await
            .map_err(failed("take a channel lease"))?;
        let rows = client
            .query(
                &statement,
                &[&channel_key(channel), &&*self.holder, &self.lease_ms],
            )
            .await
            .map_err(failed("take a channel lease"))?;
        Ok(!rows.is_empty())
    }

    /// Renews the leases of `channels`; returns those this instance still holds.
    pub async fn renew(&self, channels: &[ChannelId]) -> Result<Vec<ChannelId>, StoreError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<i64> = channels.iter().copied().map(channel_key).collect();
        let client = self.store.client("renew channel leases").await?;
        let rows = client
            .query(
                "UPDATE channel_leases SET expires_at = now() + $3 * interval '1 millisecond'
                 WHERE holder = $1 AND channel_id = ANY($2) RETURNING channel_id",
                &[&&*self.holder, &keys, &self.lease_ms],
            )
            .await
            .map_err(failed("renew channel leases"))?;
        Ok(rows.iter().map(|row| unkey(row.get(0))).collect())
    }

    /// Gives `channel` up (only if this instance holds it).
    pub async fn release(&self, channel: ChannelId) -> Result<(), StoreError> {
        let client = self.store.client("release a channel lease").await?;
        client
            .execute(
                "DELETE FROM channel_leases WHERE channel_id = $1 AND holder = $2",
                &[&channel_key(channel), &&*self.holder],
            )
            .await
            .map(drop)
            .map_err(failed("release a channel lease"))
    }

    /// Gives every lease of this instance up.
    pub async fn release_all(&self) -> Result<u64, StoreError> {
        let client = self.store.client("release channel leases").await?;
        client
            .execute(
                "DELETE FROM channel_leases WHERE holder = $1",
                &[&&*self.holder],
            )
            .await
            .map_err(failed("release channel leases"))
    }

    /// The channels that have fleet questions waiting.
    pub async fn waiting_channels(&self) -> Result<Vec<ChannelId>, StoreError> {
        let client = self.store.client("list waiting channels").await?;
        let rows = client
            .query(
                "SELECT DISTINCT channel_id FROM pending_questions WHERE fleet",
                &[],
            )
            .await
            .map_err(failed("list waiting channels"))?;
        Ok(rows.iter().map(|row| unkey(row.get(0))).collect())
    }

    /// `channel`'s fleet questions, oldest interaction first.
    pub async fn waiting_in(&self, channel: ChannelId) -> Result<Vec<PendingQuestion>, StoreError> {
        self.store.fleet_pending_in(channel).await
    }
}

/// The pending table as the event actor sees it in fleet mode: questions are recorded as fleet
/// questions (which wakes the instances), and removed when delivered.
pub struct FleetPending(pub Arc<PostgresStore>);

#[async_trait]
impl PendingStore for FleetPending {
    async fn record(&self, question: &PendingQuestion) -> Result<(), StoreError> {
        self.0.record_for_fleet(question).await
    }

    async fn delivered_parts(&self, interaction_id: u64, parts: u32) -> Result<(), StoreError> {
        self.0.delivered_parts(interaction_id, parts).await
    }

    async fn remove(&self, interaction_id: u64) -> Result<(), StoreError> {
        self.0.remove(interaction_id).await
    }

    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError> {
        self.0.pending().await
    }
}
