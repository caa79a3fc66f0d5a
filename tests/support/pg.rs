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
