//! What admins decide, applied to each question: the access lists, the settings of the place it
//! was asked in (`[[places]]` and the `/zunda-model` choices kept in the store), and each user's
//! daily token budget (counted in the store, so restarts and a fleet share it; checked at intake
//! against the latest known count, so a refusal costs nothing).
//!
//! The configuration is the running one: a reload swaps it in for the next question.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use dashmap::DashMap;
use tracing::{info, warn};

use crate::agent::places::Ledger;
use crate::config::{Config, PlaceSettings, Refusal};
use crate::discord::parents::Parents;
use crate::store::SettingsStore;

/// The longest a store read may delay a question's answer (it is then answered as if no
/// `/zunda-model` choice existed).
const READ_BUDGET: Duration = Duration::from_secs(2);
/// Users whose spending is remembered at most; past it the count is read again from the store.
const MAX_USERS: usize = 100_000;

/// The running admin settings and what they need.
pub struct Policy {
    config: RwLock<Arc<Config>>,
    pub parents: Arc<Parents>,
    store: Arc<dyn SettingsStore>,
    /// Each user's spending today as last known: (day, tokens).
    spent: DashMap<u64, (String, u64)>,
    /// The `/zunda-model` choices last read or made, by channel (for checks that cannot wait for
    /// the store; the agent reads the store itself).
    choices: DashMap<u64, Option<String>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").finish_non_exhaustive()
    }
}

/// Why a question is refused before the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The access lists exclude the user, a role or the channel.
    Access(Refusal),
    /// The user spent the daily token budget.
    Budget,
    /// Asked outside a guild (a DM, a group DM) while `[access] allow_dms` is off.
    Dms,
}

impl Policy {
    pub fn new(config: Config, parents: Arc<Parents>, store: Arc<dyn SettingsStore>) -> Self {
        Self {
            config: RwLock::new(Arc::new(config)),
            parents,
            store,
            spent: DashMap::new(),
            choices: DashMap::new(),
        }
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("policy lock poisoned").clone()
    }

    /// Applies a reloaded configuration to the next questions.
    pub fn replace(&self, config: Config) {
        *self.config.write().expect("policy lock poisoned") = Arc::new(config);
    }

    /// Where a question in `channel` was asked (see [`Parents::places`]).
    pub fn places(&self, channel: u64, guild: Option<u64>) -> Vec<u64> {
        self.parents.places(channel, guild)
    }

    /// The channel to ask Discord about before judging a question in `channel`: an ancestor
    /// whose parent is unknown, when the channel lists or `[[places]]` could depend on it.
    pub fn lookup_needed(&self, channel: u64) -> Option<u64> {
        let config = self.config();
        let depends = !config.access.allowed_channels.is_empty()
            || !config.access.blocked_channels.is_empty()
            || !config.places.is_empty();
        depends.then(|| self.parents.gap(channel)).flatten()
    }

    /// Whether `user` may ask now: outside a guild (`roles` is `None`) whether DMs are answered
    /// (always for admins), the access lists (roles and channels only in a guild), then the daily
    /// budget.
    pub fn screen(&self, user: u64, roles: Option<&[u64]>, places: &[u64]) -> Result<(), Refused> {
        let config = self.config();
        if roles.is_none() && !config.access.allow_dms && !config.access.is_admin(user) {
            return Err(Refused::Dms);
        }
        // Outside a guild there are no channels to judge, only the user.
        let channels = if roles.is_some() { places } else { &[] };
        config
            .access
            .check(user, roles, channels)
            .map_err(Refused::Access)?;
        let cap = config.limits.daily_tokens_per_user;
        if cap > 0 && self.spent_today(user, &config) >= cap {
            return Err(Refused::Budget);
        }
        Ok(())
    }

    /// Whether a mention from `user` may be answered.
    pub fn may_mention(&self, user: u64) -> bool {
        self.config().access.check_user(user).is_ok()
    }

    /// Whether a daily token budget applies.
    pub fn budgeted(&self) -> bool {
        self.config().limits.daily_tokens_per_user > 0
    }

    /// Whether `user` is one of `[access] admins`.
    pub fn is_admin(&self, user: u64) -> bool {
        self.config().access.is_admin(user)
    }

    /// Today in the persona's time zone (the budget's day).
    pub fn today(config: &Config) -> String {
        Utc::now()
            .with_timezone(&config.persona.tz())
            .format("%Y-%m-%d")
            .to_string()
    }

    fn spent_today(&self, user: u64, config: &Config) -> u64 {
        let today = Self::today(config);
        match self.spent.get(&user) {
            Some(entry) if entry.0 == today => entry.1,
            _ => 0,
        }
    }

    /// Reads today's spending of every user from the store (at start, so a restart keeps the
    /// budget).
    pub async fn warm(&self) {
        let today = Self::today(&self.config());
        match tokio::time::timeout(READ_BUDGET * 5, self.store.tokens_on(&today)).await {
            Ok(Ok(rows)) => {
                let users = rows.len();
                for (user, tokens) in rows {
                    self.spent.insert(user, (today.clone(), tokens));
                }
                if users > 0 {
                    info!(users, "read today's token spending");
                }
            }
            Ok(Err(err)) => warn!("cannot read today's token spending: {err}"),
            Err(_) => warn!("reading today's token spending took too long"),
        }
    }

    /// Reads `user`'s spending again (another process of a fleet may have added to it).
    pub async fn refresh(&self, user: u64) {
        let today = Self::today(&self.config());
        if let Ok(Ok(tokens)) =
            tokio::time::timeout(READ_BUDGET, self.store.tokens_used(user, &today)).await
        {
            self.remember(user, today, tokens);
        }
    }

    fn remember(&self, user: u64, day: String, tokens: u64) {
        if self.spent.len() >= MAX_USERS && !self.spent.contains_key(&user) {
            self.spent.clear();
        }
        self.spent.insert(user, (day, tokens));
    }

    /// The settings of a question asked in `places`, as the agent will resolve them.
    pub async fn settings(&self, places: &[u64]) -> PlaceSettings {
        let choice = self.model_choice(places).await;
        self.config().place_settings(
            places,
            choice.as_ref().map(|(at, name)| (*at, name.as_str())),
        )
    }

    /// The settings of a question asked in `places` as far as known without the store: the
    /// `/zunda-model` choices last seen here (for checks at intake).
    pub fn settings_now(&self, places: &[u64]) -> PlaceSettings {
        let choice = places.iter().take(2).enumerate().find_map(|(at, place)| {
            self.choices
                .get(place)
                .and_then(|entry| entry.clone())
                .map(|model| (at, model))
        });
        self.config().place_settings(
            places,
            choice.as_ref().map(|(at, name)| (*at, name.as_str())),
        )
    }

    fn remember_choice(&self, place: u64, model: Option<String>) {
        if self.choices.len() >= MAX_USERS && !self.choices.contains_key(&place) {
            self.choices.clear();
        }
        self.choices.insert(place, model);
    }

    /// Sets (`Some`) or removes the `/zunda-model` choice of a channel or thread.
    pub async fn choose_model(&self, place: u64, model: Option<&str>) -> Result<(), String> {
        match tokio::time::timeout(READ_BUDGET, self.store.set_model_choice(place, model)).await {
            Ok(Ok(())) => {
                self.remember_choice(place, model.map(str::to_owned));
                Ok(())
            }
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("the store took too long".into()),
        }
    }
}

#[async_trait]
impl Ledger for Policy {
    async fn model_choice(&self, places: &[u64]) -> Option<(usize, String)> {
        // Only channels and threads carry a choice (the first two places at most: a thread and
        // its channel); categories and guilds are configured in [[places]].
        for (at, &place) in places.iter().enumerate().take(2) {
            match tokio::time::timeout(READ_BUDGET, self.store.model_choice(place)).await {
                Ok(Ok(Some(model))) => {
                    self.remember_choice(place, Some(model.clone()));
                    return Some((at, model));
                }
                Ok(Ok(None)) => self.remember_choice(place, None),
                Ok(Err(err)) => {
                    warn!("cannot read the /zunda-model choice: {err}");
                    return None;
                }
                Err(_) => {
                    warn!("reading the /zunda-model choice took too long");
                    return None;
                }
            }
        }
        None
    }

    async fn spent(&self, user_id: u64, model: &str, tokens: u64) {
        tracing::debug!(user_id, model, tokens, "the question's cost");
        let today = Self::today(&self.config());
        // Counted here at once, so the next question sees it even if the store is slow.
        let local = {
            let mut entry = self.spent.entry(user_id).or_insert((today.clone(), 0));
            if entry.0 != today {
                *entry = (today.clone(), 0);
            }
            entry.1 += tokens;
            entry.1
        };
        match tokio::time::timeout(READ_BUDGET, self.store.add_tokens(user_id, &today, tokens))
            .await
        {
            Ok(Ok(total)) => self.remember(user_id, today, total.max(local)),
            Ok(Err(err)) => warn!("cannot count the question's tokens in the store: {err}"),
            Err(_) => warn!("counting the question's tokens in the store took too long"),
        }
    }
}
