//! `zundamon store copy --from sqlite:PATH --to postgres://…`: moves an existing deployment's
//! memory (every channel's window, the pending questions, the model choices and the token usage)
//! from its SQLite file into PostgreSQL. Running it again copies nothing twice, so it can be
//! re-run after a partial copy or just before switching over.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::{OpenError, PendingStore, PostgresStore, SqliteStore};
use crate::config::Secret;

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    pub channels: usize,
    /// Exchanges written to the destination.
    pub exchanges: usize,
    /// Exchanges the destination held already (an earlier copy).
    pub exchanges_present: usize,
    pub pending: usize,
    pub pending_present: usize,
    /// Model choices written to the destination.
    pub model_choices: usize,
    /// Model choices the destination held already, or had changed since.
    pub model_choices_present: usize,
    /// Days of a user's token usage written (or raised) in the destination.
    pub usage_days: usize,
    pub usage_days_present: usize,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "copied {} exchanges of {} channels ({} already there) and {} pending questions ({} already there), {} model choices ({} already there) and {} days of token usage ({} already there)",
            self.exchanges,
            self.channels,
            self.exchanges_present,
            self.pending,
            self.pending_present,
            self.model_choices,
            self.model_choices_present,
            self.usage_days,
            self.usage_days_present,
        )
    }
}

#[derive(Debug, Error)]
pub enum CopyError {
    #[error("--from must be sqlite:PATH (the SQLite file of ZUNDA_DB_PATH), got {0:?}")]
    BadSource(String),
    #[error("--from {0}: no such file — give the path of the bot's SQLite database")]
    MissingSource(PathBuf),
    #[error("--to must be a postgres:// URL")]
    BadDestination,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("copy failed: {0}")]
    Store(#[from] zundamon_actors::StoreError),
}

/// The SQLite file named by `sqlite:PATH` (or a plain path).
pub fn source_path(from: &str) -> Result<PathBuf, CopyError> {
    let path = from.strip_prefix("sqlite:").unwrap_or(from);
    let path = path.strip_prefix("//").unwrap_or(path);
    if path.is_empty() || from.contains("://") && !from.starts_with("sqlite:") {
        return Err(CopyError::BadSource(from.to_owned()));
    }
    Ok(PathBuf::from(path))
}

/// Copies everything from the SQLite file `from` into the PostgreSQL database `to`.
pub async fn run(from: &str, to: &Secret) -> Result<CopyReport, CopyError> {
    let path = source_path(from)?;
    if !path.is_file() {
        return Err(CopyError::MissingSource(path));
    }
    let url = to.expose().trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(CopyError::BadDestination);
    }
    // Retention is irrelevant to a copy: every row is read and written with its own age.
    let keep_all = Duration::from_secs(100 * 365 * 86_400);
    let source = tokio::task::spawn_blocking(move || SqliteStore::open(&path, keep_all))
        .await
        .expect("opening the SQLite store panicked")
        .map_err(OpenError::from)?;
    let destination = PostgresStore::open(to, 2, keep_all)
        .await
        .map_err(OpenError::from)?;
    let report = copy(&source, &destination).await;
    destination.close();
    report
}

/// Copies `source` into `destination`, skipping what is there already.
pub async fn copy(
    source: &SqliteStore,
    destination: &PostgresStore,
) -> Result<CopyReport, CopyError> {
    let mut report = CopyReport::default();
    let rows = source.dump().await?;
    let mut channels = std::collections::HashSet::new();
    // How many identical id-less exchanges of a channel came before (see `import`).
    let mut seen = std::collections::HashMap::new();
    for row in &rows {
        channels.insert(row.channel_id);
        let occurrence = if row.exchange.id.is_none() {
            let key = (
                row.channel_id,
                row.exchange.question.clone(),
                row.exchange.answer.clone(),
                row.created_at,
            );
            let count = seen.entry(key).or_insert(0usize);
            *count += 1;
            *count - 1
        } else {
            0
        };
        if destination.import(row, occurrence).await? {
            report.exchanges += 1;
        } else {
            report.exchanges_present += 1;
        }
    }
    report.channels = channels.len();
    let known: std::collections::HashSet<u64> = destination
        .pending()
        .await?
        .iter()
        .map(|question| question.interaction_id)
        .collect();
    for question in source.pending().await? {
        if known.contains(&question.interaction_id) {
            report.pending_present += 1;
        } else {
            destination.record(&question).await?;
            report.pending += 1;
        }
    }
    for choice in source.dump_model_choices().await? {
        if destination.import_model_choice(&choice).await? {
            report.model_choices += 1;
        } else {
            report.model_choices_present += 1;
        }
    }
    for usage in source.dump_token_usage().await? {
        if destination.import_token_usage(&usage).await? {
            report.usage_days += 1;
        } else {
            report.usage_days_present += 1;
        }
    }
    Ok(report)
}

/// One stored exchange with its channel and age, as a copy moves it.
#[derive(Debug, Clone)]
pub struct StoredExchange {
    pub channel_id: u64,
    pub exchange: zundamon_actors::Exchange,
    /// Unix seconds.
    pub created_at: i64,
}

/// The model chosen for one channel or thread, as a copy moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChoice {
    pub place_id: u64,
    pub model: String,
    /// Unix milliseconds: of two choices for one place, the later one is kept.
    pub updated_at_ms: i64,
}

/// What one user spent on one day, as a copy moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUsage {
    pub user_id: u64,
    /// `YYYY-MM-DD`, in the bot's configured time zone.
    pub day: String,
    pub tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_sqlite_paths() {
        assert_eq!(
            source_path("sqlite:data/zundamon.db").unwrap(),
            PathBuf::from("data/zundamon.db")
        );
        assert_eq!(
            source_path("sqlite:///var/lib/z.db").unwrap(),
            PathBuf::from("/var/lib/z.db")
        );
        assert_eq!(source_path("z.db").unwrap(), PathBuf::from("z.db"));
        assert!(source_path("postgres://db/z").is_err());
        assert!(source_path("sqlite:").is_err());
    }
}
