//! Persistence: each channel's recent exchanges ([`ConversationStore`], from the actor crate),
//! the questions accepted but not yet answered ([`PendingStore`]), so that a process that dies
//! (kill -9, OOM, node loss) leaves its unanswered questions to the next one, and what admins set
//! at run time with each user's token spending ([`SettingsStore`]).
//!
//! [`sqlite`] is the embedded default; [`postgres`] is chosen by `ZUNDA_DATABASE_URL` when several
//! processes share the bot. [`open`] picks one from the configuration; [`copy`] moves a SQLite
//! store's contents into another store.

pub mod copy;
pub mod fleet;
pub(crate) mod keys;
pub mod migrations;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;
pub mod usage;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use thiserror::Error;
use zundamon_actors::{ChannelId, ConversationStore, StoreError};

use crate::config::{Secret, StoreConfig};

pub use fleet::FleetPending;
pub use postgres::{PostgresOpenError, PostgresStore};
pub use sqlite::{SqliteStore, StoreOpenError};

/// A question that was accepted (its acknowledgement sent or being sent) and whose answer has not
/// been delivered yet.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingQuestion {
    /// The interaction id (a snowflake: time-ordered).
    pub interaction_id: u64,
    pub application_id: u64,
    /// The interaction token: valid for 15 minutes, never logged.
    pub token: Secret,
    pub channel_id: ChannelId,
    pub guild_id: Option<u64>,
    pub user_id: u64,
    pub user_name: String,
    /// The question as it will be asked (already checked and trimmed).
    pub question: String,
    /// When the bot received the interaction.
    pub received_at: SystemTime,
    /// Its place in acceptance order: an [`acceptance_stamp`] taken when the question's place in
    /// its channel was fixed. Pending questions are listed (and resumed) in this order, whatever
    /// order their concurrent inserts happened to land in.
    pub accepted: u64,
    /// How many messages of the answer have been delivered (a resumed delivery skips them).
    pub delivered_parts: u32,
    /// The follow-up messages a live (streamed) view of the answer has posted, in order: a
    /// resumed delivery edits them instead of posting the same parts again.
    pub follow_ups: Vec<u64>,
    /// The fence the row was read (or claimed) with: the one this process holds it with when it
    /// resumes it.
    pub fence: Fence,
    /// The files attached to the question, as Discord described them (never their content).
    pub attachments: Vec<zundamon_actors::Attachment>,
    /// Where it was asked, most specific first (empty: not recorded).
    pub places: Vec<u64>,
}

impl fmt::Debug for PendingQuestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingQuestion")
            .field("interaction_id", &self.interaction_id)
            .field("application_id", &self.application_id)
            .field("token", &self.token)
            .field("channel_id", &self.channel_id)
            .field("guild_id", &self.guild_id)
            .field("user_id", &self.user_id)
            .field("question_chars", &self.question.chars().count())
            .field("received_at_ms", &unix_millis(self.received_at))
            .field("accepted", &self.accepted)
            .field("delivered_parts", &self.delivered_parts)
            .field("follow_ups", &self.follow_ups)
            .field("fence", &self.fence)
            .finish()
    }
}

impl PendingQuestion {
    /// How old the interaction is now (zero if the clock went backwards).
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.received_at)
            .unwrap_or_default()
    }
}

/// A stamp of acceptance order: unix microseconds, strictly increasing within the process (two
/// questions accepted in the same microsecond, or after the clock stepped back, still get
/// increasing stamps), so a restarted process's questions sort after a dead one's.
pub fn acceptance_stamp() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let next = |last: u64| now.max(last.saturating_add(1));
    // The closure never declines, so `fetch_update` always succeeds with the previous value.
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(next(last))
        })
        .unwrap_or_else(|last| last);
    next(previous)
}

/// Follow-up message ids as stored (`"12,34"`); anything unreadable is skipped.
pub(crate) fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The ids of a stored follow-up list (see [`join_ids`]).
pub(crate) fn split_ids(stored: &str) -> Vec<u64> {
    stored
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

/// How long a pending-table write on a question's way (a delivered part, a follow-up id, the
/// finish, a fence check) may take before it is given up (and logged).
pub const STORE_BUDGET: Duration = Duration::from_secs(5);

/// The token a process holds a pending question with. It is raised each time the question
/// changes hands (a takeover from a process whose heartbeat expired, a fleet lease taken over),
/// and every write for the question checks the owner and the token together.
pub type Fence = i64;

/// What recording a question found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// This call wrote the row: this process owns the question, with this fence.
    Mine(Fence),
    /// A row for the interaction was there already: another process of the bot got the same
    /// event (a rolling deploy), or the question was finished already.
    Existing,
}

/// Which recorded questions a process may take over (a shard range takes only its own guilds').
pub type Wanted = Arc<dyn Fn(Option<u64>) -> bool + Send + Sync>;

/// The questions accepted but not yet answered, each owned by the process that accepted it (or
/// took it over), in acceptance order.
///
/// Ownership rule: a process renews its [`heartbeat`](Self::heartbeat) while it lives; only a
/// process whose owner's heartbeat has expired takes a question over
/// ([`claim_orphans`](Self::claim_orphans)), and it raises the question's fence as it does, so
/// the old owner's later writes (checked with [`holds`](Self::holds), or in the same statement)
/// change nothing.
#[async_trait]
pub trait PendingStore: Send + Sync + 'static {
    /// This process's instance id: the owner of the questions it records.
    fn instance(&self) -> &str;
    /// Records an accepted question as this process's. Recording an interaction that has a row
    /// already (even a finished one) changes nothing.
    async fn record(&self, question: &PendingQuestion) -> Result<Recorded, StoreError>;
    /// Makes the question this process's once it won the acknowledgement: records it if it is
    /// missing, or takes it over (raising the fence) from whichever process recorded it first.
    /// `None` if the question is finished already.
    async fn adopt(&self, question: &PendingQuestion) -> Result<Option<Fence>, StoreError>;
    /// Whether this process still holds the question with `fence`: not taken over, not finished.
    async fn holds(&self, interaction_id: u64, fence: Fence) -> Result<bool, StoreError>;
    /// Notes that the first `parts` messages of the answer were delivered (only while held with
    /// `fence`; false if not).
    async fn delivered_parts(
        &self,
        interaction_id: u64,
        parts: u32,
        fence: Fence,
    ) -> Result<bool, StoreError>;
    /// Notes the follow-up messages the answer's live view has posted so far (only while held
    /// with `fence`; false if not).
    async fn follow_ups(
        &self,
        interaction_id: u64,
        ids: &[u64],
        fence: Fence,
    ) -> Result<bool, StoreError>;
    /// Marks a question finished (answered, withdrawn or expired). Its row stays for a while as a
    /// tombstone (without the token), so a `record` that timed out and commits later cannot bring
    /// it back; a missing row is written as a tombstone for the same reason. With a fence only if
    /// this process holds the question with it; without one only if no other process owns it.
    /// True if it was marked.
    async fn finish(
        &self,
        question: &PendingQuestion,
        fence: Option<Fence>,
    ) -> Result<bool, StoreError>;
    /// Every question not finished (the HTTP fleet's excepted), in the order they were accepted.
    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError>;
    /// Renews this process's heartbeat: its questions are not taken over for `lease`.
    async fn heartbeat(&self, lease: Duration) -> Result<(), StoreError>;
    /// Ends this process's heartbeat (a clean stop): its questions may be taken over at once.
    async fn leave(&self) -> Result<(), StoreError>;
    /// The questions this process should answer now, in acceptance order: those whose owner's
    /// heartbeat expired (or that have no owner), taken over with a raised fence, and this
    /// process's own recorded more than `unheld_after` ago (questions it lost the acknowledgement
    /// of to a process that then never took them; the caller skips the ones it has in hand).
    /// Only questions whose guild `wanted` accepts; never the HTTP fleet's.
    async fn claim_orphans(
        &self,
        unheld_after: Duration,
        wanted: Wanted,
    ) -> Result<Vec<PendingQuestion>, StoreError>;
}

/// Settings admins change at run time, and what each user has spent, shared by every process on
/// the store.
#[async_trait]
pub trait SettingsStore: Send + Sync + 'static {
    /// The model chosen with `/zunda-model` for a channel or thread, if any.
    async fn model_choice(&self, place_id: u64) -> Result<Option<String>, StoreError>;
    /// Sets (`Some`) or removes (`None`) the model chosen for a channel or thread.
    async fn set_model_choice(&self, place_id: u64, model: Option<&str>) -> Result<(), StoreError>;
    /// Adds `tokens` to what `user_id` spent on `day` (`YYYY-MM-DD`); returns the day's new
    /// total. Atomic under concurrency (two processes adding at once both count).
    async fn add_tokens(&self, user_id: u64, day: &str, tokens: u64) -> Result<u64, StoreError>;
    /// What `user_id` spent on `day` (0 if nothing).
    async fn tokens_used(&self, user_id: u64, day: &str) -> Result<u64, StoreError>;
    /// Every user's spending on `day` (to warm a cache at start), by user id.
    async fn tokens_on(&self, day: &str) -> Result<Vec<(u64, u64)>, StoreError>;
}

/// The attachments of a pending row as stored: JSON, empty for none.
pub(crate) fn encode_attachments(attachments: &[zundamon_actors::Attachment]) -> String {
    use zundamon_actors::AttachmentKind;
    if attachments.is_empty() {
        return String::new();
    }
    let list: Vec<serde_json::Value> = attachments
        .iter()
        .map(|a| {
            serde_json::json!({
                "kind": match a.kind { AttachmentKind::Image => "image", AttachmentKind::Text => "text" },
                "filename": a.filename, "url": a.url, "content_type": a.content_type, "size": a.size,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// The attachments of a stored pending row (a row that cannot be read has none).
pub(crate) fn decode_attachments(text: &str) -> Vec<zundamon_actors::Attachment> {
    use zundamon_actors::{Attachment, AttachmentKind};
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|a| {
            Some(Attachment {
                kind: match a["kind"].as_str()? {
                    "image" => AttachmentKind::Image,
                    "text" => AttachmentKind::Text,
                    _ => return None,
                },
                filename: a["filename"].as_str()?.to_owned(),
                url: a["url"].as_str()?.to_owned(),
                content_type: a["content_type"].as_str().unwrap_or_default().to_owned(),
                size: a["size"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// A name unique to this process among every process sharing a store: the host, the process id
/// and the start time.
pub fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "zundamon".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// Questions in acceptance order (rows from before acceptance stamps first, by interaction id).
pub(crate) fn in_acceptance_order(mut questions: Vec<PendingQuestion>) -> Vec<PendingQuestion> {
    questions.sort_by_key(|q| (q.accepted, q.interaction_id));
    questions
}

/// Every part of a store: windows, pending questions, settings.
pub trait Store: ConversationStore + PendingStore + SettingsStore {
    /// The same store seen as its pending-questions part.
    fn into_pending(self: Arc<Self>) -> Arc<dyn PendingStore>;
    /// The same store seen as its conversation part (the actor crate's window store).
    fn into_conversations(self: Arc<Self>) -> Arc<dyn ConversationStore>;
    /// The same store seen as its settings part (model choices, token usage).
    fn into_settings(self: Arc<Self>) -> Arc<dyn SettingsStore>;
}

impl<T: ConversationStore + PendingStore + SettingsStore> Store for T {
    fn into_pending(self: Arc<Self>) -> Arc<dyn PendingStore> {
        self
    }

    fn into_conversations(self: Arc<Self>) -> Arc<dyn ConversationStore> {
        self
    }

    fn into_settings(self: Arc<Self>) -> Arc<dyn SettingsStore> {
        self
    }
}

/// Where the current time comes from: the system clock, or a fake one in tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Unix seconds from `clock`; a clock before 1970 counts as 1970.
pub(crate) fn unix_secs(clock: &Clock) -> i64 {
    let since_epoch = clock().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// The oldest `created_at` (unix seconds) still within `retention` of `clock`'s now.
pub(crate) fn retention_cutoff(clock: &Clock, retention: Duration) -> i64 {
    let retention = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    unix_secs(clock).saturating_sub(retention)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The instant `millis` after the Unix epoch.
pub fn from_unix_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// A store the application runs on: every part, plus upkeep (pruning old rows, closing).
#[async_trait]
pub trait Backend: Store {
    /// Deletes the exchanges older than the retention period and the token usage of days more
    /// than a week ago (see [`usage::cutoff_day`]); returns how many rows went.
    async fn prune(&self) -> Result<usize, StoreError>;
    /// Prepares for shutdown (flushes what needs flushing); the store stays usable.
    async fn close(&self) -> Result<(), StoreError>;
    /// The PostgreSQL store, when this is one (the HTTP fleet needs it).
    fn postgres(self: Arc<Self>) -> Option<Arc<PostgresStore>> {
        None
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn prune(&self) -> Result<usize, StoreError> {
        SqliteStore::prune(self).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        SqliteStore::close(self).await
    }
}

#[async_trait]
impl Backend for PostgresStore {
    async fn prune(&self) -> Result<usize, StoreError> {
        PostgresStore::prune(self).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        PostgresStore::close(self);
        Ok(())
    }

    fn postgres(self: Arc<Self>) -> Option<Arc<PostgresStore>> {
        Some(self)
    }
}

/// Why the configured store could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] StoreOpenError),
    #[error(transparent)]
    Postgres(#[from] PostgresOpenError),
}

/// Opens the store the configuration names: PostgreSQL when `ZUNDA_DATABASE_URL` is set, else the
/// SQLite file at `ZUNDA_DB_PATH`.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Backend>, OpenError> {
    let retention = Duration::from_secs(u64::from(config.retention_days) * 86_400);
    if config.uses_postgres() {
        let store =
            PostgresStore::open(&config.database_url, config.database_pool_size, retention).await?;
        Ok(Arc::new(store))
    } else {
        // Opening checks and migrates the file: blocking work, done once at startup.
        let path = config.db_path.clone();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, retention))
            .await
            .expect("opening the SQLite store panicked")?;
        Ok(Arc::new(store))
    }
}

/// Prunes now and then every `every` until the task is aborted. Failures are logged and retried
/// at the next tick: a full disk or a database restart should not stop the bot from answering.
pub fn spawn_pruner(store: Arc<dyn Backend>, every: Duration) -> tokio::task::JoinHandle<()> {
    // `interval` panics on a zero period.
    let every = every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match store.prune().await {
                Ok(0) => tracing::debug!("no expired exchanges or token usage to prune"),
                Ok(deleted) => tracing::info!(deleted, "pruned expired exchanges and token usage"),
                Err(err) => tracing::warn!(error = %err, "pruning expired rows failed"),
            }
        }
    })
}

#[cfg(test)]
mod stamp_tests {
    use super::acceptance_stamp;

    #[test]
    fn acceptance_stamps_strictly_increase_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).map(|_| acceptance_stamp()).collect()))
            .collect();
        let mut all: Vec<u64> = Vec::new();
        for thread in threads {
            let stamps: Vec<u64> = thread.join().unwrap();
            assert!(stamps.windows(2).all(|w| w[0] < w[1]));
            all.extend(stamps);
        }
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a stamp was handed out twice");
    }
}
