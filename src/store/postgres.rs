//! The PostgreSQL-backed store, chosen by `ZUNDA_DATABASE_URL=postgres://…`: the same windows and
//! pending questions as the SQLite store, shared by every process of the bot that points at the
//! same database (shard ranges, an HTTP fleet, a replacement process).
//!
//! This module owns the connection pool (deadpool over tokio-postgres), the migrations in
//! `migrations/postgres/` (applied under an advisory lock, so processes starting together migrate
//! once), and the queries. The few extra queries the HTTP fleet needs (per-channel leases, wake-ups)
//! live in [`crate::fleet`] and use [`PostgresStore::pool`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use thiserror::Error;
use tokio_postgres::NoTls;
use zundamon_actors::{ChannelId, ConversationStore, Exchange, StoreError};

use super::sqlite::{channel_key, unkey};
use super::{from_unix_millis, unix_millis, PendingQuestion, PendingStore};
use super::{retention_cutoff, unix_secs, Clock};
use crate::config::Secret;

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

/// Stores windows and pending questions in PostgreSQL through a small connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
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

    /// The pool, for the fleet's lease and wake-up queries.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The server, without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Deletes the exchanges older than the retention period; returns how many.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let cutoff = self.cutoff();
        let client = self.client("prune").await?;
        let deleted = client
            .execute("DELETE FROM exchanges WHERE created_at < $1", &[&cutoff])
            .await
            .map_err(failed("prune"))?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// Closes the pool's connections; the data is already committed.
    pub fn close(&self) {
        self.pool.close();
        tracing::info!(target = %self.target, "conversation store closed");
    }

    /// Writes one copied exchange with its original age, unless the channel holds it already: the
    /// same id, or for exchanges from before ids were kept (no id), already `occurrence + 1`
    /// rows of the same text and time (identical exchanges are told apart by how many there
    /// are). True if it was written.
    pub async fn import(
        &self,
        row: &super::copy::StoredExchange,
        occurrence: usize,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "copy an exchange";
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.map_err(failed(WHAT))?;
        let channel = channel_key(row.channel_id);
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&channel])
            .await
            .map_err(failed(WHAT))?;
        let (question, answer, at) = (
            &row.exchange.question,
            &row.exchange.answer,
            &row.created_at,
        );
        let written = match row.exchange.id.map(channel_key) {
            Some(id) => tx
                .execute(
                    "INSERT INTO exchanges (channel_id, question, answer, created_at, exchange_id)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (channel_id, exchange_id) DO NOTHING",
                    &[&channel, question, answer, at, &id],
                )
                .await
                .map_err(failed(WHAT))?,
            None => {
                let occurrence = i64::try_from(occurrence).unwrap_or(i64::MAX);
                tx.execute(
                    "INSERT INTO exchanges (channel_id, question, answer, created_at)
                     SELECT $1, $2, $3, $4
                     WHERE (SELECT count(*) FROM exchanges WHERE channel_id = $1
                            AND exchange_id IS NULL AND question = $2 AND answer = $3
                            AND created_at = $4) <= $5",
                    &[&channel, question, answer, at, &occurrence],
                )
                .await
                .map_err(failed(WHAT))?
            }
        };
        tx.commit().await.map_err(failed(WHAT))?;
        Ok(written == 1)
    }

    /// Records a question taken by an instance of the HTTP fleet: the instance holding the
    /// channel's lease answers it (the insert wakes the listening instances).
    pub async fn record_for_fleet(&self, question: &PendingQuestion) -> Result<(), StoreError> {
        self.insert_pending(question, true).await
    }

    /// `channel`'s fleet questions, oldest interaction first (interaction ids are time-ordered).
    pub async fn fleet_pending_in(
        &self,
        channel: ChannelId,
    ) -> Result<Vec<PendingQuestion>, StoreError> {
        let client = self.client("list pending questions").await?;
        let statement = client
            .prepare_cached(&format!(
                "{SELECT_PENDING} WHERE channel_id = $1 AND fleet ORDER BY interaction_id"
            ))
            .await
            .map_err(failed("list pending questions"))?;
        let rows = client
            .query(&statement, &[&channel_key(channel)])
            .await
            .map_err(failed("list pending questions"))?;
        Ok(rows.iter().map(pending_from_row).collect())
    }

    async fn insert_pending(&self, q: &PendingQuestion, fleet: bool) -> Result<(), StoreError> {
        let client = self.client("record pending question").await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO pending_questions (interaction_id, application_id, token,
                     channel_id, guild_id, user_id, user_name, question, received_at_ms,
                     delivered_parts, fleet, accepted, follow_ups)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (interaction_id) DO NOTHING",
            )
            .await
            .map_err(failed("record pending question"))?;
        let parts = i32::try_from(q.delivered_parts).unwrap_or(i32::MAX);
        client
            .execute(
                &statement,
                &[
                    &channel_key(q.interaction_id),
                    &channel_key(q.application_id),
                    &q.token.expose(),
                    &channel_key(q.channel_id),
                    &q.guild_id.map(channel_key),
                    &channel_key(q.user_id),
                    &q.user_name,
                    &q.question,
                    &unix_millis(q.received_at),
                    &parts,
                    &fleet,
                    &channel_key(q.accepted),
                    &super::join_ids(&q.follow_ups),
                ],
            )
            .await
            .map(drop)
            .map_err(failed("record pending question"))
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

/// Maps a driver error to a store error naming the operation.
pub(crate) fn failed(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |err| StoreError(format!("{what} failed: {err}"))
}

/// Applies the migrations not yet recorded in `zundamon_schema`, all in one transaction under
/// an advisory lock, so two processes starting together never apply one twice. Returns the
/// schema version.
async fn migrate(client: &mut Object, target: &str) -> Result<usize, PostgresOpenError> {
    let known = super::migrations::POSTGRES;
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

const SELECT_PENDING: &str = "SELECT interaction_id, application_id, token, channel_id, guild_id,
    user_id, user_name, question, received_at_ms, delivered_parts, accepted, follow_ups
    FROM pending_questions";

fn pending_from_row(row: &tokio_postgres::Row) -> PendingQuestion {
    PendingQuestion {
        interaction_id: unkey(row.get(0)),
        application_id: unkey(row.get(1)),
        token: Secret::new(row.get::<_, String>(2)),
        channel_id: unkey(row.get(3)),
        guild_id: row.get::<_, Option<i64>>(4).map(unkey),
        user_id: unkey(row.get(5)),
        user_name: row.get(6),
        question: row.get(7),
        received_at: from_unix_millis(row.get(8)),
        delivered_parts: u32::try_from(row.get::<_, i32>(9)).unwrap_or(0),
        accepted: row.get::<_, Option<i64>>(10).map_or(0, unkey),
        follow_ups: super::split_ids(row.get::<_, &str>(11)),
    }
}

#[async_trait]
impl ConversationStore for PostgresStore {
    async fn load(&self, channel: ChannelId, limit: usize) -> Result<Vec<Exchange>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client("load").await?;
        let statement = client
            .prepare_cached(
                "SELECT question, answer, exchange_id FROM exchanges
                 WHERE channel_id = $1 AND created_at >= $2
                 ORDER BY id DESC LIMIT $3",
            )
            .await
            .map_err(failed("load"))?;
        let rows = client
            .query(&statement, &[&channel_key(channel), &self.cutoff(), &limit])
            .await
            .map_err(failed("load"))?;
        let mut exchanges: Vec<Exchange> = rows
            .iter()
            .map(|row| Exchange {
                id: row.get::<_, Option<i64>>(2).map(unkey),
                question: row.get(0),
                answer: row.get(1),
            })
            .collect();
        exchanges.reverse();
        Ok(exchanges)
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
        let mut client = self.client("append").await?;
        let tx = client.transaction().await.map_err(failed("append"))?;
        // One writer per channel at a time, across every process: a batch gets consecutive ids
        // and the trim sees every row it must keep. (The lock ends with the transaction.)
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&channel])
            .await
            .map_err(failed("append"))?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO exchanges (channel_id, question, answer, created_at, exchange_id)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (channel_id, exchange_id) DO NOTHING",
            )
            .await
            .map_err(failed("append"))?;
        for exchange in exchanges {
            let id = exchange.id.map(channel_key);
            tx.execute(
                &insert,
                &[&channel, &exchange.question, &exchange.answer, &now, &id],
            )
            .await
            .map_err(failed("append"))?;
        }
        let trim = tx
            .prepare_cached(
                "DELETE FROM exchanges WHERE channel_id = $1 AND id <= (
                     SELECT id FROM exchanges WHERE channel_id = $1
                     ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .await
            .map_err(failed("append"))?;
        tx.execute(&trim, &[&channel, &keep])
            .await
            .map_err(failed("append"))?;
        tx.commit().await.map_err(failed("append"))
    }

    async fn clear(&self, channel: ChannelId) -> Result<(), StoreError> {
        let client = self.client("clear").await?;
        client
            .execute(
                "DELETE FROM exchanges WHERE channel_id = $1",
                &[&channel_key(channel)],
            )
            .await
            .map(drop)
            .map_err(failed("clear"))
    }
}

/// The HTTP fleet's questions (recorded with [`PostgresStore::record_for_fleet`]) are not part of
/// [`PendingStore::pending`]: the instance holding their channel's lease answers them, so a
/// process resuming its own questions at startup never takes them.
#[async_trait]
impl PendingStore for PostgresStore {
    async fn record(&self, q: &PendingQuestion) -> Result<(), StoreError> {
        self.insert_pending(q, false).await
    }

    async fn delivered_parts(&self, interaction_id: u64, parts: u32) -> Result<(), StoreError> {
        let client = self.client("note delivered parts").await?;
        let parts = i32::try_from(parts).unwrap_or(i32::MAX);
        client
            .execute(
                "UPDATE pending_questions SET delivered_parts = $2 WHERE interaction_id = $1",
                &[&channel_key(interaction_id), &parts],
            )
            .await
            .map(drop)
            .map_err(failed("note delivered parts"))
    }

    async fn follow_ups(&self, interaction_id: u64, ids: &[u64]) -> Result<(), StoreError> {
        let client = self.client("note follow-up messages").await?;
        client
            .execute(
                "UPDATE pending_questions SET follow_ups = $2 WHERE interaction_id = $1",
                &[&channel_key(interaction_id), &super::join_ids(ids)],
            )
            .await
            .map(drop)
            .map_err(failed("note follow-up messages"))
    }

    async fn remove(&self, interaction_id: u64) -> Result<(), StoreError> {
        let client = self.client("remove pending question").await?;
        client
            .execute(
                "DELETE FROM pending_questions WHERE interaction_id = $1",
                &[&channel_key(interaction_id)],
            )
            .await
            .map(drop)
            .map_err(failed("remove pending question"))
    }

    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError> {
        let client = self.client("list pending questions").await?;
        let rows = client
            .query(
                &format!("{SELECT_PENDING} WHERE NOT fleet ORDER BY accepted NULLS FIRST, seq"),
                &[],
            )
            .await
            .map_err(failed("list pending questions"))?;
        Ok(rows.iter().map(pending_from_row).collect())
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
pub(crate) mod tests;
