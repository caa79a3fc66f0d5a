//! Live reconfiguration: on `SIGHUP` the configuration file (`--config` / `ZUNDA_CONFIG`) and the
//! persona file are read again and every setting that can change without a restart is applied.
//!
//! - `[channels]` goes to the channel supervisor (idle timeout, cap, window size);
//! - `[limits]` goes to the Discord event actor (question length, rate limits, queue limits);
//! - `[stream]` goes to the event actor too (answers accepted afterwards stream at the new pace);
//! - `[openai]`, `[search]`, `[persona]`, `[models]`, `[[places]]` and `[limits]` build a new
//!   agent, swapped in for the next question (questions already being answered finish with the
//!   agent they started with);
//! - `[access]`, `[[places]]` and the daily token budget go to the policy the event actor screens
//!   the next question with.
//!
//! `[discord]`, `[store]`, `[http]`, `[shutdown]`, `[gateway]` and `[fleet]` need a restart: a
//! change there is logged and the running value kept. A file that does not load changes nothing. Environment variables still
//! override the file, as at start.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use ractor::ActorRef;
use tracing::{error, info, warn};
use zundamon_actors::{AnswerError, Answerer, Channels, Exchange, Progress, Question};

use crate::agent::places::{Ledger, PlacedAgent};
use crate::config::{Config, Purpose};
use crate::ops::metrics::Metrics;
use crate::question::policy::Policy;
use crate::question::router::RouterMsg;
pub use changes::{annotate, changes, Change};

mod changes;

/// Sections whose settings a reload applies.
pub const LIVE_SECTIONS: &[&str] = &[
    "channels", "limits", "openai", "search", "persona", "stream", "access", "models", "places",
];
/// Sections whose settings need a restart.
pub const RESTART_SECTIONS: &[&str] = &["discord", "store", "http", "shutdown", "gateway", "fleet"];

/// Whether a setting (`section.key`) is applied by a reload.
pub fn is_live(setting: &str) -> bool {
    let section = setting.split('.').next().unwrap_or_default();
    LIVE_SECTIONS.contains(&section)
}

/// The answerer the channel actors hold: the agent of the current configuration.
pub struct LiveAnswerer {
    current: RwLock<Arc<PlacedAgent>>,
    /// What every agent built for a reload reports to.
    ledger: Option<Arc<dyn Ledger>>,
}

impl LiveAnswerer {
    pub fn new(agent: PlacedAgent, ledger: Option<Arc<dyn Ledger>>) -> Self {
        Self {
            current: RwLock::new(Arc::new(agent)),
            ledger,
        }
    }

    /// The agent of `config`, reporting to the same ledger.
    pub fn build(
        &self,
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<PlacedAgent, crate::agent::AgentError> {
        PlacedAgent::new(
            config,
            metrics,
            Arc::new(chrono::Utc::now),
            self.ledger.clone(),
        )
    }

    /// Answers the next questions with `agent`.
    pub fn replace(&self, agent: PlacedAgent) {
        *self.current.write().expect("answerer lock poisoned") = Arc::new(agent);
    }
}

#[async_trait]
impl Answerer for LiveAnswerer {
    async fn answer(
        &self,
        question: &Question,
        history: &[Exchange],
    ) -> Result<String, AnswerError> {
        // Cloned out so no lock is held across the answer.
        let agent = self.current.read().expect("answerer lock poisoned").clone();
        agent.answer(question, history).await
    }

    async fn answer_live(
        &self,
        question: &Question,
        history: &[Exchange],
        progress: &Progress,
    ) -> Result<String, AnswerError> {
        let agent = self.current.read().expect("answerer lock poisoned").clone();
        agent.answer_live(question, history, progress).await
    }

    fn remembered(&self, answer: &str) -> String {
        let agent = self.current.read().expect("answerer lock poisoned").clone();
        agent.remembered(answer)
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new file was applied: the live settings that changed, and the restart-only ones that
    /// changed but were kept.
    Applied {
        live: Vec<Change>,
        restart_only: Vec<Change>,
    },
    /// The file did not load or the new settings could not be built; nothing changed.
    Invalid(String),
}

/// Holds the running configuration and the handles a reload reconfigures.
pub struct Reloader {
    current: Config,
    channels: Channels,
    router: ActorRef<RouterMsg>,
    answerer: Arc<LiveAnswerer>,
    metrics: Arc<Metrics>,
    /// Where the access lists, places and budgets of the next questions are read.
    policy: Option<Arc<Policy>>,
}

impl Reloader {
    /// Applies `[access]`, `[models]`, `[[places]]` and the token budget to `policy` too.
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    pub fn new(
        current: Config,
        channels: Channels,
        router: ActorRef<RouterMsg>,
        answerer: Arc<LiveAnswerer>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            current,
            channels,
            router,
            answerer,
            metrics,
            policy: None,
        }
    }

    /// Reads the configuration again (file, persona file, environment) and applies it.
    pub fn reload(&mut self) -> Outcome {
        let loaded = Config::load(self.current.file.as_deref(), Purpose::Bot);
        let outcome = match loaded {
            Ok(new) => self.apply(new),
            Err(err) => Outcome::Invalid(err.to_string()),
        };
        match &outcome {
            Outcome::Applied { live, restart_only } => {
                self.metrics.config_reload("ok");
                for change in restart_only {
                    warn!(
                        setting = %change.setting,
                        "configuration reload: {} needs a restart; the running value {} is kept (the file says {})",
                        change.setting, change.from, change.to
                    );
                }
                if live.is_empty() {
                    info!("configuration reloaded: no live setting changed");
                } else {
                    let changed: Vec<String> = live
                        .iter()
                        .map(|c| format!("{}: {} -> {}", c.setting, c.from, c.to))
                        .collect();
                    info!(changed = %changed.join(", "), "configuration reloaded");
                }
            }
            Outcome::Invalid(problem) => {
                self.metrics.config_reload("invalid");
                error!(
                    "configuration reload failed, the current settings stay in force: {problem}"
                );
            }
        }
        outcome
    }

    fn apply(&mut self, new: Config) -> Outcome {
        let all = changes(&self.current, &new);
        let (live, restart_only): (Vec<Change>, Vec<Change>) =
            all.into_iter().partition(Change::is_live);
        // Restart-only settings keep their running values.
        let next = Config {
            discord: self.current.discord.clone(),
            store: self.current.store.clone(),
            http: self.current.http.clone(),
            shutdown: self.current.shutdown.clone(),
            gateway: self.current.gateway.clone(),
            fleet: self.current.fleet.clone(),
            file: self.current.file.clone(),
            ..new
        };
        let touches = |section: &str| {
            live.iter()
                .any(|c| c.setting.starts_with(&format!("{section}.")))
        };
        // Build first, apply after: a new agent that cannot be built leaves everything as it was.
        if ["openai", "search", "persona", "models", "places", "limits"]
            .iter()
            .any(|section| touches(section))
        {
            match self.answerer.build(&next, self.metrics.clone()) {
                Ok(agent) => self.answerer.replace(agent),
                Err(err) => return Outcome::Invalid(format!("cannot build the agent: {err}")),
            }
        }
        if touches("channels") {
            self.channels.reconfigure(next.channels.settings());
        }
        if touches("stream") {
            if let Err(err) = self
                .router
                .cast(RouterMsg::Restream(next.stream.edit_every()))
            {
                warn!("cannot apply the new streaming settings: {err}");
            }
        }
        if touches("limits") {
            if let Err(err) = self
                .router
                .cast(RouterMsg::Reconfigure(next.limits.clone()))
            {
                warn!("cannot apply new limits: {err}");
            }
        }
        if let Some(policy) = &self.policy {
            policy.replace(next.clone());
        }
        self.current = next;
        Outcome::Applied { live, restart_only }
    }
}

/// SIGHUP, listened for from [`Hangups::listen`] on: SIGHUP's default action ends the process,
/// so the listener is installed while the application is built, before anything is served.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Starts listening (needs a tokio runtime).
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .map_err(|err| {
                    warn!("cannot listen for SIGHUP, configuration reload is off: {err}");
                })
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next SIGHUP; `false` when there will be none.
    async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            return signal.recv().await.is_some();
        }
        false
    }
}

/// Reloads on every SIGHUP until the task is aborted.
pub async fn on_sighup(mut hangups: Hangups, mut reloader: Reloader) {
    while hangups.recv().await {
        info!("SIGHUP received: reloading the configuration");
        // Loading reads files: keep it off the runtime's workers.
        reloader = match tokio::task::spawn_blocking(move || {
            reloader.reload();
            reloader
        })
        .await
        {
            Ok(reloader) => reloader,
            Err(err) => {
                error!("the configuration reload panicked: {err}");
                return;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Config {
        let mut env: HashMap<String, String> = [
            ("DISCORD_BOT_TOKEN", "tok-123"),
            ("DISCORD_GUILD_ID", "42"),
            ("OPENAI_API_KEY", "sk-secret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        Config::load_with(None, Purpose::Bot, move |name| env.get(name).cloned()).unwrap()
    }

    #[test]
    fn changes_are_classified_live_or_restart_only() {
        let old = load(&[]);
        let new = load(&[
            ("ZUNDA_CHANNEL_IDLE_SECS", "30"),
            ("OPENAI_MODEL", "llama3.2"),
            ("PORT", "9090"),
            ("ZUNDA_DB_PATH", "/elsewhere.db"),
            ("DISCORD_BOT_TOKEN", "tok-456"),
        ]);
        let found = changes(&old, &new);
        let live: Vec<&str> = found
            .iter()
            .filter(|c| c.is_live())
            .map(|c| c.setting.as_str())
            .collect();
        let restart: Vec<&str> = found
            .iter()
            .filter(|c| !c.is_live())
            .map(|c| c.setting.as_str())
            .collect();
        assert_eq!(live, vec!["channels.idle_secs", "openai.model"]);
        assert_eq!(
            restart,
            vec!["http.port", "store.db_path", "discord.bot_token"]
        );
        let idle = found
            .iter()
            .find(|c| c.setting == "channels.idle_secs")
            .unwrap();
        assert_eq!((idle.from.as_str(), idle.to.as_str()), ("600", "30"));
        let text = format!("{found:?}");
        assert!(!text.contains("tok-") && !text.contains("sk-"), "{text}");
    }

    #[test]
    fn identical_configurations_have_no_changes() {
        assert!(changes(&load(&[]), &load(&[])).is_empty());
    }

    #[test]
    fn check_config_marks_every_section() {
        let text = annotate(&load(&[]).to_redacted_toml());
        for section in LIVE_SECTIONS {
            assert!(
                text.contains(&format!("[{section}] # live"))
                    || text.contains(&format!("{section} = [] # live")),
                "{section}: {text}"
            );
        }
        for section in RESTART_SECTIONS {
            assert!(text.contains(&format!("[{section}] # restart")), "{text}");
        }
    }
}
