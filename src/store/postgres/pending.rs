//! The PostgreSQL store's pending questions: the row layout, recording, adopting, holding,
//! progress notes, finishing (tombstones), the heartbeat and claiming orphaned questions.

use std::time::Duration;

use async_trait::async_trait;
use zundamon_actors::StoreError;

use super::{failed, PostgresStore};
use crate::config::Secret;
use crate::store::keys::{channel_key, unkey};
use crate::store::{
    from_unix_millis, unix_millis, Fence, PendingQuestion, PendingStore, Recorded, Wanted,
};

/// The columns of a pending question, in the order [`pending_from_row`] reads them.
pub(super) const PENDING_COLUMNS: &str =
    "interaction_id, application_id, token, channel_id, guild_id,
    user_id, user_name, question, received_at_ms, delivered_parts, accepted, follow_ups, fence,
    attachments, places";

/// The columns [`insert_values`] fills, and its placeholders (`$1`…`$17`).
pub(super) const PENDING_INSERT_COLUMNS: &str = "interaction_id, application_id, token, channel_id,
    guild_id, user_id, user_name, question, received_at_ms, delivered_parts, accepted,
    follow_ups, owner, fence, done, attachments, places";
pub(super) const PENDING_INSERT_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17";

/// How long a finished question's tombstone is kept: longer than an interaction token lives, so
/// no write for it can still be under way.
const TOMBSTONE_MILLIS: i64 = 30 * 60 * 1000;

/// A new pending row's values, owned by `owner` with `fence`; a tombstone (`done`) keeps no token.
pub(super) struct InsertValues {
    interaction_id: i64,
    application_id: i64,
    token: String,
    channel_id: i64,
    guild_id: Option<i64>,
    user_id: i64,
    user_name: String,
    question: String,
    received_at_ms: i64,
    delivered_parts: i32,
    accepted: i64,
    follow_ups: String,
    owner: Option<String>,
    fence: Fence,
    done: bool,
    attachments: String,
    places: String,
}

impl InsertValues {
    pub(super) fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.interaction_id,
            &self.application_id,
            &self.token,
            &self.channel_id,
            &self.guild_id,
            &self.user_id,
            &self.user_name,
            &self.question,
            &self.received_at_ms,
            &self.delivered_parts,
            &self.accepted,
            &self.follow_ups,
            &self.owner,
            &self.fence,
            &self.done,
            &self.attachments,
            &self.places,
        ]
    }
}

pub(super) fn insert_values(
    q: &PendingQuestion,
    owner: Option<&str>,
    fence: Fence,
    done: bool,
) -> InsertValues {
    InsertValues {
        interaction_id: channel_key(q.interaction_id),
        application_id: channel_key(q.application_id),
        token: if done {
            String::new()
        } else {
            q.token.expose().to_owned()
        },
        channel_id: channel_key(q.channel_id),
        guild_id: q.guild_id.map(channel_key),
        user_id: channel_key(q.user_id),
        user_name: q.user_name.clone(),
        question: q.question.clone(),
        received_at_ms: unix_millis(q.received_at),
        delivered_parts: i32::try_from(q.delivered_parts).unwrap_or(i32::MAX),
        accepted: channel_key(q.accepted),
        follow_ups: crate::store::join_ids(&q.follow_ups),
        owner: owner.map(str::to_owned),
        fence,
        done,
        attachments: crate::store::encode_attachments(&q.attachments),
        places: crate::store::join_ids(&q.places),
    }
}

pub(super) fn pending_from_row(row: &tokio_postgres::Row) -> PendingQuestion {
    PendingQuestion {
        interaction_id: unkey(row.get(0)),
        application_id: unkey(row.get(1)),
        token: Secret::new(row.get::<_, String>(2)),
        channel_id: unkey(row.get(3)),
        guild_id: row.get::<_, Option<i64>>(4).map(unkey),
        user_id: unkey(row.get(5)),
        user_name: row.get(6),
        question: row.get(7),
        received_at: from_unix_millis(row.get(8)),
        delivered_parts: u32::try_from(row.get::<_, i32>(9)).unwrap_or(0),
        accepted: row.get::<_, Option<i64>>(10).map_or(0, unkey),
        follow_ups: crate::store::split_ids(row.get::<_, &str>(11)),
        fence: row.get(12),
        attachments: crate::store::decode_attachments(row.get::<_, &str>(13)),
        places: crate::store::split_ids(row.get::<_, &str>(14)),
    }
}

/// The HTTP fleet's questions (recorded with [`PostgresStore::record_for_fleet`]) are not part of
/// [`PendingStore::pending`] nor taken by [`PendingStore::claim_orphans`]: the instance holding
/// their channel's lease claims them ([`PostgresStore::claim_fleet_channel`]).
#[async_trait]
impl PendingStore for PostgresStore {
    fn instance(&self) -> &str {
        &self.instance
    }

    async fn record(&self, q: &PendingQuestion) -> Result<Recorded, StoreError> {
        const WHAT: &str = "record pending question";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS})
                 VALUES ({PENDING_INSERT_VALUES}) ON CONFLICT (interaction_id) DO NOTHING"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, Some(&self.instance), 0, false);
        let written = client
            .execute(&statement, &values.params())
            .await
            .map_err(failed(WHAT))?;
        Ok(if written == 1 {
            Recorded::Mine(0)
        } else {
            Recorded::Existing
        })
    }

    async fn adopt(&self, q: &PendingQuestion) -> Result<Option<Fence>, StoreError> {
        const WHAT: &str = "take over a pending question";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS})
                 VALUES ({PENDING_INSERT_VALUES})
                 ON CONFLICT (interaction_id) DO UPDATE
                     SET owner = EXCLUDED.owner,
                         fence = CASE WHEN pending_questions.owner IS NOT DISTINCT FROM EXCLUDED.owner
                                 THEN pending_questions.fence
                                 ELSE pending_questions.fence + 1 END
                     WHERE NOT pending_questions.done
                 RETURNING fence"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, Some(&self.instance), 0, false);
        let row = client
            .query_opt(&statement, &values.params())
            .await
            .map_err(failed(WHAT))?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn holds(&self, interaction_id: u64, fence: Fence) -> Result<bool, StoreError> {
        const WHAT: &str = "check a pending question's owner";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(
                "SELECT 1 FROM pending_questions
                 WHERE interaction_id = $1 AND owner = $2 AND fence = $3 AND NOT done",
            )
            .await
            .map_err(failed(WHAT))?;
        let row = client
            .query_opt(
                &statement,
                &[&channel_key(interaction_id), &&*self.instance, &fence],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(row.is_some())
    }

    async fn delivered_parts(
        &self,
        interaction_id: u64,
        parts: u32,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "note delivered parts";
        let client = self.client(WHAT).await?;
        let parts = i32::try_from(parts).unwrap_or(i32::MAX);
        client
            .execute(
                "UPDATE pending_questions SET delivered_parts = $2
                 WHERE interaction_id = $1 AND owner = $3 AND fence = $4 AND NOT done",
                &[
                    &channel_key(interaction_id),
                    &parts,
                    &&*self.instance,
                    &fence,
                ],
            )
            .await
            .map(|n| n == 1)
            .map_err(failed(WHAT))
    }

    async fn follow_ups(
        &self,
        interaction_id: u64,
        ids: &[u64],
        fence: Fence,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "note follow-up messages";
        let client = self.client(WHAT).await?;
        client
            .execute(
                "UPDATE pending_questions SET follow_ups = $2
                 WHERE interaction_id = $1 AND owner = $3 AND fence = $4 AND NOT done",
                &[
                    &channel_key(interaction_id),
                    &crate::store::join_ids(ids),
                    &&*self.instance,
                    &fence,
                ],
            )
            .await
            .map(|n| n == 1)
            .map_err(failed(WHAT))
    }

    async fn finish(&self, q: &PendingQuestion, fence: Option<Fence>) -> Result<bool, StoreError> {
        const WHAT: &str = "finish a pending question";
        let held = if fence.is_some() {
            "pending_questions.owner = EXCLUDED.owner AND pending_questions.fence = EXCLUDED.fence"
        } else {
            "(pending_questions.owner IS NULL OR pending_questions.owner = EXCLUDED.owner)"
        };
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS})
                 VALUES ({PENDING_INSERT_VALUES})
                 ON CONFLICT (interaction_id) DO UPDATE SET done = TRUE, token = ''
                 WHERE {held} AND NOT pending_questions.done"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, Some(&self.instance), fence.unwrap_or(0), true);
        client
            .execute(&statement, &values.params())
            .await
            .map(|n| n == 1)
            .map_err(failed(WHAT))
    }

    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError> {
        const WHAT: &str = "list pending questions";
        let client = self.client(WHAT).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PENDING_COLUMNS} FROM pending_questions WHERE NOT fleet AND NOT done
                     ORDER BY accepted NULLS FIRST, seq"
                ),
                &[],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(rows.iter().map(pending_from_row).collect())
    }

    async fn heartbeat(&self, lease: Duration) -> Result<(), StoreError> {
        const WHAT: &str = "renew the heartbeat";
        let client = self.client(WHAT).await?;
        let lease_ms = lease.as_secs_f64() * 1000.0;
        client
            .execute(
                "INSERT INTO instances (id, expires_at) VALUES ($1, now() + $2 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                &[&&*self.instance, &lease_ms],
            )
            .await
            .map_err(failed(WHAT))?;
        // Upkeep: processes long gone, and tombstones no write can still come for.
        client
            .execute(
                "DELETE FROM instances WHERE expires_at < now() - interval '1 day'",
                &[],
            )
            .await
            .map_err(failed(WHAT))?;
        let before = unix_millis((self.clock)()) - TOMBSTONE_MILLIS;
        client
            .execute(
                "DELETE FROM pending_questions WHERE done AND received_at_ms < $1",
                &[&before],
            )
            .await
            .map(drop)
            .map_err(failed(WHAT))
    }

    async fn leave(&self) -> Result<(), StoreError> {
        const WHAT: &str = "end the heartbeat";
        let client = self.client(WHAT).await?;
        client
            .execute("DELETE FROM instances WHERE id = $1", &[&&*self.instance])
            .await
            .map(drop)
            .map_err(failed(WHAT))
    }

    async fn claim_orphans(
        &self,
        unheld_after: Duration,
        wanted: Wanted,
    ) -> Result<Vec<PendingQuestion>, StoreError> {
        const WHAT: &str = "take over pending questions";
        const ORPHAN: &str = "NOT p.done AND NOT p.fleet AND (p.owner IS NULL OR (p.owner <> $1
            AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = p.owner AND i.expires_at > now())))";
        let client = self.client(WHAT).await?;
        let candidates = client
            .query(
                &format!("SELECT interaction_id, guild_id FROM pending_questions p WHERE {ORPHAN}"),
                &[&&*self.instance],
            )
            .await
            .map_err(failed(WHAT))?;
        let ids: Vec<i64> = candidates
            .iter()
            .filter(|row| wanted(row.get::<_, Option<i64>>(1).map(unkey)))
            .map(|row| row.get(0))
            .collect();
        let mut questions = Vec::new();
        if !ids.is_empty() {
            // The condition again: of processes claiming at once, each row goes to one (the
            // others see it owned by a live process when their update reaches it).
            let taken = client
                .query(
                    &format!(
                        "UPDATE pending_questions p SET owner = $1, fence = p.fence + 1
                         WHERE p.interaction_id = ANY($2) AND {ORPHAN}
                         RETURNING {PENDING_COLUMNS}"
                    ),
                    &[&&*self.instance, &ids],
                )
                .await
                .map_err(failed(WHAT))?;
            questions.extend(taken.iter().map(pending_from_row));
        }
        let unheld_before = unix_millis((self.clock)())
            .saturating_sub(i64::try_from(unheld_after.as_millis()).unwrap_or(i64::MAX));
        let own = client
            .query(
                &format!(
                    "SELECT {PENDING_COLUMNS} FROM pending_questions
                     WHERE owner = $1 AND NOT done AND NOT fleet AND received_at_ms < $2"
                ),
                &[&&*self.instance, &unheld_before],
            )
            .await
            .map_err(failed(WHAT))?;
        questions.extend(
            own.iter()
                .map(pending_from_row)
                .filter(|q| wanted(q.guild_id)),
        );
        Ok(crate::store::in_acceptance_order(questions))
    }
}
