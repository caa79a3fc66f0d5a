//! The PostgreSQL store's conversation windows: loading, appending (fenced and trimmed per
//! channel), clearing, and importing copied exchanges.

use async_trait::async_trait;
use zundamon_actors::{ChannelId, ConversationStore, Exchange, StoreError};

use super::{failed, PostgresStore};
use crate::store::keys::{channel_key, unkey};

impl PostgresStore {
    /// Writes one copied exchange with its original age, unless the channel holds it already: the
    /// same id, or for exchanges from before ids were kept (no id), already `occurrence + 1`
    /// rows of the same text and time (identical exchanges are told apart by how many there
    /// are). True if it was written.
    pub async fn import(
        &self,
        row: &crate::store::copy::StoredExchange,
        occurrence: usize,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "copy an exchange";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.map_err(failed(WHAT))?;
        let channel = channel_key(row.channel_id);
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&channel])
            .await
            .map_err(failed(WHAT))?;
        let (question, answer, at) = (
            &row.exchange.question,
            &row.exchange.answer,
            &row.created_at,
        );
        let written = match row.exchange.id.map(channel_key) {
            Some(id) => tx
                .execute(
                    "INSERT INTO exchanges (channel_id, question, answer, created_at, exchange_id)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (channel_id, exchange_id) DO NOTHING",
                    &[&channel, question, answer, at, &id],
                )
                .await
                .map_err(failed(WHAT))?,
            None => {
                let occurrence = i64::try_from(occurrence).unwrap_or(i64::MAX);
                tx.execute(
                    "INSERT INTO exchanges (channel_id, question, answer, created_at)
                     SELECT $1, $2, $3, $4
                     WHERE (SELECT count(*) FROM exchanges WHERE channel_id = $1
                            AND exchange_id IS NULL AND question = $2 AND answer = $3
                            AND created_at = $4) <= $5",
                    &[&channel, question, answer, at, &occurrence],
                )
                .await
                .map_err(failed(WHAT))?
            }
        };
        tx.commit().await.map_err(failed(WHAT))?;
        Ok(written == 1)
    }
}

#[async_trait]
impl ConversationStore for PostgresStore {
    async fn load(&self, channel: ChannelId, limit: usize) -> Result<Vec<Exchange>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client("load").await?;
        let statement = client
            .prepare_cached(
                "SELECT question, answer, exchange_id FROM exchanges
                 WHERE channel_id = $1 AND created_at >= $2
                 ORDER BY id DESC LIMIT $3",
            )
            .await
            .map_err(failed("load"))?;
        let rows = client
            .query(&statement, &[&channel_key(channel), &self.cutoff(), &limit])
            .await
            .map_err(failed("load"))?;
        let mut exchanges: Vec<Exchange> = rows
            .iter()
            .map(|row| Exchange {
                id: row.get::<_, Option<i64>>(2).map(unkey),
                question: row.get(0),
                answer: row.get(1),
            })
            .collect();
        exchanges.reverse();
        Ok(exchanges)
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
        let mut client = self.client("append").await?;
        let tx = client.transaction().await.map_err(failed("append"))?;
        // One writer per channel at a time, across every process: a batch gets consecutive ids
        // and the trim sees every row it must keep. (The lock ends with the transaction.)
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&channel])
            .await
            .map_err(failed("append"))?;
        // Fenced: an exchange whose question another process owns now (it took the question or
        // the channel over while this one was frozen) is that process's to remember.
        let insert = tx
            .prepare_cached(
                "INSERT INTO exchanges (channel_id, question, answer, created_at, exchange_id)
                 SELECT $1, $2, $3, $4, $5
                 WHERE $5::BIGINT IS NULL OR NOT EXISTS (SELECT 1 FROM pending_questions
                     WHERE interaction_id = $5 AND owner IS DISTINCT FROM $6)
                 ON CONFLICT (channel_id, exchange_id) DO NOTHING",
            )
            .await
            .map_err(failed("append"))?;
        for exchange in exchanges {
            let id = exchange.id.map(channel_key);
            tx.execute(
                &insert,
                &[
                    &channel,
                    &exchange.question,
                    &exchange.answer,
                    &now,
                    &id,
                    &&*self.instance,
                ],
            )
            .await
            .map_err(failed("append"))?;
        }
        let trim = tx
            .prepare_cached(
                "DELETE FROM exchanges WHERE channel_id = $1 AND id <= (
                     SELECT id FROM exchanges WHERE channel_id = $1
                     ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .await
            .map_err(failed("append"))?;
        tx.execute(&trim, &[&channel, &keep])
            .await
            .map_err(failed("append"))?;
        tx.commit().await.map_err(failed("append"))
    }

    async fn clear(&self, channel: ChannelId) -> Result<(), StoreError> {
        let client = self.client("clear").await?;
        client
            .execute(
                "DELETE FROM exchanges WHERE channel_id = $1",
                &[&channel_key(channel)],
            )
            .await
            .map(drop)
            .map_err(failed("clear"))
    }
}
