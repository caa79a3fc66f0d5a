//! Opening the SQLite store: creating and configuring the file (WAL, busy timeout), the schema
//! migrations in `migrations/sqlite/`, the checks that it can be read and written, and the
//! errors that say what to do when it cannot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, DatabaseName, ErrorCode, OpenFlags};
use thiserror::Error;

/// The schema migrations, in order. `PRAGMA user_version` records how many have been applied, so
/// a migration must never be edited once released: add a new file instead.
pub(super) const MIGRATIONS: &[&str] = crate::store::migrations::SQLITE;

/// How long a statement waits for another connection's lock (a second process, or an operator's
/// `sqlite3` shell) before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Opens the connection, configures it, migrates the schema and proves it can be read and written.
pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreOpenError> {
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
