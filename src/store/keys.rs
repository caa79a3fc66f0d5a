//! How ids are stored: Discord snowflakes (`u64`) in the databases' signed 64-bit integers, the
//! same way in SQLite, PostgreSQL and the fleet's lease queries.

use zundamon_actors::ChannelId;

/// Stores a channel id in a signed 64-bit integer (SQLite's INTEGER, PostgreSQL's BIGINT).
/// Snowflakes are below 2^63 and so are stored unchanged (readable in a database shell); anything
/// larger wraps to a negative number, which is still one-to-one, so no two channels ever share
/// rows.
pub(crate) fn channel_key(channel: ChannelId) -> i64 {
    i64::from_ne_bytes(channel.to_ne_bytes())
}

/// The snowflake stored by [`channel_key`].
pub(crate) fn unkey(key: i64) -> u64 {
    u64::from_ne_bytes(key.to_ne_bytes())
}
