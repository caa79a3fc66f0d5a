//! Where windows live between actor lifetimes: the trait the binary implements with SQLite, and an
//! in-memory implementation for tests and for running without a database.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use thiserror::Error;

use crate::{ChannelId, Exchange};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("conversation store: {0}")]
pub struct StoreError(pub String);

/// Persists each channel's recent exchanges. Kept small so a networked store can implement it.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// The newest `limit` exchanges of `channel`, oldest first.
    async fn load(&self, channel: ChannelId, limit: usize) -> Result<Vec<Exchange>, StoreError>;
    /// Saves `exchanges` (oldest first) as the newest of `channel`; the store may drop all but the
    /// newest `keep` of the channel. Idempotent: an exchange whose `id` the channel already holds
    /// is not stored again (a write that timed out but committed, then retried, leaves one row).
    async fn append(
        &self,
        channel: ChannelId,
        exchanges: &[Exchange],
        keep: usize,
    ) -> Result<(), StoreError>;
    /// Forgets every exchange of `channel`.
    async fn clear(&self, channel: ChannelId) -> Result<(), StoreError>;
}

/// Keeps windows in process memory: survives eviction, not restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    channels: Mutex<HashMap<ChannelId, Vec<Exchange>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ConversationStore for MemoryStore {
    async fn load(&self, channel: ChannelId, limit: usize) -> Result<Vec<Exchange>, StoreError> {
        let channels = self.channels.lock().expect("memory store poisoned");
        let all = channels
            .get(&channel)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(all[all.len().saturating_sub(limit)..].to_vec())
    }

    async fn append(
        &self,
        channel: ChannelId,
        exchanges: &[Exchange],
        keep: usize,
    ) -> Result<(), StoreError> {
        let mut channels = self.channels.lock().expect("memory store poisoned");
        let stored = channels.entry(channel).or_default();
        for exchange in exchanges {
            let known = exchange
                .id
                .is_some_and(|id| stored.iter().any(|kept| kept.id == Some(id)));
            if !known {
                stored.push(exchange.clone());
            }
        }
        let excess = stored.len().saturating_sub(keep);
        stored.drain(..excess);
        Ok(())
    }

    async fn clear(&self, channel: ChannelId) -> Result<(), StoreError> {
        self.channels
            .lock()
            .expect("memory store poisoned")
            .remove(&channel);
        Ok(())
    }
}
