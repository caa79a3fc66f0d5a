//! The PostgreSQL store's settings: the model chosen for each channel or thread, each user's token
//! usage per day (added in one statement, so every process adding at once counts), and importing
//! both for `zundamon store copy`.

use async_trait::async_trait;
use zundamon_actors::StoreError;

use super::{failed, PostgresStore};
use crate::store::copy::{StoredChoice, StoredUsage};
use crate::store::keys::{channel_key, unkey};
use crate::store::usage::{check_day, tokens_from, tokens_key};
use crate::store::{unix_millis, SettingsStore};

impl PostgresStore {
    /// Writes one copied model choice unless the place has one set at the same time or later;
    /// true if it was written.
    pub async fn import_model_choice(&self, choice: &StoredChoice) -> Result<bool, StoreError> {
        const WHAT: &str = "copy a model choice";
        let client = self.client(WHAT).await?;
        let written = client
            .execute(
                "INSERT INTO model_choices (place_id, model, updated_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (place_id) DO UPDATE
                     SET model = excluded.model, updated_at_ms = excluded.updated_at_ms
                     WHERE model_choices.updated_at_ms < excluded.updated_at_ms",
                &[
                    &channel_key(choice.place_id),
                    &choice.model,
                    &choice.updated_at_ms,
                ],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(written == 1)
    }

    /// Writes one copied day of a user's token usage, keeping the larger count if the day is
    /// there already (a copy run again adds nothing twice); true if it changed anything.
    pub async fn import_token_usage(&self, usage: &StoredUsage) -> Result<bool, StoreError> {
        const WHAT: &str = "copy token usage";
        check_day(&usage.day)?;
        let client = self.client(WHAT).await?;
        let written = client
            .execute(
                "INSERT INTO token_usage (user_id, day, tokens) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, day) DO UPDATE SET tokens = excluded.tokens
                     WHERE token_usage.tokens < excluded.tokens",
                &[
                    &channel_key(usage.user_id),
                    &usage.day,
                    &tokens_key(usage.tokens),
                ],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(written == 1)
    }
}

#[async_trait]
impl SettingsStore for PostgresStore {
    async fn model_choice(&self, place_id: u64) -> Result<Option<String>, StoreError> {
        const WHAT: &str = "read a model choice";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached("SELECT model FROM model_choices WHERE place_id = $1")
            .await
            .map_err(failed(WHAT))?;
        let row = client
            .query_opt(&statement, &[&channel_key(place_id)])
            .await
            .map_err(failed(WHAT))?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn set_model_choice(&self, place_id: u64, model: Option<&str>) -> Result<(), StoreError> {
        let place = channel_key(place_id);
        let Some(model) = model else {
            const WHAT: &str = "remove a model choice";
            let client = self.client(WHAT).await?;
            client
                .execute("DELETE FROM model_choices WHERE place_id = $1", &[&place])
                .await
                .map_err(failed(WHAT))?;
            return Ok(());
        };
        const WHAT: &str = "set a model choice";
        let now = unix_millis((self.clock)());
        let client = self.client(WHAT).await?;
        client
            .execute(
                "INSERT INTO model_choices (place_id, model, updated_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (place_id) DO UPDATE
                     SET model = excluded.model, updated_at_ms = excluded.updated_at_ms",
                &[&place, &model, &now],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(())
    }

    async fn add_tokens(&self, user_id: u64, day: &str, tokens: u64) -> Result<u64, StoreError> {
        const WHAT: &str = "add token usage";
        check_day(day)?;
        let client = self.client(WHAT).await?;
        // The conflicting insert locks the row and adds to the committed count, so two
        // processes adding to one user's day at once both count, whichever inserts first.
        let statement = client
            .prepare_cached(
                "INSERT INTO token_usage (user_id, day, tokens) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, day) DO UPDATE
                     SET tokens = token_usage.tokens + excluded.tokens
                 RETURNING tokens",
            )
            .await
            .map_err(failed(WHAT))?;
        let row = client
            .query_one(
                &statement,
                &[&channel_key(user_id), &day, &tokens_key(tokens)],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(tokens_from(row.get(0)))
    }

    async fn tokens_used(&self, user_id: u64, day: &str) -> Result<u64, StoreError> {
        const WHAT: &str = "read token usage";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached("SELECT tokens FROM token_usage WHERE user_id = $1 AND day = $2")
            .await
            .map_err(failed(WHAT))?;
        let row = client
            .query_opt(&statement, &[&channel_key(user_id), &day])
            .await
            .map_err(failed(WHAT))?;
        Ok(row.map_or(0, |row| tokens_from(row.get(0))))
    }

    async fn tokens_on(&self, day: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        const WHAT: &str = "read a day's token usage";
        let client = self.client(WHAT).await?;
        let rows = client
            .query(
                "SELECT user_id, tokens FROM token_usage WHERE day = $1",
                &[&day],
            )
            .await
            .map_err(failed(WHAT))?;
        // Sorted here: the stored (signed) keys put ids past 2^63 first.
        let mut users: Vec<_> = rows
            .iter()
            .map(|row| (unkey(row.get(0)), tokens_from(row.get(1))))
            .collect();
        users.sort_unstable();
        Ok(users)
    }
}
