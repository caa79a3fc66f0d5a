//! A fresh PostgreSQL schema per test on the server named by `ZUNDA_TEST_DATABASE_URL`, so tests
//! run in parallel on one database. Without the variable a test prints a SKIPPED line and passes.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::NoTls;

pub struct PgSchema {
    /// A URL whose connections use only this schema (for the bot's ZUNDA_DATABASE_URL).
    pub url: String,
    pub schema: String,
    pub client: tokio_postgres::Client,
}

impl PgSchema {
    /// A new empty schema, or `None` (with a SKIPPED line naming `test`) without PostgreSQL.
    pub async fn new(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var("ZUNDA_TEST_DATABASE_URL") else {
            // Straight to stderr: the harness captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: ZUNDA_TEST_DATABASE_URL is not set (no PostgreSQL)"
            );
            return None;
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "zt_e2e_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) = tokio_postgres::connect(&base, NoTls)
            .await
            .expect("connect to ZUNDA_TEST_DATABASE_URL");
        tokio::spawn(connection);
        drop_orphaned_schemas(&client).await;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        Some(Self {
            url,
            schema,
            client,
        })
    }

    /// One value of a one-row query, with the schema on the search path.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.client
            .batch_execute(&format!("SET search_path TO {}", self.schema))
            .await
            .unwrap();
        self.client.query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn drop_schema(self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
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
