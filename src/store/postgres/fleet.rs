//! The PostgreSQL store's queries for the HTTP fleet's questions: recording one under the
//! fleet's limits and claiming a leased channel's questions.

use zundamon_actors::{ChannelId, StoreError};

use super::pending::{
    insert_values, pending_from_row, PENDING_COLUMNS, PENDING_INSERT_COLUMNS, PENDING_INSERT_VALUES,
};
use super::{failed, PostgresStore};
use crate::store::keys::channel_key;
use crate::store::{Fence, PendingQuestion};

impl PostgresStore {
    /// Records a question taken by an instance of the HTTP fleet: the instance holding the
    /// channel's lease answers it (the insert wakes the listening instances). Refused (`false`)
    /// when the channel already has `max_queued` questions waiting or being answered, or the
    /// fleet `max_pending` (0: no limit for either). Recording an interaction that has a row
    /// already changes nothing and counts as recorded.
    pub async fn record_for_fleet(
        &self,
        q: &PendingQuestion,
        max_queued: usize,
        max_pending: usize,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "record pending question";
        let limit = |n: usize| {
            if n == 0 {
                i64::MAX
            } else {
                i64::try_from(n).unwrap_or(i64::MAX)
            }
        };
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH new AS (
                     INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS}, fleet)
                     SELECT {PENDING_INSERT_VALUES}, TRUE
                     WHERE (SELECT count(*) FROM pending_questions
                            WHERE fleet AND NOT done AND channel_id = $4) < $18
                       AND (SELECT count(*) FROM pending_questions WHERE fleet AND NOT done) < $19
                     ON CONFLICT (interaction_id) DO NOTHING
                     RETURNING 1)
                 SELECT (SELECT count(*) FROM new)
                      + (SELECT count(*) FROM pending_questions WHERE interaction_id = $1)"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, None, 0, false);
        let (max_queued, max_pending) = (limit(max_queued), limit(max_pending));
        let mut params = values.params();
        params.push(&max_queued);
        params.push(&max_pending);
        let found: i64 = client
            .query_one(&statement, &params)
            .await
            .map_err(failed(WHAT))?
            .get(0);
        Ok(found > 0)
    }

    /// Claims `channel`'s fleet questions for this instance with its lease's `token`, oldest
    /// interaction first (interaction ids are time-ordered); nothing unless this instance holds
    /// the lease with that token now. Each question is then held with the token as its fence.
    pub async fn claim_fleet_channel(
        &self,
        channel: ChannelId,
        token: Fence,
    ) -> Result<Vec<PendingQuestion>, StoreError> {
        const WHAT: &str = "claim a channel's questions";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "UPDATE pending_questions SET owner = $2, fence = $3
                 WHERE channel_id = $1 AND fleet AND NOT done
                   AND EXISTS (SELECT 1 FROM channel_leases l WHERE l.channel_id = $1
                       AND l.holder = $2 AND l.token = $3 AND l.expires_at > now())
                 RETURNING {PENDING_COLUMNS}"
            ))
            .await
            .map_err(failed(WHAT))?;
        let rows = client
            .query(
                &statement,
                &[&channel_key(channel), &&*self.instance, &token],
            )
            .await
            .map_err(failed(WHAT))?;
        let mut questions: Vec<PendingQuestion> = rows.iter().map(pending_from_row).collect();
        questions.sort_by_key(|q| q.interaction_id);
        Ok(questions)
    }
}
