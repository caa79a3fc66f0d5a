//! Token usage as both backends keep it: days as `YYYY-MM-DD` text (which sorts in date order,
//! so pruning compares text), counts in signed 64-bit integers, and which days pruning drops.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zundamon_actors::StoreError;

use super::Clock;

/// How long a day's token usage is kept after it began (in UTC): a week in every time zone. A
/// caller's day is in its configured zone, which can be up to a day behind UTC, hence one more.
pub const USAGE_KEPT: Duration = Duration::from_secs(8 * 24 * 60 * 60);

/// The oldest day whose token usage pruning keeps: `clock`'s UTC date [`USAGE_KEPT`] ago.
pub fn cutoff_day(clock: &Clock) -> String {
    let since_epoch = clock().duration_since(UNIX_EPOCH).unwrap_or_default();
    utc_day(UNIX_EPOCH + since_epoch.saturating_sub(USAGE_KEPT))
}

/// The UTC calendar day of `at`, as `YYYY-MM-DD`.
pub fn utc_day(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%d")
        .to_string()
}

/// Refuses a day that is not `YYYY-MM-DD`: one stored in another shape would sort wrongly, and
/// be pruned too early or never.
pub(crate) fn check_day(day: &str) -> Result<(), StoreError> {
    let shaped = day.len() == 10
        && day.bytes().enumerate().all(|(at, byte)| match at {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    if shaped {
        Ok(())
    } else {
        Err(StoreError(format!(
            "token usage day {day:?} is not YYYY-MM-DD"
        )))
    }
}

/// A token count as stored (counts past `i64::MAX` are held at it).
pub(crate) fn tokens_key(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

/// A stored token count (never negative in practice; read as 0 if it were).
pub(crate) fn tokens_from(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(utc_day(UNIX_EPOCH), "1970-01-01");
        // 2024-02-29T23:59:59Z, then a second later.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(utc_day(leap), "2024-02-29");
        assert_eq!(utc_day(leap + Duration::from_secs(1)), "2024-03-01");
    }

    #[test]
    fn the_cutoff_keeps_a_week_and_a_day() {
        // 2024-03-10T12:00:00Z.
        let now = UNIX_EPOCH + Duration::from_secs(1_710_072_000);
        let clock: Clock = Arc::new(move || now);
        assert_eq!(cutoff_day(&clock), "2024-03-02");
        assert!("2024-03-01" < cutoff_day(&clock).as_str());
        assert!("2024-03-03" > cutoff_day(&clock).as_str());
        assert_eq!(utc_day(now - 8 * DAY), cutoff_day(&clock));
        let early: Clock = Arc::new(|| UNIX_EPOCH);
        assert_eq!(cutoff_day(&early), "1970-01-01", "no time before the epoch");
    }

    #[test]
    fn only_iso_days_are_accepted() {
        for good in ["2024-03-10", "1999-12-31"] {
            assert!(check_day(good).is_ok(), "{good}");
        }
        for bad in [
            "2024-3-10",
            "2024/03/10",
            "20240310",
            "",
            "2024-03-10 ",
            "２０２４-03-10",
        ] {
            assert!(check_day(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        assert_eq!(tokens_key(5), 5);
        assert_eq!(tokens_key(u64::MAX), i64::MAX);
        assert_eq!(tokens_from(7), 7);
        assert_eq!(tokens_from(-1), 0);
    }
}
