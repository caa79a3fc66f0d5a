//! A fresh PostgreSQL schema per test on the server named by `ZUNDA_TEST_DATABASE_URL`, so tests
//! run in parallel on one database. Without the variable a test prints a SKIPPED line and passes;
//! with it set and the server unreachable, the test fails at once saying so.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
        let client = connect(&base).await;
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

/// Connects to the test server, or fails the test naming the URL (without its password): the
/// variable says PostgreSQL is meant to be there, so a silent skip would hide a broken setup.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let shown = without_password(url);
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = match tokio::time::timeout(Duration::from_secs(10), connecting).await
    {
        Ok(Ok(connected)) => connected,
        Ok(Err(err)) => {
            let mut why = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            panic!("{}", unreachable(&shown, &why))
        }
        Err(_) => panic!("{}", unreachable(&shown, "no answer within 10 s")),
    };
    tokio::spawn(connection);
    client
}

fn unreachable(url: &str, why: &str) -> String {
    format!(
        "ZUNDA_TEST_DATABASE_URL={url} is set but PostgreSQL is unreachable ({why}): start the \
         server (e.g. `pg_ctlcluster 16 main start` or `docker run -p 5432:5432 -e \
         POSTGRES_HOST_AUTH_METHOD=trust postgres`), fix the URL, or unset the variable to skip \
         the PostgreSQL tests"
    )
}

/// `url` with its password, if any, replaced by `***` (a URL's user part, or a `password=`
/// key of either form).
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split(' ')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let rest = hide_password_key(rest);
    let rest = rest.as_str();
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{tail}")
        }
        _ => format!("{scheme}://{rest}"),
    }
}

/// A `password=` query parameter replaced by `***`.
fn hide_password_key(rest: &str) -> String {
    let Some((path, query)) = rest.split_once('?') else {
        return rest.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("password=") {
                "password=***"
            } else {
                pair
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
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
