//! The SQLite store's conversation windows: loading, appending (trimmed per channel), clearing,
//! and reading every exchange for `zundamon store copy`.

use async_trait::async_trait;
use rusqlite::params;
use zundamon_actors::{ChannelId, ConversationStore, Exchange, StoreError};

use super::SqliteStore;
use crate::store::keys::{channel_key, unkey};

impl SqliteStore {
    /// Every stored exchange with its channel and age, channel by channel, oldest first (for
    /// `zundamon store copy`).
    pub async fn dump(&self) -> Result<Vec<crate::store::copy::StoredExchange>, StoreError> {
        self.with_conn("read every exchange", |conn| {
            let mut select = conn.prepare(
                "SELECT channel_id, question, answer, exchange_id, created_at FROM exchanges
                 ORDER BY channel_id, id",
            )?;
            let rows = select.query_map([], |row| {
                Ok(crate::store::copy::StoredExchange {
                    channel_id: unkey(row.get(0)?),
                    exchange: Exchange {
                        id: row.get::<_, Option<i64>>(3)?.map(unkey),
                        question: row.get(1)?,
                        answer: row.get(2)?,
                    },
                    created_at: row.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn load(&self, channel: ChannelId, limit: usize) -> Result<Vec<Exchange>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let channel = channel_key(channel);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cutoff = self.cutoff();
        self.with_conn("load", move |conn| {
            let mut newest_first = conn.prepare_cached(
                "SELECT question, answer, exchange_id FROM exchanges
                 WHERE channel_id = ?1 AND created_at >= ?2
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let mut exchanges = newest_first
                .query_map(params![channel, cutoff, limit], |row| {
                    Ok(Exchange {
                        id: row.get::<_, Option<i64>>(2)?.map(unkey),
                        question: row.get(0)?,
                        answer: row.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            exchanges.reverse();
            Ok(exchanges)
        })
        .await
    }

    async fn append(
        &self,
        channel: ChannelId,
        exchanges: &[Exchange],
        keep: usize,
    ) -> Result<(), StoreError> {
        let channel = channel_key(channel);
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let now = self.now();
        let exchanges = exchanges.to_vec();
        let me = self.instance.clone();
        self.with_conn("append", move |conn| {
            // One transaction: a crash never leaves half of a batch, and the trim sees the rows
            // it has to keep.
            let tx = conn.transaction()?;
            {
                // OR IGNORE: an exchange already stored under its id (a write that timed out
                // but committed, then retried) is not stored twice.
                // Fenced: an exchange whose question another process owns now (it took the
                // question over while this one was frozen) is that process's to remember.
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO exchanges
                         (channel_id, question, answer, created_at, exchange_id)
                     SELECT ?1, ?2, ?3, ?4, ?5
                     WHERE ?5 IS NULL OR NOT EXISTS (SELECT 1 FROM pending_questions
                         WHERE interaction_id = ?5 AND owner IS NOT ?6)",
                )?;
                for exchange in &exchanges {
                    let id = exchange.id.map(channel_key);
                    insert.execute(params![
                        channel,
                        exchange.question,
                        exchange.answer,
                        now,
                        id,
                        &*me
                    ])?;
                }
                // Everything at or below the (keep+1)-th newest id goes; fewer rows than that
                // makes the bound NULL, which deletes nothing.
                tx.prepare_cached(
                    "DELETE FROM exchanges WHERE channel_id = ?1 AND id <= (
                         SELECT id FROM exchanges WHERE channel_id = ?1
                         ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                )?
                .execute(params![channel, keep])?;
            }
            tx.commit()
        })
        .await
    }

    async fn clear(&self, channel: ChannelId) -> Result<(), StoreError> {
        let channel = channel_key(channel);
        self.with_conn("clear", move |conn| {
            conn.prepare_cached("DELETE FROM exchanges WHERE channel_id = ?1")?
                .execute(params![channel])
                .map(drop)
        })
        .await
    }
}
