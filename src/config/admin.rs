//! What admins decide: who may ask and where (`[access]`), the named models (`[models.NAME]`),
//! and the settings of a guild, category, channel or thread (`[[places]]`), resolved key by key
//! from the most specific place that sets each key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Config, OpenAiConfig, Secret};

/// The name of the model the `[openai]` section (and the `OPENAI_*` variables) describe.
pub const DEFAULT_MODEL: &str = "default";

/// A Discord id as an operator writes it: a string or an integer. Checked by validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdEntry {
    Int(i64),
    Str(String),
}

impl IdEntry {
    /// The id, if it is one (a positive integer, as a number or in a string).
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Int(n) => u64::try_from(*n).ok().filter(|&n| n > 0),
            Self::Str(text) => text.trim().parse::<u64>().ok().filter(|&n| n > 0),
        }
    }

    fn shown(&self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Str(text) => format!("{text:?}"),
        }
    }
}

/// Whether `entries` list `id`.
fn listed(entries: &[IdEntry], id: u64) -> bool {
    entries.iter().any(|entry| entry.id() == Some(id))
}

/// The rule of every pair of lists: no id of `ids` blocked, and (when the allow list names any)
/// one of them allowed.
fn admits(allowed: &[IdEntry], blocked: &[IdEntry], ids: &[u64]) -> bool {
    if ids.iter().any(|&id| listed(blocked, id)) {
        return false;
    }
    allowed.iter().all(|entry| entry.id().is_none()) || ids.iter().any(|&id| listed(allowed, id))
}

/// `[access]`: who may ask, and where. Empty allow lists allow everyone (everywhere); a blocked
/// entry beats an allowed one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub allowed_users: Vec<IdEntry>,
    pub blocked_users: Vec<IdEntry>,
    pub allowed_roles: Vec<IdEntry>,
    pub blocked_roles: Vec<IdEntry>,
    /// Channel or category ids; a thread is judged by its parent channel (and its category).
    pub allowed_channels: Vec<IdEntry>,
    pub blocked_channels: Vec<IdEntry>,
    /// Users who may use the admin commands (`/zunda-model`, `/zunda-reset`) anywhere.
    pub admins: Vec<IdEntry>,
    /// Whether `/zunda` is answered outside a guild (DMs, group DMs); `admins` always are.
    pub allow_dms: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            allowed_users: Vec::new(),
            blocked_users: Vec::new(),
            allowed_roles: Vec::new(),
            blocked_roles: Vec::new(),
            allowed_channels: Vec::new(),
            blocked_channels: Vec::new(),
            admins: Vec::new(),
            allow_dms: true,
        }
    }
}

/// Why the access lists refuse a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    User,
    Role,
    Channel,
}

impl AccessConfig {
    /// Whether `user` may ask: the user lists always; the role lists when `roles` is known (in a
    /// guild); the channel lists against `places` (the channel, its parent, its category), when
    /// there are places (in a guild).
    pub fn check(&self, user: u64, roles: Option<&[u64]>, places: &[u64]) -> Result<(), Refusal> {
        self.check_user(user)?;
        if let Some(roles) = roles {
            if !admits(&self.allowed_roles, &self.blocked_roles, roles) {
                return Err(Refusal::Role);
            }
        }
        if !places.is_empty() && !admits(&self.allowed_channels, &self.blocked_channels, places) {
            return Err(Refusal::Channel);
        }
        Ok(())
    }

    /// The user lists alone (a mention, a DM).
    pub fn check_user(&self, user: u64) -> Result<(), Refusal> {
        if admits(&self.allowed_users, &self.blocked_users, &[user]) {
            Ok(())
        } else {
            Err(Refusal::User)
        }
    }

    /// Whether `user` is one of the `admins`.
    pub fn is_admin(&self, user: u64) -> bool {
        listed(&self.admins, user)
    }

    fn validate(&self, problems: &mut Vec<String>) {
        for (key, entries) in [
            ("allowed_users", &self.allowed_users),
            ("blocked_users", &self.blocked_users),
            ("allowed_roles", &self.allowed_roles),
            ("blocked_roles", &self.blocked_roles),
            ("allowed_channels", &self.allowed_channels),
            ("blocked_channels", &self.blocked_channels),
            ("admins", &self.admins),
        ] {
            for entry in entries.iter().filter(|entry| entry.id().is_none()) {
                problems.push(format!(
                    "access.{key}: {} is not a Discord id (a positive integer, as a number or a string)",
                    entry.shown()
                ));
            }
        }
    }
}

/// `[models.NAME]`: a model besides the default one, on its own server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub base_url: String,
    pub model: String,
    /// The name of the environment variable holding the key (keys are never written in files).
    #[serde(default)]
    pub api_key_env: String,
    /// Whether the model takes images.
    #[serde(default)]
    pub vision: bool,
    /// The key, read from `api_key_env` when the configuration loads.
    #[serde(skip)]
    pub api_key: Secret,
}

/// `[[places]]`: the settings of one guild, category, channel or thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceConfig {
    pub id: IdEntry,
    /// Appended to the persona prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    /// A name from `[models]` (or `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Whether web search is offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<bool>,
}

/// The settings a question is answered with, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceSettings {
    /// The name of the model (`default` or a `[models]` name).
    pub model: String,
    /// Whether that model takes images.
    pub vision: bool,
    /// Whether web search is offered.
    pub search: bool,
    /// The persona addendum, if a place sets one.
    pub persona: Option<String>,
    /// Whether a `/zunda-model` choice decided the model.
    pub chosen: bool,
}

impl Config {
    /// The settings of a question asked in `places` (most specific first: thread, channel,
    /// category, guild), with `choice` the `/zunda-model` choice found there (the index in
    /// `places` it was made at, and the model name). Each key comes from the most specific place
    /// that sets it; at the same place a choice beats `[[places]]`. A model name no longer
    /// configured is passed over.
    pub fn place_settings(&self, places: &[u64], choice: Option<(usize, &str)>) -> PlaceSettings {
        let mut settings =
            resolve_place(&self.places, &|name| self.has_model(name), places, choice);
        settings.vision = self.model_vision(&settings.model);
        settings
    }

    /// Whether model `name` takes images.
    pub fn model_vision(&self, name: &str) -> bool {
        match self.models.get(name) {
            Some(entry) => entry.vision,
            None => name == DEFAULT_MODEL && self.openai.vision,
        }
    }

    /// Whether `name` is `default` or a configured model.
    pub fn has_model(&self, name: &str) -> bool {
        name == DEFAULT_MODEL || self.models.contains_key(name)
    }

    /// Every model name: `default` first, then the `[models]` names in order.
    pub fn model_names(&self) -> Vec<String> {
        std::iter::once(DEFAULT_MODEL.to_owned())
            .chain(self.models.keys().cloned())
            .collect()
    }

    /// The client settings of model `name`: the `[openai]` section with the entry's server,
    /// model and key.
    pub fn model_openai(&self, name: &str) -> Option<OpenAiConfig> {
        if name == DEFAULT_MODEL {
            return Some(self.openai.clone());
        }
        let entry = self.models.get(name)?;
        let mut openai = self.openai.clone();
        openai.base_url = entry.base_url.clone();
        openai.model = entry.model.clone();
        openai.api_key = entry.api_key.clone();
        openai.vision = entry.vision;
        Some(openai)
    }

    /// Reads each `[models]` key from its variable.
    pub(super) fn resolve_model_keys(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) {
        for (name, entry) in &mut self.models {
            let var = entry.api_key_env.trim();
            if var.is_empty() {
                problems.push(format!(
                    "models.{name}.api_key_env is empty: name the environment variable holding its key"
                ));
                continue;
            }
            match env(var).filter(|key| !key.trim().is_empty()) {
                Some(key) => entry.api_key = Secret::new(key.trim().to_owned()),
                None => problems.push(format!(
                    "models.{name}: the variable {var} (api_key_env) is not set: export it (local servers accept any non-empty value)"
                )),
            }
        }
    }

    pub(super) fn validate_admin(&self, problems: &mut Vec<String>) {
        self.access.validate(problems);
        if self.limits.max_image_bytes == 0 {
            problems.push("ZUNDA_MAX_IMAGE_BYTES must be at least 1".into());
        }
        if self.limits.max_file_chars == 0 {
            problems.push("ZUNDA_MAX_FILE_CHARS must be at least 1".into());
        }
        if self.models.contains_key(DEFAULT_MODEL) {
            problems.push(
                "models.default: \"default\" is the [openai] model; name this one otherwise".into(),
            );
        }
        for (name, entry) in &self.models {
            if name.trim().is_empty() || name.chars().count() > 100 {
                problems.push(format!(
                    "models.{name:?}: a model name is 1 to 100 characters"
                ));
            }
            match url::Url::parse(&entry.base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => problems.push(format!(
                    "models.{name}.base_url={:?} is not an http(s) URL",
                    entry.base_url
                )),
            }
            if entry.model.trim().is_empty() {
                problems.push(format!("models.{name}.model is empty"));
            }
        }
        for place in &self.places {
            if place.id.id().is_none() {
                problems.push(format!(
                    "places: id {} is not a Discord id (a positive integer, as a number or a string)",
                    place.id.shown()
                ));
            }
            if let Some(name) = &place.model {
                if !self.has_model(name) {
                    problems.push(format!(
                        "places: id {} names model {name:?}, which is not configured (known: {})",
                        place.id.shown(),
                        self.model_names().join(", ")
                    ));
                }
            }
        }
    }
}

/// The settings of a question asked in `places` (see [`Config::place_settings`]), with
/// `known` telling which model names are configured.
pub fn resolve_place(
    entries: &[PlaceConfig],
    known: &dyn Fn(&str) -> bool,
    places: &[u64],
    choice: Option<(usize, &str)>,
) -> PlaceSettings {
    let mut settings = PlaceSettings {
        model: DEFAULT_MODEL.to_owned(),
        vision: false,
        search: true,
        persona: None,
        chosen: false,
    };
    let (mut model, mut search, mut persona) = (false, false, false);
    for (level, place) in places.iter().enumerate() {
        if let Some((at, name)) = choice {
            if at == level && !model && known(name) {
                settings.model = name.to_owned();
                settings.chosen = true;
                model = true;
            }
        }
        for entry in entries.iter().filter(|entry| entry.id.id() == Some(*place)) {
            if let (false, Some(name)) = (model, &entry.model) {
                if known(name) {
                    settings.model = name.clone();
                    model = true;
                }
            }
            if let (false, Some(on)) = (search, entry.search) {
                settings.search = on;
                search = true;
            }
            if let (false, Some(text)) = (persona, &entry.persona) {
                if !text.trim().is_empty() {
                    settings.persona = Some(text.clone());
                }
                persona = true;
            }
        }
    }
    settings
}

/// The `[models]` table, in name order.
pub type Models = BTreeMap<String, ModelConfig>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Purpose;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let dir = std::env::temp_dir().join(format!("zunda-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", toml.len()));
        std::fs::write(&path, toml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("OPENAI_API_KEY".into(), "k".into())])
            .collect();
        Config::load_with(Some(&path), Purpose::Ask, |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .map_err(|err| match err {
            crate::config::ConfigError::Invalid(problems) => problems,
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn ids_are_strings_or_integers_and_bad_ones_are_all_listed() {
        let config = load(
            "[access]\nblocked_users = [\"12\", 13]\nallowed_roles = [7]\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.access.check_user(12), Err(Refusal::User));
        assert_eq!(config.access.check_user(13), Err(Refusal::User));
        assert_eq!(config.access.check_user(14), Ok(()));
        let problems = load(
            "[access]\nadmins = [\"abc\", -1]\n[[places]]\nid = \"x\"\nmodel = \"nope\"\n[models.fast]\nbase_url = \"http://h/v1\"\nmodel = \"m\"\napi_key_env = \"FAST_KEY\"\n",
            &[],
        )
        .unwrap_err();
        let all = problems.join("\n");
        for needle in ["\"abc\"", "-1", "id \"x\"", "\"nope\"", "FAST_KEY"] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }

    #[test]
    fn blocked_beats_allowed_and_threads_are_judged_by_their_parents() {
        let config = load(
            "[access]\nallowed_channels = [100]\nblocked_channels = [\"101\"]\nblocked_roles = [9]\n",
            &[],
        )
        .unwrap();
        let access = &config.access;
        assert_eq!(access.check(1, Some(&[]), &[555, 100]), Ok(()));
        assert_eq!(
            access.check(1, Some(&[]), &[101, 100]),
            Err(Refusal::Channel)
        );
        assert_eq!(
            access.check(1, Some(&[]), &[556, 200]),
            Err(Refusal::Channel)
        );
        assert_eq!(access.check(1, Some(&[3, 9]), &[100]), Err(Refusal::Role));
        // Outside a guild only the user lists apply.
        assert_eq!(access.check(1, None, &[]), Ok(()));
    }

    #[test]
    fn settings_come_key_by_key_from_the_most_specific_place() {
        let config = load(
            "[models.fast]\nbase_url = \"http://h/v1\"\nmodel = \"m\"\napi_key_env = \"FAST_KEY\"\n\
             [[places]]\nid = 1\npersona = \"guild\"\nsearch = false\n\
             [[places]]\nid = \"2\"\nmodel = \"fast\"\n\
             [[places]]\nid = 3\npersona = \"channel\"\n",
            &[("FAST_KEY", "secret")],
        )
        .unwrap();
        // thread 4 → channel 3 → category 2 → guild 1
        let settings = config.place_settings(&[4, 3, 2, 1], None);
        assert_eq!(settings.model, "fast");
        assert!(!settings.search);
        assert_eq!(settings.persona.as_deref(), Some("channel"));
        assert!(!settings.chosen);
        let chosen = config.place_settings(&[4, 3, 2, 1], Some((0, DEFAULT_MODEL)));
        assert_eq!((chosen.model.as_str(), chosen.chosen), ("default", true));
        // A choice naming a model no longer configured is passed over.
        let stale = config.place_settings(&[4, 3, 2, 1], Some((0, "gone")));
        assert_eq!((stale.model.as_str(), stale.chosen), ("fast", false));
        assert_eq!(
            config.model_openai("fast").unwrap().api_key.expose(),
            "secret"
        );
        assert_eq!(config.model_names(), vec!["default", "fast"]);
    }
}
