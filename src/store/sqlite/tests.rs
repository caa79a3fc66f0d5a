//! The SQLite store against files in the system temp dir: the shared suite, restarts, WAL,
//! retention, and the errors for files that cannot be used.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use zundamon_actors::{ConversationStore, Exchange};

use super::open::{BUSY_TIMEOUT, MIGRATIONS};
use super::{SqliteStore, StoreOpenError};
use crate::store::Clock;

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
        Arc::new(move || std::time::UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst)))
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
    crate::store::suite::concurrent_appends_are_all_saved_and_atomic(Arc::new(open(&dir))).await;
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

mod settings;
