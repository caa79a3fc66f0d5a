//! The SQLite-backed [`ConversationStore`]: keeps each channel's recent exchanges on disk so
//! conversations survive actor eviction and bot restarts.
//!
//! This module owns the database file: opening and checking it at startup (failing with an error
//! that names the path and says what to do), the schema migrations in `migrations/sqlite/`, trimming each
//! channel to its newest exchanges, pruning exchanges older than the retention period, and the WAL
//! checkpoint on shutdown. SQLite calls block, so every one of them runs on tokio's blocking pool.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rusqlite::{params, Connection, DatabaseName, ErrorCode, OpenFlags};
use thiserror::Error;
use zundamon_actors::{ChannelId, ConversationStore, Exchange, StoreError};

use super::keys::{channel_key, unkey};
use super::{
    from_unix_millis, retention_cutoff, unix_millis, unix_secs, Clock, Fence, PendingQuestion,
    PendingStore, Recorded, Wanted,
};
use crate::config::Secret;

/// The schema migrations, in order. `PRAGMA user_version` records how many have been applied, so
/// a migration must never be edited once released: add a new file instead.
const MIGRATIONS: &[&str] = super::migrations::SQLITE;

/// How long a statement waits for another connection's lock (a second process, or an operator's
/// `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store could not be opened. Every message names the path and says what to do.
#[derive(Debug, Error)]
pub enum StoreOpenError {
    #[error("cannot open conversation store at {}: cannot create its directory {}: {source} — create it writable by the bot's user, or set ZUNDA_DB_PATH", .path.display(), .dir.display())]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open conversation store at {}: it is a directory — set ZUNDA_DB_PATH to a file inside it, e.g. {}", .path.display(), .path.join("zundamon.db").display())]
    IsDirectory { path: PathBuf },
    #[error("cannot open conversation store at {}: file is not a database — move it away or set ZUNDA_DB_PATH", .path.display())]
    NotADatabase { path: PathBuf },
    #[error("cannot open conversation store at {}: the database is corrupt ({detail}) — move it away together with its -wal and -shm files, or set ZUNDA_DB_PATH", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot open conversation store at {}: it is read-only — make the file and its directory writable by the bot's user, or set ZUNDA_DB_PATH", .path.display())]
    ReadOnly { path: PathBuf },
    #[error("cannot open conversation store at {}: it is locked by another process — stop the other process using it, or set ZUNDA_DB_PATH", .path.display())]
    Locked { path: PathBuf },
    #[error("cannot open conversation store at {}: its schema version {found} is newer than this build knows ({known}) — run a newer zundamon, or set ZUNDA_DB_PATH", .path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("cannot open conversation store at {}: {source} — check that the file and its directory are writable by the bot's user, or set ZUNDA_DB_PATH", .path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl StoreOpenError {
    /// Turns a SQLite failure during open into the variant that tells the operator what to do.
    fn from_sqlite(path: &Path, err: rusqlite::Error) -> Self {
        let path = path.to_owned();
        match err.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Self::NotADatabase { path },
            Some(ErrorCode::DatabaseCorrupt) => Self::Corrupt {
                path,
                detail: err.to_string(),
            },
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => Self::ReadOnly { path },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Locked { path },
            _ => Self::Sqlite { path, source: err },
        }
    }
}

/// Stores exchanges in one SQLite file, shared by every channel actor through one connection.
///
/// One connection is enough: each operation is a few indexed statements, and serializing them
/// avoids `SQLITE_BUSY` between writers of the same process.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// This process's instance id (see [`super::instance_id`]).
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
        let conn = open_connection(path)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            instance: super::instance_id().into(),
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

    /// Deletes the exchanges older than the retention period; returns how many.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = self.cutoff();
        self.with_conn("prune", move |conn| {
            conn.prepare_cached("DELETE FROM exchanges WHERE created_at < ?1")?
                .execute(params![cutoff])
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

    /// Every stored exchange with its channel and age, channel by channel, oldest first (for
    /// `zundamon store copy`).
    pub async fn dump(&self) -> Result<Vec<super::copy::StoredExchange>, StoreError> {
        self.with_conn("read every exchange", |conn| {
            let mut select = conn.prepare(
                "SELECT channel_id, question, answer, exchange_id, created_at FROM exchanges
                 ORDER BY channel_id, id",
            )?;
            let rows = select.query_map([], |row| {
                Ok(super::copy::StoredExchange {
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

/// The columns of a pending question, in the order [`pending_from_row`] reads them.
const PENDING_COLUMNS: &str = "interaction_id, application_id, token, channel_id, guild_id,
    user_id, user_name, question, received_at_ms, delivered_parts, accepted, follow_ups, fence";

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
        follow_ups: super::split_ids(&row.get::<_, String>(11)?),
        fence: row.get(12)?,
    })
}

/// The values of a new row for `q` owned by `owner` (`?1`…`?15`, as [`INSERT_PENDING`] names
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
        Value::Text(super::join_ids(&q.follow_ups)),
        Value::Text(owner.to_owned()),
        Value::Integer(fence),
        Value::Integer(i64::from(done)),
    ]
}

/// Inserts a pending row from [`insert_values`]; the caller appends its conflict clause.
const INSERT_PENDING: &str = "INSERT INTO pending_questions (interaction_id, application_id, token,
     channel_id, guild_id, user_id, user_name, question, received_at_ms, delivered_parts,
     accepted, follow_ups, owner, fence, done)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

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
            super::join_ids(ids),
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
        Ok(super::in_acceptance_order(claimed))
    }
}

/// Opens the connection, configures it, migrates the schema and proves it can be read and written.
fn open_connection(path: &Path) -> Result<Connection, StoreOpenError> {
    // SQLite reports a directory only as "unable to open database file"; say what is wrong.
    if path.is_dir() {
        return Err(StoreOpenError::IsDirectory {
            path: path.to_owned(),
        });
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreOpenError::CreateDir {
            path: path.to_owned(),
            dir: dir.to_owned(),
            source,
        })?;
    }
    let sqlite = |err| StoreOpenError::from_sqlite(path, err);

    // No SQLITE_OPEN_URI: the configured path is a file name, never a `file:` URI with options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;

    // The first statement reads the header, so a file that is not a database fails here.
    let journal: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite)?;
    if !journal.eq_ignore_ascii_case("wal") {
        // Some file systems (e.g. network mounts) cannot share memory for the WAL index; the
        // rollback journal still works, just with readers waiting for writers.
        tracing::warn!(path = %path.display(), journal, "SQLite WAL mode unavailable");
    }
    // With WAL, NORMAL cannot corrupt the database; a power cut may lose the last few exchanges,
    // which is a fair price for not syncing on every answer.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;

    // SQLite silently falls back to read-only when the OS refuses writes; every answer would then
    // fail to save, so refuse to start instead.
    if conn.is_readonly(DatabaseName::Main).map_err(sqlite)? {
        return Err(StoreOpenError::ReadOnly {
            path: path.to_owned(),
        });
    }

    let version = migrate(&mut conn, path)?;
    verify(&conn, path)?;
    tracing::info!(path = %path.display(), schema_version = version, journal, "conversation store open");
    Ok(conn)
}

/// Applies the migrations not yet recorded in `user_version`, each in its own transaction
/// together with the version bump, so a crash mid-migration leaves the previous version intact.
/// Returns the schema version.
fn migrate(conn: &mut Connection, path: &Path) -> Result<usize, StoreOpenError> {
    let sqlite = |err| StoreOpenError::from_sqlite(path, err);
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    let applied = usize::try_from(found)
        .ok()
        .filter(|&applied| applied <= MIGRATIONS.len())
        .ok_or_else(|| StoreOpenError::TooNew {
            path: path.to_owned(),
            found,
            known: MIGRATIONS.len(),
        })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = index + 1;
        let tx = conn.transaction().map_err(sqlite)?;
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        tracing::info!(path = %path.display(), version, "applied conversation store migration");
    }
    Ok(MIGRATIONS.len())
}

/// Fails now, with a clear error, on what would otherwise fail on the first answer: a damaged
/// file, or a lock held by another process.
fn verify(conn: &Connection, path: &Path) -> Result<(), StoreOpenError> {
    let sqlite = |err| StoreOpenError::from_sqlite(path, err);
    // The store is small (a few exchanges per channel), so a full quick_check costs little.
    let check: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(sqlite)?;
    if check != "ok" {
        return Err(StoreOpenError::Corrupt {
            path: path.to_owned(),
            detail: check,
        });
    }
    // Taking the write lock proves the file, its WAL and its directory are writable now.
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(sqlite)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let unique = format!(
                "zunda-store-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(unique);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("zundamon.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A clock the test moves by hand, in unix seconds.
    #[derive(Clone)]
    struct FakeClock(Arc<AtomicU64>);

    impl FakeClock {
        fn at(secs: u64) -> Self {
            Self(Arc::new(AtomicU64::new(secs)))
        }

        fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
        }

        fn clock(&self) -> Clock {
            let secs = Arc::clone(&self.0);
            Arc::new(move || {
                std::time::UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst))
            })
        }
    }

    fn ex(n: usize) -> Exchange {
        Exchange::new(format!("question {n}"), format!("answer {n}"))
    }

    fn open(dir: &TempDir) -> SqliteStore {
        SqliteStore::open(&dir.db(), 30 * DAY).unwrap()
    }

    #[tokio::test]
    async fn suite_appends_are_idempotent_by_exchange_id() {
        let dir = TempDir::new("suite-idempotent");
        crate::store::suite::appends_are_idempotent_by_exchange_id(&open(&dir)).await;
    }

    #[tokio::test]
    async fn suite_clear_forgets_one_channel() {
        let dir = TempDir::new("suite-clear");
        crate::store::suite::clear_forgets_one_channel(&open(&dir)).await;
    }

    #[tokio::test]
    async fn suite_pending_questions_round_trip_in_acceptance_order() {
        let dir = TempDir::new("suite-pending");
        crate::store::suite::pending_questions_round_trip_in_acceptance_order(&open(&dir)).await;
    }

    #[tokio::test]
    async fn suite_a_late_record_cannot_resurrect_a_finished_question() {
        let dir = TempDir::new("suite-tombstone");
        crate::store::suite::a_late_record_cannot_resurrect_a_finished_question(&open(&dir)).await;
    }

    #[tokio::test]
    async fn suite_questions_belong_to_their_owner_until_its_heartbeat_lapses() {
        let dir = TempDir::new("suite-owners");
        let a = open(&dir).with_instance("a");
        let b = open(&dir).with_instance("b");
        crate::store::suite::questions_belong_to_their_owner_until_its_heartbeat_lapses(
            &a,
            &b,
            Duration::from_millis(700),
        )
        .await;
    }

    #[tokio::test]
    async fn suite_round_trip_keeps_text_and_order() {
        let dir = TempDir::new("round-trip");
        crate::store::suite::round_trip_keeps_text_and_order(&open(&dir)).await;
    }

    #[tokio::test]
    async fn suite_load_returns_the_newest_limit_oldest_first() {
        let dir = TempDir::new("limit");
        crate::store::suite::load_returns_the_newest_limit_oldest_first(&open(&dir)).await;
    }

    #[tokio::test]
    async fn suite_append_trims_each_channel_to_keep() {
        let dir = TempDir::new("keep");
        let store = open(&dir);
        crate::store::suite::append_trims_each_channel_to_keep(&store).await;
        let rows: i64 = store
            .with_conn("count", |c| {
                c.query_row("SELECT count(*) FROM exchanges", [], |r| r.get(0))
            })
            .await
            .unwrap();
        assert_eq!(rows, 3 + 1 + 2, "trimmed rows are deleted, not just hidden");
    }

    #[tokio::test]
    async fn suite_channel_ids_use_the_full_u64_range() {
        let dir = TempDir::new("snowflake");
        let store = open(&dir);
        crate::store::suite::channel_ids_use_the_full_u64_range(&store).await;
        let stored: i64 = store
            .with_conn("raw", move |c| {
                c.query_row(
                    "SELECT channel_id FROM exchanges ORDER BY id LIMIT 1",
                    [],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(
            stored, 1_234_567_890_123_456_789_i64,
            "snowflakes are stored as-is"
        );
    }

    #[tokio::test]
    async fn data_survives_a_restart() {
        let dir = TempDir::new("restart");
        {
            let store = open(&dir);
            store.append(42, &[ex(1), ex(2)], 5).await.unwrap();
            store.close().await.unwrap();
        }
        {
            // Not closed: the write only reached the WAL, which the next open replays.
            let store = open(&dir);
            assert_eq!(store.load(42, 5).await.unwrap(), vec![ex(1), ex(2)]);
            store.append(42, &[ex(3)], 5).await.unwrap();
        }
        let store = open(&dir);
        assert_eq!(store.load(42, 5).await.unwrap(), vec![ex(1), ex(2), ex(3)]);
        let version: i64 = store
            .with_conn("version", |c| {
                c.pragma_query_value(None, "user_version", |r| r.get(0))
            })
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn flush_empties_the_wal_into_the_database_file() {
        let dir = TempDir::new("flush");
        let store = open(&dir);
        store.append(1, &[ex(1)], 5).await.unwrap();
        let wal = dir.0.join("zundamon.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        store.flush().await.unwrap();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        // Still usable after a flush.
        store.append(1, &[ex(2)], 5).await.unwrap();
        assert_eq!(store.load(1, 5).await.unwrap(), vec![ex(1), ex(2)]);
    }

    #[tokio::test]
    async fn expired_exchanges_are_hidden_then_pruned() {
        let dir = TempDir::new("retention");
        let time = FakeClock::at(1_700_000_000);
        let store = SqliteStore::open_with_clock(&dir.db(), 30 * DAY, time.clock()).unwrap();
        store.append(1, &[ex(1), ex(2)], 10).await.unwrap();
        store.append(2, &[ex(10)], 10).await.unwrap();
        time.advance(20 * DAY);
        store.append(1, &[ex(3)], 10).await.unwrap();
        assert_eq!(
            store.prune().await.unwrap(),
            0,
            "nothing is older than 30 days yet"
        );

        time.advance(11 * DAY);
        // The first batch is now 31 days old: gone from loads even before pruning runs.
        assert_eq!(store.load(1, 10).await.unwrap(), vec![ex(3)]);
        assert!(store.load(2, 10).await.unwrap().is_empty());
        assert_eq!(store.prune().await.unwrap(), 3);
        assert_eq!(store.prune().await.unwrap(), 0);
        assert_eq!(store.load(1, 10).await.unwrap(), vec![ex(3)]);
    }

    #[tokio::test]
    async fn the_pruner_runs_in_the_background() {
        let dir = TempDir::new("pruner");
        let time = FakeClock::at(1_700_000_000);
        let store = Arc::new(SqliteStore::open_with_clock(&dir.db(), DAY, time.clock()).unwrap());
        store.append(1, &[ex(1)], 10).await.unwrap();
        time.advance(2 * DAY);

        let pruner = crate::store::spawn_pruner(Arc::clone(&store) as _, Duration::from_secs(3600));
        let count = || {
            store.with_conn("count", |c| {
                c.query_row("SELECT count(*) FROM exchanges", [], |r| r.get::<_, i64>(0))
            })
        };
        // The first tick is immediate; wait for it without depending on wall-clock speed.
        for _ in 0..500 {
            if count().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(count().await.unwrap(), 0);
        pruner.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_concurrent_appends_are_all_saved_and_atomic() {
        let dir = TempDir::new("concurrent");
        crate::store::suite::concurrent_appends_are_all_saved_and_atomic(Arc::new(open(&dir)))
            .await;
    }

    #[test]
    fn a_missing_directory_is_created() {
        let dir = TempDir::new("mkdir");
        let path = dir.0.join("nested/deeper/zundamon.db");
        SqliteStore::open(&path, DAY).unwrap();
        assert!(path.is_file());
    }

    #[test]
    fn a_file_that_is_not_a_database_fails_with_a_clear_error() {
        let dir = TempDir::new("corrupt");
        let path = dir.db();
        std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
        let err = SqliteStore::open(&path, DAY).unwrap_err();
        assert!(
            matches!(err, StoreOpenError::NotADatabase { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("file is not a database"), "{text}");
        assert!(text.contains("ZUNDA_DB_PATH"), "{text}");
        // The operator's file is left alone.
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("these are my notes"));
    }

    #[test]
    fn a_damaged_database_fails_with_a_clear_error() {
        let dir = TempDir::new("damaged");
        let path = dir.db();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE filler (x TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
                 INSERT INTO filler SELECT hex(randomblob(500)) FROM n;",
            )
            .unwrap();
        }
        // Keep the header valid but scribble over the pages after it.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 8192);
        for byte in &mut bytes[4096..8192] {
            *byte = 0xA5;
        }
        std::fs::write(&path, bytes).unwrap();

        let err = SqliteStore::open(&path, DAY).unwrap_err();
        assert!(matches!(err, StoreOpenError::Corrupt { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("ZUNDA_DB_PATH"),
            "{text}"
        );
    }

    #[test]
    fn a_directory_fails_with_a_clear_error() {
        let dir = TempDir::new("is-dir");
        let err = SqliteStore::open(&dir.0, DAY).unwrap_err();
        assert!(matches!(err, StoreOpenError::IsDirectory { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&dir.0.display().to_string()), "{text}");
        assert!(
            text.contains("is a directory") && text.contains("ZUNDA_DB_PATH"),
            "{text}"
        );
    }

    #[test]
    fn a_parent_that_is_a_file_fails_with_a_clear_error() {
        let dir = TempDir::new("parent-file");
        let blocker = dir.0.join("data");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("zundamon.db");
        let err = SqliteStore::open(&path, DAY).unwrap_err();
        assert!(matches!(err, StoreOpenError::CreateDir { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("ZUNDA_DB_PATH"),
            "{text}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_database_fails_with_a_clear_error() {
        use std::os::unix::fs::PermissionsExt;

        let dir = TempDir::new("read-only");
        let path = dir.db();
        SqliteStore::open(&path, DAY).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
            // Running as root: permissions are not enforced, so there is nothing to test.
            return;
        }
        let err = SqliteStore::open(&path, DAY).unwrap_err();
        assert!(matches!(err, StoreOpenError::ReadOnly { .. }), "{err:?}");
        assert!(err.to_string().contains("ZUNDA_DB_PATH"));
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let dir = TempDir::new("too-new");
        let path = dir.db();
        SqliteStore::open(&path, DAY).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path, DAY).unwrap_err();
        assert!(
            matches!(err, StoreOpenError::TooNew { found: 99, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn the_database_uses_wal_and_normal_sync() {
        let dir = TempDir::new("pragmas");
        let store = open(&dir);
        let conn = store.conn.lock().unwrap();
        let journal: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        let busy: i64 = conn
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(sync, 1, "NORMAL");
        assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
    }
}
