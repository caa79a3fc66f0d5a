//! The PostgreSQL-backed store, chosen by `ZUNDA_DATABASE_URL=postgres://…`: the same windows,
//! pending questions and settings as the SQLite store, shared by every process of the bot that
//! points at the same database (shard ranges, an HTTP fleet, a replacement process).
//!
//! This module owns the [`PostgresStore`] handle and its connection pool (deadpool over
//! tokio-postgres). Opening it, TLS and the migrations in `migrations/postgres/` live in
//! [`open`]; the queries in [`conversation`] (windows), [`pending`] (pending questions),
//! [`fleet`] (the HTTP fleet's questions) and [`settings`] (model choices, token usage). The few extra queries the HTTP fleet needs (per-channel
//! leases, wake-ups) live in [`crate::fleet`] and use [`PostgresStore::pool`].

mod conversation;
mod fleet;
mod open;
mod pending;
mod settings;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use zundamon_actors::StoreError;

use crate::store::{retention_cutoff, unix_secs, Clock};

pub use open::{parse_url, redacted_target, tls_for, PostgresOpenError};

/// Stores windows and pending questions in PostgreSQL through a small connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// This process's instance id (see [`crate::store::instance_id`]).
    instance: Arc<str>,
    target: Arc<str>,
    retention: Duration,
    clock: Clock,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}
impl PostgresStore {
    /// The same store acting for instance `id` (tests: several processes on one database).
    pub fn with_instance(mut self, id: &str) -> Self {
        self.instance = id.into();
        self
    }

    /// The pool, for the fleet's lease and wake-up queries.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The server, without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Deletes the exchanges older than the retention period and the token usage of days more
    /// than a week ago; returns how many rows went.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = self.cutoff();
        let cutoff_day = crate::store::usage::cutoff_day(&self.clock);
        let client = self.client("prune").await?;
        let exchanges = client
            .execute("DELETE FROM exchanges WHERE created_at < $1", &[&cutoff])
            .await
            .map_err(failed("prune"))?;
        let usage = client
            .execute("DELETE FROM token_usage WHERE day < $1", &[&cutoff_day])
            .await
            .map_err(failed("prune"))?;
        Ok(usize::try_from(exchanges + usage).unwrap_or(usize::MAX))
    }

    /// Closes the pool's connections; the data is already committed.
    pub fn close(&self) {
        self.pool.close();
        tracing::info!(target = %self.target, "conversation store closed");
    }

    /// A pooled connection, or a store error naming `what` could not run.
    pub(crate) async fn client(&self, what: &'static str) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|err| StoreError(format!("{what} failed: no database connection: {err}")))
    }

    fn now(&self) -> i64 {
        unix_secs(&self.clock)
    }

    fn cutoff(&self) -> i64 {
        retention_cutoff(&self.clock, self.retention)
    }
}

/// Maps a driver error to a store error naming the operation.
pub(crate) fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |err| StoreError(format!("{what} failed: {err}"))
}

#[cfg(test)]
pub(crate) mod tests;
