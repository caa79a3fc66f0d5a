//! The bot's configuration: one typed struct, layered from the built-in defaults
//! (`config/default.toml`, compiled in), an optional TOML file and the environment.
//!
//! This is the floor of the house: plain typed data and its validation. It imports nothing of
//! the application; keys and URLs are checked with their crates' own parsers.
//!
//! - [`secret`]: the wrapper that keeps secrets out of logs;
//! - this file: the sections, as the TOML file and the environment give them;
//! - `env`: the table of environment variables and how each is read;
//! - `load`: layering defaults, file and environment into a [`Config`];
//! - `validate`: every problem listed at once;
//! - [`shards`]: the gateway shard range a process serves.

pub mod admin;
mod env;
mod load;
pub mod secret;
pub mod shards;
mod validate;

pub use admin::{AccessConfig, ModelConfig, PlaceConfig, PlaceSettings, Refusal, DEFAULT_MODEL};
pub use env::env_names;
pub use secret::Secret;
pub use shards::ShardRange;
pub use validate::public_key;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The defaults, every setting commented; also the reference operators copy from.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
/// The persona prompt used when `persona.system_prompt_file` is empty.
pub const DEFAULT_PERSONA: &str = include_str!("../../config/persona.md");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub discord: DiscordConfig,
    pub openai: OpenAiConfig,
    pub search: SearchConfig,
    pub persona: PersonaConfig,
    pub channels: ChannelsConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub shutdown: ShutdownConfig,
    pub stream: StreamConfig,
    pub gateway: GatewayConfig,
    pub fleet: FleetConfig,
    /// Who may ask, and where.
    #[serde(default)]
    pub access: AccessConfig,
    /// Named models besides the `[openai]` one.
    #[serde(default)]
    pub models: admin::Models,
    /// Settings of guilds, categories, channels and threads.
    #[serde(default)]
    pub places: Vec<PlaceConfig>,
    /// The file the configuration was loaded from (`--config` / `ZUNDA_CONFIG`): re-read on
    /// SIGHUP.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// Streaming answers into the Discord message as the model writes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Whether answers are streamed (edits as text arrives) or shown when complete.
    pub enabled: bool,
    /// The least time between two edits of one interaction's message, in milliseconds.
    pub edit_ms: u64,
}

impl StreamConfig {
    /// The pace of one interaction's edits, or `None` when streaming is off.
    pub fn edit_every(&self) -> Option<Duration> {
        self.enabled
            .then(|| Duration::from_millis(self.edit_ms.max(MIN_STREAM_EDIT_MS)))
    }
}

/// Discord allows about five edits per 5 s on one message; faster edits only hit 429s.
const MIN_STREAM_EDIT_MS: u64 = 250;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    pub bot_token: Secret,
    pub guild_id: u64,
    pub api_base: String,
    pub public_key: String,
    pub request_timeout_secs: u64,
    /// Where the commands can be installed: `guild` or `guild+user` (see [`Install`]).
    pub install: String,
}

/// Discord's own API base: serenity's rate limiter is used only against it.
pub const DISCORD_DEFAULT_API_BASE: &str = "https://discord.com";

impl DiscordConfig {
    /// Whether REST goes somewhere other than Discord itself (a proxy or a test fake).
    pub fn uses_custom_api_base(&self) -> bool {
        self.api_base.trim_end_matches('/') != DISCORD_DEFAULT_API_BASE
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The validated `install` setting (`guild` if it were somehow invalid).
    pub fn install(&self) -> Install {
        Install::parse(&self.install).unwrap_or(Install::Guild)
    }
}

/// Where the commands can be installed (`ZUNDA_INSTALL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Only with the bot, in a server (registered as `gateway.command_scope` says).
    Guild,
    /// Also by a user, to use anywhere: in servers without the bot, in DMs with the bot and in
    /// group DMs (global commands only; the admin commands stay in servers).
    GuildAndUser,
}

impl Install {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "guild" => Some(Self::Guild),
            "guild+user" => Some(Self::GuildAndUser),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    pub api_key: Secret,
    pub base_url: String,
    pub model: String,
    pub temperature: f32,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_retries: u32,
    pub answer_timeout_secs: u64,
    pub max_tool_rounds: u32,
    /// The longest answer asked for, in tokens (`max_tokens`); 0 sends no limit.
    pub max_answer_tokens: u32,
    pub max_concurrent_requests: usize,
    /// Whether requests offer the model the web search tool: `auto`, `on` or `off`
    /// (see [`ToolMode`]).
    pub tools: String,
    /// Whether the model takes images (`image_url` content parts).
    #[serde(default)]
    pub vision: bool,
}

/// When the chat model is offered the web search tool (`ZUNDA_TOOLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolMode {
    /// Offer it; if the server rejects tools, answer without them from then on.
    Auto,
    /// Always offer it; a server that rejects tools cannot answer.
    On,
    /// Never offer it: the model answers from its own knowledge.
    Off,
}

impl ToolMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "on" => Some(Self::On),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

impl OpenAiConfig {
    /// The validated `tools` setting (`auto` if it were somehow invalid).
    pub fn tool_mode(&self) -> ToolMode {
        ToolMode::parse(&self.tools).unwrap_or(ToolMode::Auto)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    pub base_url: String,
    pub region: String,
    pub max_results: usize,
    pub timeout_secs: u64,
    pub cache_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaConfig {
    pub system_prompt_file: String,
    pub closing_reminder: String,
    pub time_zone: String,
    /// Rewrite, once, a final answer that has none of Zundamon's voice markers.
    pub guard: bool,
    /// The resolved persona prompt (from the file, or the built-in one).
    #[serde(skip)]
    pub system_prompt: String,
}

impl PersonaConfig {
    /// The configured time zone (validated at load).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::Asia::Tokyo)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    pub idle_secs: u64,
    pub max_channels: usize,
    pub window_exchanges: usize,
}

impl ChannelsConfig {
    /// The actor system's settings.
    pub fn settings(&self) -> zundamon_actors::ChannelSettings {
        zundamon_actors::ChannelSettings {
            window_exchanges: self.window_exchanges,
            idle: Duration::from_secs(self.idle_secs),
            max_channels: self.max_channels,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub db_path: PathBuf,
    pub retention_days: u32,
    /// `postgres://…` to keep the store in PostgreSQL; empty for the SQLite file at `db_path`.
    /// May hold a password, so it is a secret.
    pub database_url: Secret,
    pub database_pool_size: usize,
}

impl StoreConfig {
    /// Whether the store is PostgreSQL (else SQLite).
    pub fn uses_postgres(&self) -> bool {
        !self.database_url.is_empty()
    }
}

/// The HTTP fleet (instances behind a load balancer on one PostgreSQL).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Seconds a channel lease lives without renewal: the takeover time after an instance dies.
    pub lease_secs: u64,
}

/// Where `/zunda` is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandScope {
    /// In `DISCORD_GUILD_ID` only (appears at once).
    Guild,
    /// In every guild the bot is in (Discord caches global commands for a while).
    Global,
}

/// Running the bot as several gateway processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub shard_total: u32,
    /// `FIRST-LAST`, one shard, or empty for every shard.
    pub shard_range: String,
    pub command_scope: CommandScope,
}

impl GatewayConfig {
    /// The shards this process runs (validated at load, so this cannot fail afterwards).
    pub fn shards(&self) -> ShardRange {
        ShardRange::parse(&self.shard_range, self.shard_total).unwrap_or(ShardRange::ALL_OF_ONE)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_question_chars: usize,
    pub rate_burst: u32,
    pub rate_per_minute: u32,
    /// Questions one channel may have waiting (answering included); beyond, "busy".
    pub max_queued_per_channel: usize,
    /// Questions accepted and not yet answered across all channels; beyond, "busy".
    pub max_pending: usize,
    /// Tokens one user's questions may cost per day (0: unlimited).
    #[serde(default)]
    pub daily_tokens_per_user: u64,
    /// The largest image accepted, in bytes (declared, then counted while downloading).
    #[serde(default = "default_max_image_bytes")]
    pub max_image_bytes: u64,
    /// The most characters of a text file read into the prompt; the rest is cut with a note.
    #[serde(default = "default_max_file_chars")]
    pub max_file_chars: usize,
}

fn default_max_image_bytes() -> u64 {
    8 * 1024 * 1024
}

fn default_max_file_chars() -> usize {
    20_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub bind_addr: String,
    pub port: u16,
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    pub metrics_bind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    pub grace_secs: u64,
}

/// What the configuration is loaded for: each use requires different settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Running the Discord bot: Discord and model credentials are required.
    Bot,
    /// `zundamon ask`: only the model settings are required.
    Ask,
    /// `zundamon check-config`: everything the bot needs is checked.
    Check,
    /// `zundamon healthcheck`: only where the health server listens matters; no credentials.
    Probe,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const REQUIRED: &[(&str, &str)] = &[
        ("DISCORD_BOT_TOKEN", "tok-123"),
        ("DISCORD_GUILD_ID", "42"),
        ("OPENAI_API_KEY", "sk-secret"),
    ];

    #[test]
    fn defaults_with_required_env() {
        let config = Config::load_with(None, Purpose::Bot, env_of(REQUIRED)).unwrap();
        assert_eq!(config.discord.guild_id, 42);
        assert_eq!(config.openai.base_url, "https://api.openai.com/v1");
        assert_eq!(config.openai.model, "gpt-4o-mini");
        assert_eq!(config.search.base_url, "https://html.duckduckgo.com");
        assert_eq!(config.http.port, 8080);
        assert_eq!(config.channels.idle_secs, 600);
        assert_eq!(config.channels.max_channels, 10_000);
        assert_eq!(config.channels.window_exchanges, 5);
        assert_eq!(config.shutdown.grace_secs, 25);
        assert!(!config.discord.uses_custom_api_base());
        assert!(config.persona.system_prompt.contains("ずんだもん"));
    }

    #[test]
    fn missing_required_settings_are_all_listed() {
        let err = Config::load_with(None, Purpose::Bot, env_of(&[])).unwrap_err();
        let text = err.to_string();
        for name in ["DISCORD_BOT_TOKEN", "DISCORD_GUILD_ID", "OPENAI_API_KEY"] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn ask_needs_only_the_model_key() {
        let config =
            Config::load_with(None, Purpose::Ask, env_of(&[("OPENAI_API_KEY", "x")])).unwrap();
        assert_eq!(config.discord.guild_id, 0);
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("zunda-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[channels]\nidle_secs = 5\nmax_channels = 7\n").unwrap();
        let mut env = REQUIRED.to_vec();
        env.push(("ZUNDA_MAX_CHANNELS", "9"));
        env.push(("PORT", "9999"));
        env.push(("OPENAI_MODEL", "llama3"));
        let config = Config::load_with(Some(&file), Purpose::Bot, env_of(&env)).unwrap();
        assert_eq!(config.channels.idle_secs, 5);
        assert_eq!(config.channels.max_channels, 9);
        assert_eq!(config.http.port, 9999);
        assert_eq!(config.openai.model, "llama3");
    }

    #[test]
    fn malformed_values_are_reported() {
        let mut env = REQUIRED.to_vec();
        env.push(("ZUNDA_MAX_CHANNELS", "lots"));
        env.push(("PORT", "x"));
        let text = Config::load_with(None, Purpose::Bot, env_of(&env))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("ZUNDA_MAX_CHANNELS") && text.contains("PORT"),
            "{text}"
        );

        let mut env = REQUIRED.to_vec();
        env.push(("ZUNDA_TIME_ZONE", "Mars/Olympus"));
        env.push(("OPENAI_BASE_URL", "not a url"));
        let text = Config::load_with(None, Purpose::Bot, env_of(&env))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("ZUNDA_TIME_ZONE") && text.contains("OPENAI_BASE_URL"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_in_a_file_are_rejected() {
        let dir = std::env::temp_dir().join(format!("zunda-config-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[channels]\nidle_sec = 5\n").unwrap();
        let text = Config::load_with(Some(&file), Purpose::Bot, env_of(REQUIRED))
            .unwrap_err()
            .to_string();
        assert!(text.contains("idle_sec"), "{text}");
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::load_with(None, Purpose::Bot, env_of(REQUIRED)).unwrap();
        let debug = format!("{config:?}");
        let shown = config.to_redacted_toml();
        for text in [&debug, &shown] {
            assert!(
                !text.contains("tok-123") && !text.contains("sk-secret"),
                "{text}"
            );
            assert!(text.contains("[redacted]"));
        }
    }

    #[test]
    fn tools_mode_is_auto_by_default_and_checked() {
        let config =
            Config::load_with(None, Purpose::Ask, env_of(&[("OPENAI_API_KEY", "k")])).unwrap();
        assert_eq!(config.openai.tool_mode(), ToolMode::Auto);
        for (raw, mode) in [
            ("on", ToolMode::On),
            ("OFF", ToolMode::Off),
            (" auto ", ToolMode::Auto),
        ] {
            let config = Config::load_with(
                None,
                Purpose::Ask,
                env_of(&[("OPENAI_API_KEY", "k"), ("ZUNDA_TOOLS", raw)]),
            )
            .unwrap();
            assert_eq!(config.openai.tool_mode(), mode, "{raw}");
        }
        let err = Config::load_with(
            None,
            Purpose::Ask,
            env_of(&[("OPENAI_API_KEY", "k"), ("ZUNDA_TOOLS", "maybe")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("ZUNDA_TOOLS=\"maybe\" must be auto, on or off"),
            "{err}"
        );
    }

    #[test]
    fn http_limits_are_read_and_checked() {
        let config = Config::load_with(None, Purpose::Bot, env_of(REQUIRED)).unwrap();
        assert_eq!(
            (
                config.http.header_timeout_secs,
                config.http.body_timeout_secs,
                config.http.idle_timeout_secs,
                config.http.max_connections,
                config.http.metrics_bind.as_str()
            ),
            (10, 5, 5, 256, "")
        );
        let mut env = REQUIRED.to_vec();
        env.push(("ZUNDA_HTTP_MAX_CONNECTIONS", "1000"));
        env.push(("ZUNDA_METRICS_BIND", "127.0.0.1:9090"));
        let config = Config::load_with(None, Purpose::Bot, env_of(&env)).unwrap();
        assert_eq!(config.http.max_connections, 1000);
        assert_eq!(config.http.metrics_bind, "127.0.0.1:9090");
        let mut env = REQUIRED.to_vec();
        env.push(("ZUNDA_HTTP_HEADER_TIMEOUT_SECS", "0"));
        env.push(("ZUNDA_HTTP_MAX_CONNECTIONS", "0"));
        env.push(("ZUNDA_METRICS_BIND", "localhost"));
        let text = Config::load_with(None, Purpose::Bot, env_of(&env))
            .unwrap_err()
            .to_string();
        for name in [
            "ZUNDA_HTTP_HEADER_TIMEOUT_SECS",
            "ZUNDA_HTTP_MAX_CONNECTIONS",
            "ZUNDA_METRICS_BIND",
        ] {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn every_env_name_is_documented_in_default_toml() {
        for name in env_names() {
            assert!(
                DEFAULT_TOML.contains(name),
                "{name} missing from config/default.toml"
            );
        }
    }

    #[test]
    fn install_and_dms_are_read_and_checked() {
        let config = Config::load_with(None, Purpose::Bot, env_of(REQUIRED)).unwrap();
        assert_eq!(config.discord.install(), Install::Guild);
        assert!(config.access.allow_dms, "DMs are answered by default");

        let env = [
            ("DISCORD_BOT_TOKEN", "tok"),
            ("OPENAI_API_KEY", "k"),
            ("ZUNDA_INSTALL", "Guild+User"),
            ("ZUNDA_ALLOW_DMS", "false"),
        ];
        let config = Config::load_with(None, Purpose::Bot, env_of(&env)).unwrap();
        assert_eq!(config.discord.install(), Install::GuildAndUser);
        assert_eq!(
            config.discord.guild_id, 0,
            "no guild needed for global commands"
        );
        assert!(!config.access.allow_dms);

        let mut env = REQUIRED.to_vec();
        env.push(("ZUNDA_INSTALL", "user"));
        env.push(("ZUNDA_TOOLS", "maybe"));
        let text = Config::load_with(None, Purpose::Bot, env_of(&env))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("ZUNDA_INSTALL=\"user\" must be guild or guild+user")
                && text.contains("ZUNDA_TOOLS"),
            "{text}"
        );
    }

    #[test]
    fn scaling_settings_are_read_and_checked() {
        let config = Config::load_with(None, Purpose::Bot, env_of(REQUIRED)).unwrap();
        assert!(!config.store.uses_postgres(), "SQLite by default");
        assert_eq!(config.gateway.shards(), ShardRange::ALL_OF_ONE);
        assert_eq!(config.gateway.command_scope, CommandScope::Guild);

        let mut env = REQUIRED.to_vec();
        env.extend([
            (
                "ZUNDA_DATABASE_URL",
                "postgres://zunda:pw-secret@db:5432/zunda",
            ),
            ("ZUNDA_SHARD_TOTAL", "4"),
            ("ZUNDA_SHARD_RANGE", "2-3"),
            ("ZUNDA_COMMAND_SCOPE", "global"),
            ("DISCORD_GUILD_ID", "0"),
        ]);
        let config = Config::load_with(None, Purpose::Bot, env_of(&env)).unwrap();
        assert!(config.store.uses_postgres());
        assert_eq!(config.gateway.shards().shards(), 2..=3);
        assert_eq!(config.gateway.command_scope, CommandScope::Global);
        assert!(!config.to_redacted_toml().contains("pw-secret"));
        assert!(!format!("{config:?}").contains("pw-secret"));

        let mut env = REQUIRED.to_vec();
        env.extend([
            ("ZUNDA_DATABASE_URL", "mysql://db/zunda"),
            ("ZUNDA_SHARD_TOTAL", "2"),
            ("ZUNDA_SHARD_RANGE", "0-3"),
            ("ZUNDA_DATABASE_POOL_SIZE", "0"),
        ]);
        let Err(ConfigError::Invalid(problems)) =
            Config::load_with(None, Purpose::Bot, env_of(&env))
        else {
            panic!("invalid scaling settings must be refused");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("ZUNDA_DATABASE_URL must be a postgres:// URL"),
            "{all}"
        );
        assert!(all.contains("outside ZUNDA_SHARD_TOTAL=2"), "{all}");
        assert!(
            all.contains("ZUNDA_DATABASE_POOL_SIZE must be at least 1"),
            "{all}"
        );
    }
}
