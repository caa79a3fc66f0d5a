//! The environment variables the configuration reads: each one's name, the TOML section and
//! key it sets, and how its text is read.

/// Where each environment variable goes, and how to read it.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    Int,
    Float,
    Bool,
}

pub(super) const ENV: &[(&str, &str, &str, Kind)] = &[
    ("DISCORD_BOT_TOKEN", "discord", "bot_token", Kind::Str),
    ("DISCORD_GUILD_ID", "discord", "guild_id", Kind::Int),
    ("DISCORD_API_BASE", "discord", "api_base", Kind::Str),
    ("DISCORD_PUBLIC_KEY", "discord", "public_key", Kind::Str),
    (
        "ZUNDA_DISCORD_REQUEST_TIMEOUT_SECS",
        "discord",
        "request_timeout_secs",
        Kind::Int,
    ),
    ("ZUNDA_INSTALL", "discord", "install", Kind::Str),
    ("OPENAI_API_KEY", "openai", "api_key", Kind::Str),
    ("OPENAI_BASE_URL", "openai", "base_url", Kind::Str),
    ("OPENAI_MODEL", "openai", "model", Kind::Str),
    ("ZUNDA_TEMPERATURE", "openai", "temperature", Kind::Float),
    (
        "ZUNDA_LLM_CONNECT_TIMEOUT_SECS",
        "openai",
        "connect_timeout_secs",
        Kind::Int,
    ),
    (
        "ZUNDA_LLM_REQUEST_TIMEOUT_SECS",
        "openai",
        "request_timeout_secs",
        Kind::Int,
    ),
    ("ZUNDA_LLM_MAX_RETRIES", "openai", "max_retries", Kind::Int),
    (
        "ZUNDA_ANSWER_TIMEOUT_SECS",
        "openai",
        "answer_timeout_secs",
        Kind::Int,
    ),
    (
        "ZUNDA_MAX_TOOL_ROUNDS",
        "openai",
        "max_tool_rounds",
        Kind::Int,
    ),
    (
        "ZUNDA_MAX_ANSWER_TOKENS",
        "openai",
        "max_answer_tokens",
        Kind::Int,
    ),
    (
        "ZUNDA_MAX_CONCURRENT_LLM",
        "openai",
        "max_concurrent_requests",
        Kind::Int,
    ),
    ("ZUNDA_TOOLS", "openai", "tools", Kind::Str),
    ("ZUNDA_VISION", "openai", "vision", Kind::Bool),
    ("SEARCH_BASE_URL", "search", "base_url", Kind::Str),
    ("ZUNDA_SEARCH_REGION", "search", "region", Kind::Str),
    (
        "ZUNDA_SEARCH_MAX_RESULTS",
        "search",
        "max_results",
        Kind::Int,
    ),
    (
        "ZUNDA_SEARCH_TIMEOUT_SECS",
        "search",
        "timeout_secs",
        Kind::Int,
    ),
    ("ZUNDA_SEARCH_CACHE_SECS", "search", "cache_secs", Kind::Int),
    (
        "ZUNDA_PERSONA_FILE",
        "persona",
        "system_prompt_file",
        Kind::Str,
    ),
    (
        "ZUNDA_CLOSING_REMINDER",
        "persona",
        "closing_reminder",
        Kind::Str,
    ),
    ("ZUNDA_TIME_ZONE", "persona", "time_zone", Kind::Str),
    ("ZUNDA_PERSONA_GUARD", "persona", "guard", Kind::Bool),
    (
        "ZUNDA_CHANNEL_IDLE_SECS",
        "channels",
        "idle_secs",
        Kind::Int,
    ),
    ("ZUNDA_MAX_CHANNELS", "channels", "max_channels", Kind::Int),
    (
        "ZUNDA_WINDOW_EXCHANGES",
        "channels",
        "window_exchanges",
        Kind::Int,
    ),
    ("ZUNDA_DB_PATH", "store", "db_path", Kind::Str),
    ("ZUNDA_RETENTION_DAYS", "store", "retention_days", Kind::Int),
    (
        "ZUNDA_MAX_QUESTION_CHARS",
        "limits",
        "max_question_chars",
        Kind::Int,
    ),
    ("ZUNDA_RATE_BURST", "limits", "rate_burst", Kind::Int),
    (
        "ZUNDA_RATE_PER_MINUTE",
        "limits",
        "rate_per_minute",
        Kind::Int,
    ),
    (
        "ZUNDA_MAX_QUEUED_PER_CHANNEL",
        "limits",
        "max_queued_per_channel",
        Kind::Int,
    ),
    ("ZUNDA_MAX_PENDING", "limits", "max_pending", Kind::Int),
    (
        "ZUNDA_MAX_IMAGE_BYTES",
        "limits",
        "max_image_bytes",
        Kind::Int,
    ),
    (
        "ZUNDA_MAX_FILE_CHARS",
        "limits",
        "max_file_chars",
        Kind::Int,
    ),
    (
        "ZUNDA_DAILY_TOKENS_PER_USER",
        "limits",
        "daily_tokens_per_user",
        Kind::Int,
    ),
    ("ZUNDA_BIND_ADDR", "http", "bind_addr", Kind::Str),
    ("PORT", "http", "port", Kind::Int),
    (
        "ZUNDA_HTTP_HEADER_TIMEOUT_SECS",
        "http",
        "header_timeout_secs",
        Kind::Int,
    ),
    (
        "ZUNDA_HTTP_BODY_TIMEOUT_SECS",
        "http",
        "body_timeout_secs",
        Kind::Int,
    ),
    (
        "ZUNDA_HTTP_IDLE_TIMEOUT_SECS",
        "http",
        "idle_timeout_secs",
        Kind::Int,
    ),
    (
        "ZUNDA_HTTP_MAX_CONNECTIONS",
        "http",
        "max_connections",
        Kind::Int,
    ),
    ("ZUNDA_METRICS_BIND", "http", "metrics_bind", Kind::Str),
    (
        "ZUNDA_SHUTDOWN_GRACE_SECS",
        "shutdown",
        "grace_secs",
        Kind::Int,
    ),
    ("ZUNDA_STREAM", "stream", "enabled", Kind::Bool),
    ("ZUNDA_STREAM_EDIT_MS", "stream", "edit_ms", Kind::Int),
    ("ZUNDA_DATABASE_URL", "store", "database_url", Kind::Str),
    (
        "ZUNDA_DATABASE_POOL_SIZE",
        "store",
        "database_pool_size",
        Kind::Int,
    ),
    ("ZUNDA_SHARD_TOTAL", "gateway", "shard_total", Kind::Int),
    ("ZUNDA_SHARD_RANGE", "gateway", "shard_range", Kind::Str),
    ("ZUNDA_COMMAND_SCOPE", "gateway", "command_scope", Kind::Str),
    ("ZUNDA_FLEET_LEASE_SECS", "fleet", "lease_secs", Kind::Int),
    ("ZUNDA_ALLOW_DMS", "access", "allow_dms", Kind::Bool),
];

/// The environment variable names the configuration reads, for documentation and tests.
pub fn env_names() -> impl Iterator<Item = &'static str> {
    ENV.iter().map(|(name, ..)| *name)
}
