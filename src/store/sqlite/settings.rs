//! The SQLite store's settings: the model chosen for each channel or thread, each user's token
//! usage per day (added in one statement, so concurrent questions all count), and reading both
//! for `zundamon store copy`.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use zundamon_actors::StoreError;

use super::SqliteStore;
use crate::store::copy::{StoredChoice, StoredUsage};
use crate::store::keys::{channel_key, unkey};
use crate::store::usage::{check_day, tokens_from, tokens_key};
use crate::store::{unix_millis, SettingsStore};

impl SqliteStore {
    /// Every model choice, by place (for `zundamon store copy`).
    pub async fn dump_model_choices(&self) -> Result<Vec<StoredChoice>, StoreError> {
        self.with_conn("read every model choice", |conn| {
            let mut select = conn.prepare(
                "SELECT place_id, model, updated_at_ms FROM model_choices ORDER BY place_id",
            )?;
            let rows = select.query_map([], |row| {
                Ok(StoredChoice {
                    place_id: unkey(row.get(0)?),
                    model: row.get(1)?,
                    updated_at_ms: row.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Every user's token usage, day by day (for `zundamon store copy`).
    pub async fn dump_token_usage(&self) -> Result<Vec<StoredUsage>, StoreError> {
        self.with_conn("read all token usage", |conn| {
            let mut select =
                conn.prepare("SELECT user_id, day, tokens FROM token_usage ORDER BY day, user_id")?;
            let rows = select.query_map([], |row| {
                Ok(StoredUsage {
                    user_id: unkey(row.get(0)?),
                    day: row.get(1)?,
                    tokens: tokens_from(row.get(2)?),
                })
            })?;
            rows.collect()
        })
        .await
    }
}

#[async_trait]
impl SettingsStore for SqliteStore {
    async fn model_choice(&self, place_id: u64) -> Result<Option<String>, StoreError> {
        let place = channel_key(place_id);
        self.with_conn("read a model choice", move |conn| {
            conn.prepare_cached("SELECT model FROM model_choices WHERE place_id = ?1")?
                .query_row(params![place], |row| row.get(0))
                .optional()
        })
        .await
    }

    async fn set_model_choice(&self, place_id: u64, model: Option<&str>) -> Result<(), StoreError> {
        let place = channel_key(place_id);
        let Some(model) = model.map(str::to_owned) else {
            return self
                .with_conn("remove a model choice", move |conn| {
                    conn.prepare_cached("DELETE FROM model_choices WHERE place_id = ?1")?
                        .execute(params![place])
                        .map(drop)
                })
                .await;
        };
        let now = unix_millis((self.clock)());
        self.with_conn("set a model choice", move |conn| {
            conn.prepare_cached(
                "INSERT INTO model_choices (place_id, model, updated_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (place_id) DO UPDATE
                     SET model = excluded.model, updated_at_ms = excluded.updated_at_ms",
            )?
            .execute(params![place, model, now])
            .map(drop)
        })
        .await
    }

    async fn add_tokens(&self, user_id: u64, day: &str, tokens: u64) -> Result<u64, StoreError> {
        check_day(day)?;
        let (user, day, tokens) = (channel_key(user_id), day.to_owned(), tokens_key(tokens));
        // One statement takes the write lock for its whole read-add-write, so another connection
        // (another process on the file) adding at the same time waits for it and adds to its sum.
        self.with_conn("add token usage", move |conn| {
            conn.prepare_cached(
                "INSERT INTO token_usage (user_id, day, tokens) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, day) DO UPDATE
                     SET tokens = token_usage.tokens + excluded.tokens
                 RETURNING tokens",
            )?
            .query_row(params![user, day, tokens], |row| row.get(0))
            .map(tokens_from)
        })
        .await
    }

    async fn tokens_used(&self, user_id: u64, day: &str) -> Result<u64, StoreError> {
        let (user, day) = (channel_key(user_id), day.to_owned());
        self.with_conn("read token usage", move |conn| {
            conn.prepare_cached("SELECT tokens FROM token_usage WHERE user_id = ?1 AND day = ?2")?
                .query_row(params![user, day], |row| row.get(0))
                .optional()
                .map(|tokens| tokens.map_or(0, tokens_from))
        })
        .await
    }

    async fn tokens_on(&self, day: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        let day = day.to_owned();
        self.with_conn("read a day's token usage", move |conn| {
            let mut select =
                conn.prepare_cached("SELECT user_id, tokens FROM token_usage WHERE day = ?1")?;
            let rows = select.query_map(params![day], |row| {
                Ok((unkey(row.get(0)?), tokens_from(row.get(1)?)))
            })?;
            // Sorted here: the stored (signed) keys put ids past 2^63 first.
            let mut users = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            users.sort_unstable();
            Ok(users)
        })
        .await
    }
}
