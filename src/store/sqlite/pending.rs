//! The SQLite store's pending questions: the row layout, recording, adopting, holding, progress
//! notes, finishing (tombstones), the heartbeat and claiming orphaned questions.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use zundamon_actors::StoreError;

use super::SqliteStore;
use crate::config::Secret;
use crate::store::keys::{channel_key, unkey};
use crate::store::{
    from_unix_millis, unix_millis, Fence, PendingQuestion, PendingStore, Recorded, Wanted,
};

/// The columns of a pending question, in the order [`pending_from_row`] reads them.
const PENDING_COLUMNS: &str = "interaction_id, application_id, token, channel_id, guild_id,
    user_id, user_name, question, received_at_ms, delivered_parts, accepted, follow_ups, fence,
    attachments, places";

fn pending_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingQuestion> {
    Ok(PendingQuestion {
        interaction_id: unkey(row.get(0)?),
        application_id: unkey(row.get(1)?),
        token: Secret::new(row.get::<_, String>(2)?),
        channel_id: unkey(row.get(3)?),
        guild_id: row.get::<_, Option<i64>>(4)?.map(unkey),
        user_id: unkey(row.get(5)?),
        user_name: row.get(6)?,
        question: row.get(7)?,
        received_at: from_unix_millis(row.get(8)?),
        delivered_parts: row.get(9)?,
        accepted: row.get::<_, Option<i64>>(10)?.map_or(0, unkey),
        follow_ups: crate::store::split_ids(&row.get::<_, String>(11)?),
        fence: row.get(12)?,
        attachments: crate::store::decode_attachments(&row.get::<_, String>(13)?),
        places: crate::store::split_ids(&row.get::<_, String>(14)?),
    })
}

/// The values of a new row for `q` owned by `owner` (`?1`…`?17`, as [`INSERT_PENDING`] names
/// them), with `token` in place of the question's own (a tombstone keeps none).
fn insert_values(
    q: &PendingQuestion,
    owner: &str,
    fence: Fence,
    done: bool,
) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    let token = if done {
        String::new()
    } else {
        q.token.expose().to_owned()
    };
    vec![
        Value::Integer(channel_key(q.interaction_id)),
        Value::Integer(channel_key(q.application_id)),
        Value::Text(token),
        Value::Integer(channel_key(q.channel_id)),
        q.guild_id
            .map_or(Value::Null, |g| Value::Integer(channel_key(g))),
        Value::Integer(channel_key(q.user_id)),
        Value::Text(q.user_name.clone()),
        Value::Text(q.question.clone()),
        Value::Integer(unix_millis(q.received_at)),
        Value::Integer(i64::from(q.delivered_parts)),
        Value::Integer(channel_key(q.accepted)),
        Value::Text(crate::store::join_ids(&q.follow_ups)),
        Value::Text(owner.to_owned()),
        Value::Integer(fence),
        Value::Integer(i64::from(done)),
        Value::Text(crate::store::encode_attachments(&q.attachments)),
        Value::Text(crate::store::join_ids(&q.places)),
    ]
}

/// Inserts a pending row from [`insert_values`]; the caller appends its conflict clause.
const INSERT_PENDING: &str = "INSERT INTO pending_questions (interaction_id, application_id, token,
     channel_id, guild_id, user_id, user_name, question, received_at_ms, delivered_parts,
     accepted, follow_ups, owner, fence, done, attachments, places)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// How long a finished question's tombstone is kept: longer than an interaction token lives, so
/// no write for it can still be under way.
const TOMBSTONE_MILLIS: i64 = 30 * 60 * 1000;

#[async_trait]
impl PendingStore for SqliteStore {
    fn instance(&self) -> &str {
        &self.instance
    }

    async fn record(&self, question: &PendingQuestion) -> Result<Recorded, StoreError> {
        let values = insert_values(question, &self.instance, 0, false);
        self.with_conn("record pending question", move |conn| {
            let written = conn
                .prepare_cached(&format!("{INSERT_PENDING} ON CONFLICT DO NOTHING"))?
                .execute(rusqlite::params_from_iter(values))?;
            Ok(if written == 1 {
                Recorded::Mine(0)
            } else {
                Recorded::Existing
            })
        })
        .await
    }

    async fn adopt(&self, question: &PendingQuestion) -> Result<Option<Fence>, StoreError> {
        let values = insert_values(question, &self.instance, 0, false);
        self.with_conn("take over a pending question", move |conn| {
            conn.prepare_cached(&format!(
                "{INSERT_PENDING} ON CONFLICT (interaction_id) DO UPDATE
                     SET owner = excluded.owner,
                         fence = CASE WHEN pending_questions.owner IS excluded.owner
                                 THEN pending_questions.fence
                                 ELSE pending_questions.fence + 1 END
                     WHERE NOT pending_questions.done
                 RETURNING fence"
            ))?
            .query_map(rusqlite::params_from_iter(values), |row| row.get(0))?
            .next()
            .transpose()
        })
        .await
    }

    async fn holds(&self, interaction_id: u64, fence: Fence) -> Result<bool, StoreError> {
        let (id, me) = (channel_key(interaction_id), self.instance.clone());
        self.with_conn("check a pending question's owner", move |conn| {
            conn.prepare_cached(
                "SELECT 1 FROM pending_questions
                 WHERE interaction_id = ?1 AND owner = ?2 AND fence = ?3 AND NOT done",
            )?
            .exists(params![id, &*me, fence])
        })
        .await
    }

    async fn delivered_parts(
        &self,
        interaction_id: u64,
        parts: u32,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        let (id, me) = (channel_key(interaction_id), self.instance.clone());
        self.with_conn("note delivered parts", move |conn| {
            conn.prepare_cached(
                "UPDATE pending_questions SET delivered_parts = ?2
                 WHERE interaction_id = ?1 AND owner = ?3 AND fence = ?4 AND NOT done",
            )?
            .execute(params![id, parts, &*me, fence])
            .map(|n| n == 1)
        })
        .await
    }

    async fn follow_ups(
        &self,
        interaction_id: u64,
        ids: &[u64],
        fence: Fence,
    ) -> Result<bool, StoreError> {
        let (id, ids, me) = (
            channel_key(interaction_id),
            crate::store::join_ids(ids),
            self.instance.clone(),
        );
        self.with_conn("note follow-up messages", move |conn| {
            conn.prepare_cached(
                "UPDATE pending_questions SET follow_ups = ?2
                 WHERE interaction_id = ?1 AND owner = ?3 AND fence = ?4 AND NOT done",
            )?
            .execute(params![id, ids, &*me, fence])
            .map(|n| n == 1)
        })
        .await
    }

    async fn finish(
        &self,
        question: &PendingQuestion,
        fence: Option<Fence>,
    ) -> Result<bool, StoreError> {
        let values = insert_values(question, &self.instance, fence.unwrap_or(0), true);
        let held = if fence.is_some() {
            "pending_questions.owner IS excluded.owner AND pending_questions.fence = excluded.fence"
        } else {
            "(pending_questions.owner IS NULL OR pending_questions.owner IS excluded.owner)"
        };
        let sql = format!(
            "{INSERT_PENDING} ON CONFLICT (interaction_id) DO UPDATE SET done = 1, token = ''
             WHERE {held} AND NOT pending_questions.done"
        );
        self.with_conn("finish a pending question", move |conn| {
            conn.prepare_cached(&sql)?
                .execute(rusqlite::params_from_iter(values))
                .map(|n| n == 1)
        })
        .await
    }

    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError> {
        self.with_conn("list pending questions", |conn| {
            let mut select = conn.prepare_cached(&format!(
                "SELECT {PENDING_COLUMNS} FROM pending_questions WHERE NOT done
                 ORDER BY accepted, seq"
            ))?;
            let rows = select.query_map([], pending_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn heartbeat(&self, lease: Duration) -> Result<(), StoreError> {
        let now = unix_millis((self.clock)());
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let me = self.instance.clone();
        self.with_conn("renew the heartbeat", move |conn| {
            conn.prepare_cached(
                "INSERT INTO instances (id, expires_at_ms) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
            )?
            .execute(params![&*me, until])?;
            // Upkeep: processes long gone, and tombstones no write can still come for.
            conn.prepare_cached("DELETE FROM instances WHERE expires_at_ms < ?1")?
                .execute(params![now - 86_400_000])?;
            conn.prepare_cached("DELETE FROM pending_questions WHERE done AND received_at_ms < ?1")?
                .execute(params![now - TOMBSTONE_MILLIS])
                .map(drop)
        })
        .await
    }

    async fn leave(&self) -> Result<(), StoreError> {
        let me = self.instance.clone();
        self.with_conn("end the heartbeat", move |conn| {
            conn.prepare_cached("DELETE FROM instances WHERE id = ?1")?
                .execute(params![&*me])
                .map(drop)
        })
        .await
    }

    async fn claim_orphans(
        &self,
        unheld_after: Duration,
        wanted: Wanted,
    ) -> Result<Vec<PendingQuestion>, StoreError> {
        let now = unix_millis((self.clock)());
        let unheld_before =
            now.saturating_sub(i64::try_from(unheld_after.as_millis()).unwrap_or(i64::MAX));
        let me = self.instance.clone();
        let claimed = self
            .with_conn("take over pending questions", move |conn| {
                // IMMEDIATE: another process on the same file waits instead of claiming the same
                // rows between our read and our write.
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let orphans: Vec<(i64, Option<i64>)> = tx
                    .prepare_cached(
                        "SELECT interaction_id, guild_id FROM pending_questions p
                         WHERE NOT done AND (owner IS NULL OR (owner <> ?1 AND NOT EXISTS (
                             SELECT 1 FROM instances i WHERE i.id = p.owner
                                 AND i.expires_at_ms > ?2)))",
                    )?
                    .query_map(params![&*me, now], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut questions = Vec::new();
                {
                    let mut take = tx.prepare_cached(&format!(
                        "UPDATE pending_questions SET owner = ?1, fence = fence + 1
                         WHERE interaction_id = ?2 RETURNING {PENDING_COLUMNS}"
                    ))?;
                    for (id, guild) in orphans {
                        if wanted(guild.map(unkey)) {
                            let taken = take
                                .query_map(params![&*me, id], pending_from_row)?
                                .collect::<rusqlite::Result<Vec<_>>>()?;
                            questions.extend(taken);
                        }
                    }
                    let mut own = tx.prepare_cached(&format!(
                        "SELECT {PENDING_COLUMNS} FROM pending_questions
                         WHERE owner = ?1 AND NOT done AND received_at_ms < ?2"
                    ))?;
                    for question in own.query_map(params![&*me, unheld_before], pending_from_row)? {
                        let question = question?;
                        if wanted(question.guild_id) {
                            questions.push(question);
                        }
                    }
                }
                tx.commit()?;
                Ok(questions)
            })
            .await?;
        Ok(crate::store::in_acceptance_order(claimed))
    }
}
