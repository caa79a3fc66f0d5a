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
use super::{
    from_unix_millis, unix_millis, Fence, PendingQuestion, PendingStore, Recorded, Wanted,
};
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
    /// This process's instance id (see [`super::instance_id`]).
    instance: Arc<str>,
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
            instance: super::instance_id().into(),
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

    /// The same store acting for instance `id` (tests: several processes on one database).
    pub fn with_instance(mut self, id: &str) -> Self {
        self.instance = id.into();
        self
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
    /// channel's lease answers it (the insert wakes the listening instances). Refused (`false`)
    /// when the channel already has `max_queued` questions waiting or being answered, or the
    /// fleet `max_pending` (0: no limit for either). Recording an interaction that has a row
    /// already changes nothing and counts as recorded.
    pub async fn record_for_fleet(
        &self,
        q: &PendingQuestion,
        max_queued: usize,
        max_pending: usize,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "record pending question";
        let limit = |n: usize| {
            if n == 0 {
                i64::MAX
            } else {
                i64::try_from(n).unwrap_or(i64::MAX)
            }
        };
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "WITH new AS (
                     INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS}, fleet)
                     SELECT {PENDING_INSERT_VALUES}, TRUE
                     WHERE (SELECT count(*) FROM pending_questions
                            WHERE fleet AND NOT done AND channel_id = $4) < $16
                       AND (SELECT count(*) FROM pending_questions WHERE fleet AND NOT done) < $17
                     ON CONFLICT (interaction_id) DO NOTHING
                     RETURNING 1)
                 SELECT (SELECT count(*) FROM new)
                      + (SELECT count(*) FROM pending_questions WHERE interaction_id = $1)"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, None, 0, false);
        let (max_queued, max_pending) = (limit(max_queued), limit(max_pending));
        let mut params = values.params();
        params.push(&max_queued);
        params.push(&max_pending);
        let found: i64 = client
            .query_one(&statement, &params)
            .await
            .map_err(failed(WHAT))?
            .get(0);
        Ok(found > 0)
    }

    /// Claims `channel`'s fleet questions for this instance with its lease's `token`, oldest
    /// interaction first (interaction ids are time-ordered); nothing unless this instance holds
    /// the lease with that token now. Each question is then held with the token as its fence.
    pub async fn claim_fleet_channel(
        &self,
        channel: ChannelId,
        token: Fence,
    ) -> Result<Vec<PendingQuestion>, StoreError> {
        const WHAT: &str = "claim a channel's questions";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "UPDATE pending_questions SET owner = $2, fence = $3
                 WHERE channel_id = $1 AND fleet AND NOT done
                   AND EXISTS (SELECT 1 FROM channel_leases l WHERE l.channel_id = $1
                       AND l.holder = $2 AND l.token = $3 AND l.expires_at > now())
                 RETURNING {PENDING_COLUMNS}"
            ))
            .await
            .map_err(failed(WHAT))?;
        let rows = client
            .query(
                &statement,
                &[&channel_key(channel), &&*self.instance, &token],
            )
            .await
            .map_err(failed(WHAT))?;
        let mut questions: Vec<PendingQuestion> = rows.iter().map(pending_from_row).collect();
        questions.sort_by_key(|q| q.interaction_id);
        Ok(questions)
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

/// The columns of a pending question, in the order [`pending_from_row`] reads them.
const PENDING_COLUMNS: &str = "interaction_id, application_id, token, channel_id, guild_id,
    user_id, user_name, question, received_at_ms, delivered_parts, accepted, follow_ups, fence";

/// The columns [`insert_values`] fills, and its placeholders (`$1`…`$15`).
const PENDING_INSERT_COLUMNS: &str = "interaction_id, application_id, token, channel_id,
    guild_id, user_id, user_name, question, received_at_ms, delivered_parts, accepted,
    follow_ups, owner, fence, done";
const PENDING_INSERT_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15";

/// How long a finished question's tombstone is kept: longer than an interaction token lives, so
/// no write for it can still be under way.
const TOMBSTONE_MILLIS: i64 = 30 * 60 * 1000;

/// A new pending row's values, owned by `owner` with `fence`; a tombstone (`done`) keeps no token.
struct InsertValues {
    interaction_id: i64,
    application_id: i64,
    token: String,
    channel_id: i64,
    guild_id: Option<i64>,
    user_id: i64,
    user_name: String,
    question: String,
    received_at_ms: i64,
    delivered_parts: i32,
    accepted: i64,
    follow_ups: String,
    owner: Option<String>,
    fence: Fence,
    done: bool,
}

impl InsertValues {
    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.interaction_id,
            &self.application_id,
            &self.token,
            &self.channel_id,
            &self.guild_id,
            &self.user_id,
            &self.user_name,
            &self.question,
            &self.received_at_ms,
            &self.delivered_parts,
            &self.accepted,
            &self.follow_ups,
            &self.owner,
            &self.fence,
            &self.done,
        ]
    }
}

fn insert_values(
    q: &PendingQuestion,
    owner: Option<&str>,
    fence: Fence,
    done: bool,
) -> InsertValues {
    InsertValues {
        interaction_id: channel_key(q.interaction_id),
        application_id: channel_key(q.application_id),
        token: if done {
            String::new()
        } else {
            q.token.expose().to_owned()
        },
        channel_id: channel_key(q.channel_id),
        guild_id: q.guild_id.map(channel_key),
        user_id: channel_key(q.user_id),
        user_name: q.user_name.clone(),
        question: q.question.clone(),
        received_at_ms: unix_millis(q.received_at),
        delivered_parts: i32::try_from(q.delivered_parts).unwrap_or(i32::MAX),
        accepted: channel_key(q.accepted),
        follow_ups: super::join_ids(&q.follow_ups),
        owner: owner.map(str::to_owned),
        fence,
        done,
    }
}

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
        fence: row.get(12),
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
        // Fenced: an exchange whose question another process owns now (it took the question or
        // the channel over while this one was frozen) is that process's to remember.
        let insert = tx
            .prepare_cached(
                "INSERT INTO exchanges (channel_id, question, answer, created_at, exchange_id)
                 SELECT $1, $2, $3, $4, $5
                 WHERE $5::BIGINT IS NULL OR NOT EXISTS (SELECT 1 FROM pending_questions
                     WHERE interaction_id = $5 AND owner IS DISTINCT FROM $6)
                 ON CONFLICT (channel_id, exchange_id) DO NOTHING",
            )
            .await
            .map_err(failed("append"))?;
        for exchange in exchanges {
            let id = exchange.id.map(channel_key);
            tx.execute(
                &insert,
                &[
                    &channel,
                    &exchange.question,
                    &exchange.answer,
                    &now,
                    &id,
                    &&*self.instance,
                ],
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
/// [`PendingStore::pending`] nor taken by [`PendingStore::claim_orphans`]: the instance holding
/// their channel's lease claims them ([`PostgresStore::claim_fleet_channel`]).
#[async_trait]
impl PendingStore for PostgresStore {
    fn instance(&self) -> &str {
        &self.instance
    }

    async fn record(&self, q: &PendingQuestion) -> Result<Recorded, StoreError> {
        const WHAT: &str = "record pending question";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS})
                 VALUES ({PENDING_INSERT_VALUES}) ON CONFLICT (interaction_id) DO NOTHING"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, Some(&self.instance), 0, false);
        let written = client
            .execute(&statement, &values.params())
            .await
            .map_err(failed(WHAT))?;
        Ok(if written == 1 {
            Recorded::Mine(0)
        } else {
            Recorded::Existing
        })
    }

    async fn adopt(&self, q: &PendingQuestion) -> Result<Option<Fence>, StoreError> {
        const WHAT: &str = "take over a pending question";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS})
                 VALUES ({PENDING_INSERT_VALUES})
                 ON CONFLICT (interaction_id) DO UPDATE
                     SET owner = EXCLUDED.owner,
                         fence = CASE WHEN pending_questions.owner IS NOT DISTINCT FROM EXCLUDED.owner
                                 THEN pending_questions.fence
                                 ELSE pending_questions.fence + 1 END
                     WHERE NOT pending_questions.done
                 RETURNING fence"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, Some(&self.instance), 0, false);
        let row = client
            .query_opt(&statement, &values.params())
            .await
            .map_err(failed(WHAT))?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn holds(&self, interaction_id: u64, fence: Fence) -> Result<bool, StoreError> {
        const WHAT: &str = "check a pending question's owner";
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(
                "SELECT 1 FROM pending_questions
                 WHERE interaction_id = $1 AND owner = $2 AND fence = $3 AND NOT done",
            )
            .await
            .map_err(failed(WHAT))?;
        let row = client
            .query_opt(
                &statement,
                &[&channel_key(interaction_id), &&*self.instance, &fence],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(row.is_some())
    }

    async fn delivered_parts(
        &self,
        interaction_id: u64,
        parts: u32,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "note delivered parts";
        let client = self.client(WHAT).await?;
        let parts = i32::try_from(parts).unwrap_or(i32::MAX);
        client
            .execute(
                "UPDATE pending_questions SET delivered_parts = $2
                 WHERE interaction_id = $1 AND owner = $3 AND fence = $4 AND NOT done",
                &[
                    &channel_key(interaction_id),
                    &parts,
                    &&*self.instance,
                    &fence,
                ],
            )
            .await
            .map(|n| n == 1)
            .map_err(failed(WHAT))
    }

    async fn follow_ups(
        &self,
        interaction_id: u64,
        ids: &[u64],
        fence: Fence,
    ) -> Result<bool, StoreError> {
        const WHAT: &str = "note follow-up messages";
        let client = self.client(WHAT).await?;
        client
            .execute(
                "UPDATE pending_questions SET follow_ups = $2
                 WHERE interaction_id = $1 AND owner = $3 AND fence = $4 AND NOT done",
                &[
                    &channel_key(interaction_id),
                    &super::join_ids(ids),
                    &&*self.instance,
                    &fence,
                ],
            )
            .await
            .map(|n| n == 1)
            .map_err(failed(WHAT))
    }

    async fn finish(&self, q: &PendingQuestion, fence: Option<Fence>) -> Result<bool, StoreError> {
        const WHAT: &str = "finish a pending question";
        let held = if fence.is_some() {
            "pending_questions.owner = EXCLUDED.owner AND pending_questions.fence = EXCLUDED.fence"
        } else {
            "(pending_questions.owner IS NULL OR pending_questions.owner = EXCLUDED.owner)"
        };
        let client = self.client(WHAT).await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO pending_questions ({PENDING_INSERT_COLUMNS})
                 VALUES ({PENDING_INSERT_VALUES})
                 ON CONFLICT (interaction_id) DO UPDATE SET done = TRUE, token = ''
                 WHERE {held} AND NOT pending_questions.done"
            ))
            .await
            .map_err(failed(WHAT))?;
        let values = insert_values(q, Some(&self.instance), fence.unwrap_or(0), true);
        client
            .execute(&statement, &values.params())
            .await
            .map(|n| n == 1)
            .map_err(failed(WHAT))
    }

    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError> {
        const WHAT: &str = "list pending questions";
        let client = self.client(WHAT).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PENDING_COLUMNS} FROM pending_questions WHERE NOT fleet AND NOT done
                     ORDER BY accepted NULLS FIRST, seq"
                ),
                &[],
            )
            .await
            .map_err(failed(WHAT))?;
        Ok(rows.iter().map(pending_from_row).collect())
    }

    async fn heartbeat(&self, lease: Duration) -> Result<(), StoreError> {
        const WHAT: &str = "renew the heartbeat";
        let client = self.client(WHAT).await?;
        let lease_ms = lease.as_secs_f64() * 1000.0;
        client
            .execute(
                "INSERT INTO instances (id, expires_at) VALUES ($1, now() + $2 * interval '1 millisecond')
                 ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                &[&&*self.instance, &lease_ms],
            )
            .await
            .map_err(failed(WHAT))?;
        // Upkeep: processes long gone, and tombstones no write can still come for.
        client
            .execute(
                "DELETE FROM instances WHERE expires_at < now() - interval '1 day'",
                &[],
            )
            .await
            .map_err(failed(WHAT))?;
        let before = unix_millis((self.clock)()) - TOMBSTONE_MILLIS;
        client
            .execute(
                "DELETE FROM pending_questions WHERE done AND received_at_ms < $1",
                &[&before],
            )
            .await
            .map(drop)
            .map_err(failed(WHAT))
    }

    async fn leave(&self) -> Result<(), StoreError> {
        const WHAT: &str = "end the heartbeat";
        let client = self.client(WHAT).await?;
        client
            .execute("DELETE FROM instances WHERE id = $1", &[&&*self.instance])
            .await
            .map(drop)
            .map_err(failed(WHAT))
    }

    async fn claim_orphans(
        &self,
        unheld_after: Duration,
        wanted: Wanted,
    ) -> Result<Vec<PendingQuestion>, StoreError> {
        const WHAT: &str = "take over pending questions";
        const ORPHAN: &str = "NOT p.done AND NOT p.fleet AND (p.owner IS NULL OR (p.owner <> $1
            AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = p.owner AND i.expires_at > now())))";
        let client = self.client(WHAT).await?;
        let candidates = client
            .query(
                &format!("SELECT interaction_id, guild_id FROM pending_questions p WHERE {ORPHAN}"),
                &[&&*self.instance],
            )
            .await
            .map_err(failed(WHAT))?;
        let ids: Vec<i64> = candidates
            .iter()
            .filter(|row| wanted(row.get::<_, Option<i64>>(1).map(unkey)))
            .map(|row| row.get(0))
            .collect();
        let mut questions = Vec::new();
        if !ids.is_empty() {
            // The condition again: of processes claiming at once, each row goes to one (the
            // others see it owned by a live process when their update reaches it).
            let taken = client
                .query(
                    &format!(
                        "UPDATE pending_questions p SET owner = $1, fence = p.fence + 1
                         WHERE p.interaction_id = ANY($2) AND {ORPHAN}
                         RETURNING {PENDING_COLUMNS}"
                    ),
                    &[&&*self.instance, &ids],
                )
                .await
                .map_err(failed(WHAT))?;
            questions.extend(taken.iter().map(pending_from_row));
        }
        let unheld_before = unix_millis((self.clock)())
            .saturating_sub(i64::try_from(unheld_after.as_millis()).unwrap_or(i64::MAX));
        let own = client
            .query(
                &format!(
                    "SELECT {PENDING_COLUMNS} FROM pending_questions
                     WHERE owner = $1 AND NOT done AND NOT fleet AND received_at_ms < $2"
                ),
                &[&&*self.instance, &unheld_before],
            )
            .await
            .map_err(failed(WHAT))?;
        questions.extend(
            own.iter()
                .map(pending_from_row)
                .filter(|q| wanted(q.guild_id)),
        );
        Ok(super::in_acceptance_order(questions))
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
pub(crate) mod tests;
