//! Opening the PostgreSQL store: reading the URL, the connection pool and its TLS, and the
//! migrations in `migrations/postgres/` (applied under an advisory lock, so processes starting
//! together migrate once).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use thiserror::Error;
use tokio_postgres::NoTls;

use super::PostgresStore;
use crate::config::Secret;
use crate::store::Clock;

/// How long a caller waits for a free pooled connection, or for a new one to be made.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the PostgreSQL store could not be opened. Messages name the server without its password.
#[derive(Debug, Error)]
pub enum PostgresOpenError {
    #[error("ZUNDA_DATABASE_URL is not a PostgreSQL URL ({detail}) — use postgres://USER:PASSWORD@HOST:5432/DATABASE")]
    BadUrl { detail: String },
    #[error("cannot open conversation store at {target}: {detail} — check that PostgreSQL runs there and the user, password and database in ZUNDA_DATABASE_URL")]
    Connect { target: String, detail: String },
    #[error("cannot open conversation store at {target}: its schema version {found} is newer than this build knows ({known}) — run a newer zundamon")]
    TooNew {
        target: String,
        found: i64,
        known: usize,
    },
    #[error("cannot open conversation store at {target}: migrating the schema failed: {detail}")]
    Migrate { target: String, detail: String },
}
/// `url` without its password, for logs and errors.
pub fn redacted_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("redacted"));
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "a malformed URL".into(),
    }
}

/// Parses a `postgres://` URL (or key=value string) into a driver configuration.
pub fn parse_url(url: &Secret) -> Result<tokio_postgres::Config, PostgresOpenError> {
    url.expose()
        .parse::<tokio_postgres::Config>()
        // The driver's message never repeats the URL, so it cannot leak the password.
        .map_err(|err| PostgresOpenError::BadUrl {
            detail: err.to_string(),
        })
}

impl PostgresStore {
    /// Connects to `url`, migrates the schema and checks it can be used. At most `pool_size`
    /// connections are opened.
    pub async fn open(
        url: &Secret,
        pool_size: usize,
        retention: Duration,
    ) -> Result<Self, PostgresOpenError> {
        let config = parse_url(url)?;
        Self::open_config(
            config,
            &redacted_target(url.expose()),
            pool_size,
            retention,
            Arc::new(SystemTime::now),
        )
        .await
    }

    /// Like [`open`](Self::open) with a parsed configuration and a clock (for tests).
    pub async fn open_config(
        mut config: tokio_postgres::Config,
        target: &str,
        pool_size: usize,
        retention: Duration,
        clock: Clock,
    ) -> Result<Self, PostgresOpenError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("zundamon");
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls_for(&config) {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => Manager::from_config(config, NoTls, manager_config),
        };
        let connect = |detail: String| PostgresOpenError::Connect {
            target: target.to_owned(),
            detail,
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|err| connect(err.to_string()))?;
        let store = Self {
            pool,
            instance: crate::store::instance_id().into(),
            target: target.into(),
            retention,
            clock,
        };
        let mut client = store
            .pool
            .get()
            .await
            .map_err(|err| connect(err.to_string()))?;
        let version = migrate(&mut client, target).await?;
        tracing::info!(target, schema_version = version, "conversation store open");
        Ok(store)
    }
}

/// The TLS connector for `config`: with `sslmode=require` the connection is encrypted and the
/// server's certificate checked against the system's trusted roots (add a private CA, e.g. a
/// cloud provider's database CA, to the container's store) or, without any, Mozilla's. Without
/// it (`prefer`, the driver's default, or `disable`) the connection is plain, as on a private
/// network or a local socket.
pub fn tls_for(
    config: &tokio_postgres::Config,
) -> Option<tokio_postgres_rustls::MakeRustlsConnect> {
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return None;
    }
    // The connectors use rustls' process-wide provider; the binary installs ring at startup.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Some(
        match tokio_postgres_rustls::MakeRustlsConnect::with_native_certs() {
            Ok((connector, _unreadable)) => connector,
            Err(_) => tokio_postgres_rustls::MakeRustlsConnect::with_webpki_roots(),
        },
    )
}
/// Applies the migrations not yet recorded in `zundamon_schema`, all in one transaction under
/// an advisory lock, so two processes starting together never apply one twice. Returns the
/// schema version.
async fn migrate(client: &mut Object, target: &str) -> Result<usize, PostgresOpenError> {
    let known = crate::store::migrations::POSTGRES;
    let fail = |err: tokio_postgres::Error| PostgresOpenError::Migrate {
        target: target.to_owned(),
        detail: err.to_string(),
    };
    let tx = client.transaction().await.map_err(fail)?;
    // Keyed by schema: stores in different schemas of one database migrate independently. The
    // two-key form never collides with the per-channel locks of `append` (one 64-bit key).
    tx.execute(
        "SELECT pg_advisory_xact_lock(1515, hashtext('zundamon_schema.' || current_schema()))",
        &[],
    )
    .await
    .map_err(fail)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS zundamon_schema (version INTEGER NOT NULL)")
        .await
        .map_err(fail)?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM zundamon_schema",
            &[],
        )
        .await
        .map_err(fail)?
        .get(0);
    let applied = usize::try_from(found)
        .ok()
        .filter(|&applied| applied <= known.len())
        .ok_or_else(|| PostgresOpenError::TooNew {
            target: target.to_owned(),
            found,
            known: known.len(),
        })?;
    for (index, sql) in known.iter().enumerate().skip(applied) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO zundamon_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(fail)?;
        tracing::info!(target, version, "applied conversation store migration");
    }
    tx.commit().await.map_err(fail)?;
    Ok(known.len())
}
