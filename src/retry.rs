//! The one retry policy of the bot's HTTP clients (the chat model and Discord delivery) and of its
//! reconnects (the HTTP fleet's wake-up listener): how long to back off after a failure, how long
//! a server asks us to wait, and whether a wait still fits before the caller's deadline.
//!
//! Servers are not trusted to send sane values: `Retry-After: 1e20`, negative, `NaN`, `inf` or a
//! date far in the future are clamped or ignored here, so no caller ever builds a `Duration` or an
//! `Instant` that overflows (both panic).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// The longest wait accepted from a server (an hour). Anything longer is clamped to it, which in
/// practice means "past the deadline": the caller gives up at once instead of sleeping.
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);

/// Exponential backoff with jitter: retry `n` (0-based) waits `base * 2^n` (capped at `cap`) plus a
/// random extra of up to half of that. The fixed part guarantees the server gets at least the
/// backoff it is owed; the random part keeps many clients that failed together (channels hitting
/// the same rate limit, deliveries after one Discord outage) from retrying in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The fixed (un-jittered) part of the delay of retry `retry` (0 = the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The jittered delay before retry `retry` (0 = the first retry): in
    /// `[ceiling, 1.5 * ceiling]`.
    pub fn delay(&self, retry: u32) -> Duration {
        let fixed = self.ceiling(retry);
        let span = u64::try_from((fixed / 2).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        fixed + Duration::from_nanos(random_u64() % span)
    }
}

/// A random number without a `rand` dependency: `RandomState` is seeded per instance by the OS.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x5a75_6e64_616d_6f6e);
    hasher.finish()
}

/// A number of seconds as a server wrote it (`"2"`, `" 0.5 "`, `"1e20"`): finite and not negative,
/// clamped to [`MAX_SERVER_WAIT`]. Anything else (`"-3"`, `"NaN"`, `"inf"`, `"soon"`) is `None`.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    let secs = value.trim().parse::<f64>().ok()?;
    seconds(secs)
}

/// `secs` as a wait: `None` unless finite and not negative; clamped to [`MAX_SERVER_WAIT`].
pub fn seconds(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    // Compare before converting: `Duration::from_secs_f64` panics on values this large.
    if secs >= MAX_SERVER_WAIT.as_secs_f64() {
        return Some(MAX_SERVER_WAIT);
    }
    Some(Duration::from_secs_f64(secs))
}

/// A `Retry-After` value: seconds (possibly fractional) or an HTTP date, relative to `now`. A date
/// in the past means "now" (zero); one further than [`MAX_SERVER_WAIT`] is clamped.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Some(wait) = parse_seconds(value) {
        return Some(wait);
    }
    if value.parse::<f64>().is_ok() {
        // A number, but negative or not finite: ignored rather than read as a date.
        return None;
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(at.with_timezone(&chrono::Utc));
    let wait = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_SERVER_WAIT))
}

/// The wait a response asks for, from its headers, first match wins: `retry-after-ms` (OpenAI,
/// milliseconds), `Retry-After` (seconds or HTTP date), `X-RateLimit-Reset-After` (Discord,
/// seconds). Invalid values are skipped, so a bad first header does not hide a good second one.
pub fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    header("retry-after-ms")
        .and_then(|ms| ms.trim().parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
        .or_else(|| header("retry-after").and_then(|v| parse_retry_after(v, SystemTime::now())))
        .or_else(|| header("x-ratelimit-reset-after").and_then(parse_seconds))
}

/// The deadline rule: `Some(wait)` when waiting `wait` from `now` still ends before `deadline`
/// (so a retry can still be useful), `None` when it would not. Never overflows.
pub fn wait_before(wait: Duration, now: Instant, deadline: Instant) -> Option<Duration> {
    match now.checked_add(wait) {
        Some(end) if end < deadline => Some(wait),
        _ => None,
    }
}

/// The deadline rule against the current time.
pub fn fits_before(wait: Duration, deadline: Instant) -> bool {
    wait_before(wait, Instant::now(), deadline).is_some()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
        let ceilings: Vec<u128> = (0..8).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        for retry in [0, 1, 5, 30, 31, 32, u32::MAX] {
            let fixed = policy.ceiling(retry);
            for _ in 0..20 {
                let wait = policy.delay(retry);
                assert!(wait >= fixed && wait <= fixed * 3 / 2, "{retry}: {wait:?}");
            }
        }
        // Jitter: twenty draws are not all the same.
        let draws: std::collections::HashSet<Duration> = (0..20).map(|_| policy.delay(3)).collect();
        assert!(draws.len() > 1);
        // A zero base never divides by zero.
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).delay(3),
            Duration::ZERO
        );
    }

    #[test]
    fn seconds_are_parsed_clamped_or_ignored() {
        assert_eq!(parse_seconds("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_seconds(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_seconds("0"), Some(Duration::ZERO));
        for absurd in ["1e20", "1e300", "3600", "99999999999999999999999"] {
            assert_eq!(parse_seconds(absurd), Some(MAX_SERVER_WAIT), "{absurd}");
        }
        for invalid in [
            "-3", "-0.1", "NaN", "nan", "inf", "-inf", "infinity", "soon", "", "1s",
        ] {
            assert_eq!(parse_seconds(invalid), None, "{invalid}");
        }
        assert_eq!(seconds(f64::MAX), Some(MAX_SERVER_WAIT));
        assert_eq!(seconds(f64::NAN), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("1.25", now),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(parse_retry_after("1e20", now), Some(MAX_SERVER_WAIT));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(parse_retry_after("", now), None);

        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = parse_retry_after(&soon, now).unwrap();
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(31),
            "{wait:?}"
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_SERVER_WAIT)
        );
        assert_eq!(parse_retry_after("tomorrow", now), None);
    }

    #[test]
    fn server_wait_reads_the_headers_in_order() {
        assert_eq!(server_wait(&HeaderMap::new()), None);
        let all = headers(&[
            ("retry-after-ms", "1500"),
            ("retry-after", "2"),
            ("x-ratelimit-reset-after", "3"),
        ]);
        assert_eq!(server_wait(&all), Some(Duration::from_millis(1500)));
        let discord = headers(&[("retry-after", "2"), ("x-ratelimit-reset-after", "1.5")]);
        assert_eq!(server_wait(&discord), Some(Duration::from_secs(2)));
        let reset = headers(&[("x-ratelimit-reset-after", "1.5")]);
        assert_eq!(server_wait(&reset), Some(Duration::from_millis(1500)));
        // A nonsense first header does not hide a good later one.
        let bad_first = headers(&[
            ("retry-after-ms", "NaN"),
            ("retry-after", "soon"),
            ("x-ratelimit-reset-after", "0.25"),
        ]);
        assert_eq!(server_wait(&bad_first), Some(Duration::from_millis(250)));
        let huge_ms = headers(&[("retry-after-ms", "1e30")]);
        assert_eq!(server_wait(&huge_ms), Some(MAX_SERVER_WAIT));
        let negative = headers(&[("retry-after", "-5"), ("x-ratelimit-reset-after", "inf")]);
        assert_eq!(server_wait(&negative), None);
    }

    #[test]
    fn waits_never_pass_the_deadline_and_never_overflow() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        assert_eq!(
            wait_before(Duration::from_secs(3), now, deadline),
            Some(Duration::from_secs(3))
        );
        assert_eq!(wait_before(Duration::from_secs(10), now, deadline), None);
        assert_eq!(wait_before(Duration::from_secs(11), now, deadline), None);
        assert_eq!(wait_before(Duration::MAX, now, deadline), None);
        assert_eq!(wait_before(MAX_SERVER_WAIT, now, deadline), None);
        assert_eq!(wait_before(Duration::ZERO, deadline, deadline), None);
        assert!(fits_before(
            Duration::ZERO,
            Instant::now() + Duration::from_secs(1)
        ));
        assert!(!fits_before(
            Duration::MAX,
            Instant::now() + Duration::from_secs(1)
        ));
    }
}
