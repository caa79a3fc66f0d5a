//! The SQLite-backed [`ConversationStore`]: keeps each channel's recent exchanges on disk so
//! conversations survive actor eviction and bot restarts.
//!
//! This module owns the database file through [`SqliteStore`]: pruning exchanges older than the
//! retention period (and old token usage), and the WAL checkpoint on shutdown. Opening and
//! checking the file at startup (failing with an error that names the path and says what to do)
//! and the schema migrations in `migrations/sqlite/` live in [`open`]; the queries in
//! [`conversation`] (windows, trimmed to each channel's newest exchanges), [`pending`] (pending
//! questions) and [`settings`] (model choices, token usage). SQLite calls block, so every one of
//! them runs on tokio's blocking pool.
//!
//! [`ConversationStore`]: zundamon_actors::ConversationStore

mod conversation;
mod open;
mod pending;
mod settings;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection};
use zundamon_actors::StoreError;

use crate::store::{retention_cutoff, unix_secs, Clock};

pub use open::StoreOpenError;

/// Stores exchanges in one SQLite file, shared by every channel actor through one connection.
///
/// One connection is enough: each operation is a few indexed statements, and serializing them
/// avoids `SQLITE_BUSY` between writers of the same process.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// This process's instance id (see [`crate::store::instance_id`]).
    instance: Arc<str>,
    path: PathBuf,
    retention: Duration,
    clock: Clock,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, migrates it and checks it is usable.
    /// Exchanges older than `retention` are neither loaded nor kept.
    ///
    /// Blocks on file I/O: call it at startup, before serving.
    pub fn open(path: &Path, retention: Duration) -> Result<Self, StoreOpenError> {
        Self::open_with_clock(path, retention, Arc::new(SystemTime::now))
    }

    /// Like [`open`](Self::open), reading the current time from `clock` (for tests).
    pub fn open_with_clock(
        path: &Path,
        retention: Duration,
        clock: Clock,
    ) -> Result<Self, StoreOpenError> {
        let conn = open::open_connection(path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            instance: crate::store::instance_id().into(),
            path: path.to_owned(),
            retention,
            clock,
        })
    }

    /// The same store acting for instance `id` (tests: two processes on one file).
    pub fn with_instance(mut self, id: &str) -> Self {
        self.instance = id.into();
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the exchanges older than the retention period and the token usage of days more
    /// than a week ago; returns how many rows went.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = self.cutoff();
        let cutoff_day = crate::store::usage::cutoff_day(&self.clock);
        self.with_conn("prune", move |conn| {
            let exchanges = conn
                .prepare_cached("DELETE FROM exchanges WHERE created_at < ?1")?
                .execute(params![cutoff])?;
            let usage = conn
                .prepare_cached("DELETE FROM token_usage WHERE day < ?1")?
                .execute(params![cutoff_day])?;
            Ok(exchanges + usage)
        })
        .await
    }

    /// Moves everything in the write-ahead log into the database file and truncates the log,
    /// so the file alone holds the data (e.g. for a backup copy).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (busy, log_frames, checkpointed) = self
            .with_conn("checkpoint", |conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
            })
            .await?;
        if busy != 0 {
            // Another connection is reading; SQLite will finish the checkpoint later, and the WAL
            // is replayed on the next open either way, so nothing is lost.
            tracing::warn!(
                log_frames,
                checkpointed,
                "WAL checkpoint could not complete"
            );
        }
        Ok(())
    }

    /// Prepares for shutdown: refreshes the query planner's statistics and flushes the WAL.
    /// The store stays usable; a write after this lands in the WAL and is kept.
    pub async fn close(&self) -> Result<(), StoreError> {
        // Recommended by SQLite before closing a long-lived connection; cheap when nothing changed.
        self.with_conn("optimize", |conn| conn.execute_batch("PRAGMA optimize"))
            .await?;
        self.flush().await?;
        tracing::info!(path = %self.path.display(), "conversation store flushed");
        Ok(())
    }

    fn now(&self) -> i64 {
        unix_secs(&self.clock)
    }

    fn cutoff(&self) -> i64 {
        retention_cutoff(&self.clock, self.retention)
    }

    /// Runs `work` on the blocking pool with the connection. The mutex is taken and released
    /// inside the blocking task, so it is never held across an `.await`.
    async fn with_conn<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let result = tokio::task::spawn_blocking(move || {
            // A panic mid-operation cannot leave a half-written change behind: rusqlite rolls an
            // open transaction back when it is dropped during unwinding. So a poisoned lock still
            // guards a consistent connection.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut conn)
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError(format!("{what} failed: {err}"))),
            Err(err) => Err(StoreError(format!("{what} did not finish: {err}"))),
        }
    }
}

#[cfg(test)]
mod tests;
