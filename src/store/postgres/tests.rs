//! The PostgreSQL store against a real server (`ZUNDA_TEST_DATABASE_URL`): the shared suite,
//! migrations, retention, errors and TLS. Each test runs in a schema of its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;
use zundamon_actors::{ConversationStore, Exchange};

use super::*;
use crate::config::Secret;
use crate::store::suite;
use crate::store::Clock;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A store in a fresh schema of the test database (dropped at the end), or `None` with a
/// line saying the test was skipped when `ZUNDA_TEST_DATABASE_URL` is unset.
pub(crate) struct TestDb {
    pub store: PostgresStore,
    admin: tokio_postgres::Client,
    pub schema: String,
    pub config: tokio_postgres::Config,
}

impl TestDb {
    pub async fn new(test: &str) -> Option<Self> {
        Self::with_clock(test, Arc::new(SystemTime::now)).await
    }

    pub async fn with_clock(test: &str, clock: Clock) -> Option<Self> {
        let Ok(url) = std::env::var("ZUNDA_TEST_DATABASE_URL") else {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED store::postgres::{test}: ZUNDA_TEST_DATABASE_URL is not set (no PostgreSQL)"
            );
            return None;
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "zt_store_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let base: tokio_postgres::Config = url.parse().expect("ZUNDA_TEST_DATABASE_URL");
        let (admin, connection) = base.connect(NoTls).await.expect("connect to PostgreSQL");
        tokio::spawn(connection);
        drop_orphaned_schemas(&admin).await;
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        let mut config = base.clone();
        config.options(format!("-c search_path={schema}"));
        let store = PostgresStore::open_config(config.clone(), "test", 4, 30 * DAY, clock)
            .await
            .unwrap();
        Some(Self {
            store,
            admin,
            schema,
            config,
        })
    }

    pub async fn drop_schema(self) {
        self.store.close();
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.admin
            .query_one(
                &format!("SELECT count(*) FROM {}.{table}", self.schema),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

fn ex(n: usize) -> Exchange {
    Exchange::new(format!("question {n}"), format!("answer {n}"))
}

#[tokio::test]
async fn suite_appends_are_idempotent_by_exchange_id() {
    let Some(db) = TestDb::new("suite_appends_are_idempotent_by_exchange_id").await else {
        return;
    };
    suite::appends_are_idempotent_by_exchange_id(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_clear_forgets_one_channel() {
    let Some(db) = TestDb::new("suite_clear_forgets_one_channel").await else {
        return;
    };
    suite::clear_forgets_one_channel(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_pending_questions_round_trip_in_acceptance_order() {
    let Some(db) = TestDb::new("suite_pending_questions_round_trip_in_acceptance_order").await
    else {
        return;
    };
    suite::pending_questions_round_trip_in_acceptance_order(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_a_late_record_cannot_resurrect_a_finished_question() {
    let Some(db) = TestDb::new("suite_a_late_record_cannot_resurrect_a_finished_question").await
    else {
        return;
    };
    suite::a_late_record_cannot_resurrect_a_finished_question(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_questions_belong_to_their_owner_until_its_heartbeat_lapses() {
    let Some(db) =
        TestDb::new("suite_questions_belong_to_their_owner_until_its_heartbeat_lapses").await
    else {
        return;
    };
    let a = db.store.clone().with_instance("a");
    let b = db.store.clone().with_instance("b");
    suite::questions_belong_to_their_owner_until_its_heartbeat_lapses(
        &a,
        &b,
        Duration::from_millis(700),
    )
    .await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_round_trip_keeps_text_and_order() {
    let Some(db) = TestDb::new("suite_round_trip_keeps_text_and_order").await else {
        return;
    };
    suite::round_trip_keeps_text_and_order(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_load_returns_the_newest_limit_oldest_first() {
    let Some(db) = TestDb::new("suite_load_returns_the_newest_limit_oldest_first").await else {
        return;
    };
    suite::load_returns_the_newest_limit_oldest_first(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_append_trims_each_channel_to_keep() {
    let Some(db) = TestDb::new("suite_append_trims_each_channel_to_keep").await else {
        return;
    };
    suite::append_trims_each_channel_to_keep(&db.store).await;
    assert_eq!(db.count("exchanges").await, 3 + 1 + 2, "trimmed rows go");
    db.drop_schema().await;
}

#[tokio::test]
async fn suite_channel_ids_use_the_full_u64_range() {
    let Some(db) = TestDb::new("suite_channel_ids_use_the_full_u64_range").await else {
        return;
    };
    suite::channel_ids_use_the_full_u64_range(&db.store).await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_concurrent_appends_are_all_saved_and_atomic() {
    let Some(db) = TestDb::new("suite_concurrent_appends_are_all_saved_and_atomic").await else {
        return;
    };
    suite::concurrent_appends_are_all_saved_and_atomic(Arc::new(db.store.clone())).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn data_survives_a_reopen_and_migrations_run_once() {
    let Some(db) = TestDb::new("data_survives_a_reopen_and_migrations_run_once").await else {
        return;
    };
    db.store.append(42, &[ex(1), ex(2)], 5).await.unwrap();
    // Two processes starting together: both open, one migrates.
    let (a, b) = tokio::join!(
        PostgresStore::open_config(db.config.clone(), "test", 2, DAY, Arc::new(SystemTime::now)),
        PostgresStore::open_config(db.config.clone(), "test", 2, DAY, Arc::new(SystemTime::now)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.load(42, 5).await.unwrap(), vec![ex(1), ex(2)]);
    b.append(42, &[ex(3)], 5).await.unwrap();
    assert_eq!(a.load(42, 5).await.unwrap(), vec![ex(1), ex(2), ex(3)]);
    assert_eq!(
        db.count("zundamon_schema").await,
        super::super::migrations::POSTGRES.len() as i64
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn a_schema_from_a_newer_build_is_refused() {
    let Some(db) = TestDb::new("a_schema_from_a_newer_build_is_refused").await else {
        return;
    };
    db.admin
        .batch_execute(&format!(
            "INSERT INTO {}.zundamon_schema (version) VALUES (99)",
            db.schema
        ))
        .await
        .unwrap();
    let err =
        PostgresStore::open_config(db.config.clone(), "test", 1, DAY, Arc::new(SystemTime::now))
            .await
            .unwrap_err();
    assert!(
        matches!(err, PostgresOpenError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn expired_exchanges_are_hidden_then_pruned() {
    let secs = Arc::new(AtomicU64::new(1_700_000_000));
    let clock: Clock = {
        let secs = Arc::clone(&secs);
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst)))
    };
    let Some(db) = TestDb::with_clock("expired_exchanges_are_hidden_then_pruned", clock).await
    else {
        return;
    };
    // The test store keeps 30 days.
    db.store.append(1, &[ex(1), ex(2)], 10).await.unwrap();
    secs.fetch_add(20 * DAY.as_secs(), Ordering::SeqCst);
    db.store.append(1, &[ex(3)], 10).await.unwrap();
    assert_eq!(db.store.prune().await.unwrap(), 0);
    secs.fetch_add(11 * DAY.as_secs(), Ordering::SeqCst);
    assert_eq!(db.store.load(1, 10).await.unwrap(), vec![ex(3)]);
    assert_eq!(db.store.prune().await.unwrap(), 2);
    assert_eq!(db.store.prune().await.unwrap(), 0);
    db.drop_schema().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_with_a_clear_error_without_the_password() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = Secret::new(format!(
        "postgres://zunda:hunter2@127.0.0.1:{port}/zundamon"
    ));
    let err = PostgresStore::open(&url, 1, DAY).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PostgresOpenError::Connect { .. }), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("ZUNDA_DATABASE_URL"), "{text}");
}

#[test]
fn a_malformed_url_is_refused() {
    let err = parse_url(&Secret::new("postgres://a:b@host:notaport/db")).unwrap_err();
    assert!(err.to_string().contains("ZUNDA_DATABASE_URL"), "{err}");
    assert!(!err.to_string().contains(":b@"), "{err}");
}

#[tokio::test]
async fn sslmode_require_encrypts_and_checks_the_certificate() {
    let Ok(url) = std::env::var("ZUNDA_TEST_DATABASE_URL") else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED store::postgres::sslmode_require_encrypts_and_checks_the_certificate: ZUNDA_TEST_DATABASE_URL is not set (no PostgreSQL)"
        );
        return;
    };
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    assert!(tls_for(&config).is_none(), "plain unless required");
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    assert!(tls_for(&config).is_some());
    let opened =
        PostgresStore::open_config(config, "test", 1, DAY, Arc::new(SystemTime::now)).await;
    match opened {
        // A server with a certificate this machine trusts: the store works over TLS.
        Ok(store) => {
            let client = store.client("check").await.unwrap();
            let ssl: bool = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(ssl, "the connection is encrypted");
        }
        // The local test server's self-signed certificate is refused, or it has no TLS:
        // never a silent fall-back to a plain connection.
        Err(err) => {
            let text = err.to_string();
            eprintln!("sslmode=require: {text}");
            assert!(
                text.contains("certificate") || text.contains("TLS") || text.contains("SSL"),
                "{text}"
            );
        }
    }
}

/// Drops the test schemas left behind by test processes that are gone (a test that panicked
/// never reached its cleanup). Schemas are named `zt_<kind>_<pid>_<n>`.
async fn drop_orphaned_schemas(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE 'zt\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let schema: String = row.get(0);
        let pid = schema
            .split('_')
            .nth(2)
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if pid.is_some() && !alive {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        }
    }
}

mod settings;
