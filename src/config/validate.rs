//! Validation: every problem with the configuration, listed at once, each saying what to do.

use super::{CommandScope, Config, Install, Purpose, ShardRange, ToolMode};

impl Config {
    pub(super) fn validate(&self, purpose: Purpose, problems: &mut Vec<String>) {
        self.validate_admin(problems);
        let needs_discord = matches!(purpose, Purpose::Bot | Purpose::Check);
        if needs_discord && self.discord.bot_token.is_empty() {
            problems.push(
                "DISCORD_BOT_TOKEN is not set: export it or set discord.bot_token in a --config file"
                    .into(),
            );
        }
        if needs_discord
            && self.discord.guild_id == 0
            && self.gateway.command_scope == CommandScope::Guild
            && self.discord.install() == Install::Guild
        {
            problems.push(
                "DISCORD_GUILD_ID is not set: export the id of the guild to register /zunda in"
                    .into(),
            );
        }
        if purpose != Purpose::Probe && self.openai.api_key.is_empty() {
            problems.push(
                "OPENAI_API_KEY is not set: export it (local OpenAI-compatible servers accept any non-empty value)"
                    .into(),
            );
        }
        for (name, url) in [
            ("DISCORD_API_BASE", &self.discord.api_base),
            ("OPENAI_BASE_URL", &self.openai.base_url),
            ("SEARCH_BASE_URL", &self.search.base_url),
        ] {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => problems.push(format!("{name}={url:?} is not an http(s) URL")),
            }
        }
        if !self.discord.public_key.trim().is_empty() {
            if let Err(problem) = public_key(&self.discord.public_key) {
                problems.push(problem);
            }
        }
        if self.openai.model.trim().is_empty() {
            problems.push("OPENAI_MODEL is empty".into());
        }
        if Install::parse(&self.discord.install).is_none() {
            problems.push(format!(
                "ZUNDA_INSTALL={:?} must be guild or guild+user",
                self.discord.install
            ));
        }
        if ToolMode::parse(&self.openai.tools).is_none() {
            problems.push(format!(
                "ZUNDA_TOOLS={:?} must be auto, on or off",
                self.openai.tools
            ));
        }
        if !(0.0..=2.0).contains(&self.openai.temperature) {
            problems.push("ZUNDA_TEMPERATURE must be between 0 and 2".into());
        }
        if self.persona.time_zone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(format!(
                "ZUNDA_TIME_ZONE={:?} is not an IANA time zone (e.g. Asia/Tokyo)",
                self.persona.time_zone
            ));
        }
        let positive: [(&str, u64); 14] = [
            (
                "ZUNDA_DISCORD_REQUEST_TIMEOUT_SECS",
                self.discord.request_timeout_secs,
            ),
            (
                "ZUNDA_LLM_CONNECT_TIMEOUT_SECS",
                self.openai.connect_timeout_secs,
            ),
            (
                "ZUNDA_LLM_REQUEST_TIMEOUT_SECS",
                self.openai.request_timeout_secs,
            ),
            ("ZUNDA_ANSWER_TIMEOUT_SECS", self.openai.answer_timeout_secs),
            (
                "ZUNDA_MAX_CONCURRENT_LLM",
                self.openai.max_concurrent_requests as u64,
            ),
            ("ZUNDA_SEARCH_TIMEOUT_SECS", self.search.timeout_secs),
            ("ZUNDA_CHANNEL_IDLE_SECS", self.channels.idle_secs),
            ("ZUNDA_MAX_CHANNELS", self.channels.max_channels as u64),
            ("ZUNDA_RETENTION_DAYS", u64::from(self.store.retention_days)),
            (
                "ZUNDA_MAX_QUESTION_CHARS",
                self.limits.max_question_chars as u64,
            ),
            ("ZUNDA_RATE_BURST", u64::from(self.limits.rate_burst)),
            (
                "ZUNDA_RATE_PER_MINUTE",
                u64::from(self.limits.rate_per_minute),
            ),
            (
                "ZUNDA_MAX_QUEUED_PER_CHANNEL",
                self.limits.max_queued_per_channel as u64,
            ),
            ("ZUNDA_MAX_PENDING", self.limits.max_pending as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        for (name, value) in [
            (
                "ZUNDA_HTTP_HEADER_TIMEOUT_SECS",
                self.http.header_timeout_secs,
            ),
            ("ZUNDA_HTTP_BODY_TIMEOUT_SECS", self.http.body_timeout_secs),
            ("ZUNDA_HTTP_IDLE_TIMEOUT_SECS", self.http.idle_timeout_secs),
            (
                "ZUNDA_HTTP_MAX_CONNECTIONS",
                self.http.max_connections as u64,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        let metrics_bind = self.http.metrics_bind.trim();
        if !metrics_bind.is_empty() && metrics_bind.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "ZUNDA_METRICS_BIND={metrics_bind:?} is not an address: use IP:PORT, e.g. 127.0.0.1:9090"
            ));
        }
        if self.channels.window_exchanges > 100 {
            problems.push("ZUNDA_WINDOW_EXCHANGES must be at most 100".into());
        }
        if self.limits.max_question_chars > 6000 {
            problems.push(
                "ZUNDA_MAX_QUESTION_CHARS must be at most 6000 (Discord's option limit)".into(),
            );
        }
        if self.store.db_path.as_os_str().is_empty() {
            problems.push("ZUNDA_DB_PATH is empty".into());
        }
        self.validate_scale(problems);
    }

    /// The settings for running beyond one process: the PostgreSQL URL and the shard range.
    fn validate_scale(&self, problems: &mut Vec<String>) {
        if self.store.uses_postgres() {
            let url = self.store.database_url.expose().trim();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(
                    "ZUNDA_DATABASE_URL must be a postgres:// URL (or empty for the SQLite file at ZUNDA_DB_PATH)"
                        .into(),
                );
            } else if let Err(err) = url.parse::<tokio_postgres::Config>() {
                // The driver's message never repeats the URL, so it cannot leak the password.
                problems.push(format!(
                    "ZUNDA_DATABASE_URL is not a PostgreSQL URL ({err}) — use postgres://USER:PASSWORD@HOST:5432/DATABASE"
                ));
            }
        }
        if self.fleet.lease_secs < 2 {
            problems.push(
                "ZUNDA_FLEET_LEASE_SECS must be at least 2 (leases are renewed every second)"
                    .into(),
            );
        }
        if self.store.database_pool_size == 0 {
            problems.push("ZUNDA_DATABASE_POOL_SIZE must be at least 1".into());
        }
        if let Err(problem) = ShardRange::parse(&self.gateway.shard_range, self.gateway.shard_total)
        {
            problems.push(problem);
        }
    }
}

/// The application's Ed25519 public key from `DISCORD_PUBLIC_KEY` (64 hex digits), checked with
/// serenity's own verifier.
pub fn public_key(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "DISCORD_PUBLIC_KEY must be the application's public key: 64 hex digits".into(),
        );
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex digits");
    }
    serenity::interactions_endpoint::Verifier::try_new(key)
        .map(|_| key)
        .map_err(|err| format!("DISCORD_PUBLIC_KEY is not a valid Ed25519 key: {err}"))
}
