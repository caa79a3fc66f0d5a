//! Which guilds a process serves when the bot runs as several processes, each with a range of
//! Discord's gateway shards (`ZUNDA_SHARD_TOTAL`, `ZUNDA_SHARD_RANGE`). Discord sends a guild's
//! events to shard `(guild_id >> 22) % total`, so a channel (which lives in one guild) always
//! reaches the same process and its actor stays local.

use std::fmt;
use std::ops::RangeInclusive;

/// The shard Discord routes `guild_id`'s events to, out of `total` shards.
pub fn shard_of(guild_id: u64, total: u32) -> u32 {
    // `total` is at least 1 once validated; the remainder is below `total`, so it fits.
    ((guild_id >> 22) % u64::from(total.max(1))) as u32
}

/// The shards this process runs, out of the bot's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRange {
    pub first: u32,
    pub last: u32,
    pub total: u32,
}

impl ShardRange {
    /// Every shard of one: a single process.
    pub const ALL_OF_ONE: Self = Self {
        first: 0,
        last: 0,
        total: 1,
    };

    /// Reads `range` (`"0-3"`, `"2"`, or empty for every shard) out of `total` shards. The error
    /// names both variables and says what would be valid.
    pub fn parse(range: &str, total: u32) -> Result<Self, String> {
        if total == 0 {
            return Err("ZUNDA_SHARD_TOTAL must be at least 1".into());
        }
        let range = range.trim();
        if range.is_empty() {
            return Ok(Self {
                first: 0,
                last: total - 1,
                total,
            });
        }
        let malformed = || {
            format!(
                "ZUNDA_SHARD_RANGE={range:?} is not a shard range: write FIRST-LAST (e.g. 0-{}) or one shard number",
                total - 1
            )
        };
        let number = |text: &str| text.trim().parse::<u32>().map_err(|_| malformed());
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => {
                let only = number(range)?;
                (only, only)
            }
        };
        if first > last {
            return Err(format!(
                "ZUNDA_SHARD_RANGE={range:?} starts after it ends: write the lower shard first"
            ));
        }
        if last >= total {
            return Err(format!(
                "ZUNDA_SHARD_RANGE={range:?} is outside ZUNDA_SHARD_TOTAL={total}: shards are numbered 0 to {}",
                total - 1
            ));
        }
        Ok(Self { first, last, total })
    }

    /// The shard ids, as serenity's `start_shard_range` takes them.
    pub fn shards(&self) -> RangeInclusive<u32> {
        self.first..=self.last
    }

    /// Whether a question from `guild_id` belongs to this process. Direct messages (no guild)
    /// arrive on shard 0.
    pub fn owns(&self, guild_id: Option<u64>) -> bool {
        let shard = guild_id.map_or(0, |guild| shard_of(guild, self.total));
        self.shards().contains(&shard)
    }
}

impl fmt::Display for ShardRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} of {}", self.first, self.last, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guild id whose shard out of `total` is `shard`.
    fn guild_on(shard: u64, total: u64) -> u64 {
        ((1_000 * total + shard) << 22) | 12345
    }

    #[test]
    fn shard_of_follows_discords_formula() {
        assert_eq!(shard_of(41_771_983_423_143_937, 1), 0);
        let guild = 197_038_439_483_310_086_u64;
        assert_eq!(shard_of(guild, 1000), ((guild >> 22) % 1000) as u32);
        for shard in 0..4 {
            assert_eq!(shard_of(guild_on(shard, 4), 4), shard as u32);
        }
        assert_eq!(shard_of(u64::MAX, 7), ((u64::MAX >> 22) % 7) as u32);
        assert_eq!(
            shard_of(5 << 22, 0),
            0,
            "a zero total never divides by zero"
        );
    }

    #[test]
    fn ranges_parse_and_validate() {
        assert_eq!(
            ShardRange::parse("", 4).unwrap(),
            ShardRange {
                first: 0,
                last: 3,
                total: 4
            }
        );
        assert_eq!(ShardRange::parse(" 1-2 ", 4).unwrap().shards(), 1..=2);
        assert_eq!(ShardRange::parse("3", 4).unwrap().shards(), 3..=3);
        assert_eq!(ShardRange::parse("", 1).unwrap(), ShardRange::ALL_OF_ONE);
        assert_eq!(
            ShardRange::parse("0-0", 2).unwrap(),
            ShardRange {
                first: 0,
                last: 0,
                total: 2
            }
        );
        for (range, total, says) in [
            ("0-4", 4, "outside ZUNDA_SHARD_TOTAL=4"),
            ("4", 4, "numbered 0 to 3"),
            ("3-1", 4, "starts after it ends"),
            ("a-b", 4, "not a shard range"),
            ("-1", 4, "not a shard range"),
            ("1-", 4, "not a shard range"),
            ("0-1", 0, "ZUNDA_SHARD_TOTAL must be at least 1"),
        ] {
            let err = ShardRange::parse(range, total).unwrap_err();
            assert!(err.contains(says), "{range}/{total}: {err}");
        }
    }

    #[test]
    fn owns_only_the_guilds_of_its_shards() {
        let low = ShardRange::parse("0-0", 2).unwrap();
        let high = ShardRange::parse("1-1", 2).unwrap();
        for guild in [guild_on(0, 2), guild_on(1, 2), 1, u64::MAX] {
            assert_ne!(
                low.owns(Some(guild)),
                high.owns(Some(guild)),
                "exactly one owner for {guild}"
            );
        }
        assert!(low.owns(Some(guild_on(0, 2))));
        assert!(high.owns(Some(guild_on(1, 2))));
        assert!(low.owns(None) && !high.owns(None), "DMs arrive on shard 0");
        assert!(ShardRange::ALL_OF_ONE.owns(Some(u64::MAX)));
    }
}
