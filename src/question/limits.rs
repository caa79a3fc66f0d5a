//! Input and abuse limits, applied before a question reaches a channel actor: the question's
//! length, a per-user rate limit, and the replies (in Zundamon's voice) that explain a refusal.
//!
//! Everything here is pure: time comes in as a [`tokio::time::Instant`] argument, so tests use
//! explicit instants and the caller decides which clock to read.

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// The outcome of [`check_question`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuestionCheck {
    /// The question to ask, without surrounding whitespace.
    Ok(String),
    /// Nothing but whitespace (or nothing at all).
    Empty,
    /// Longer than the limit, in Unicode scalar values after trimming.
    TooLong { chars: usize, limit: usize },
}

/// Checks a question typed by a user: trims it, and refuses it if empty or over `max_chars`.
///
/// Length counts Unicode scalar values (`char`s), so a kanji costs the same as a Latin letter:
/// the limit is about what the user can see, not about bytes.
pub fn check_question(text: &str, max_chars: usize) -> QuestionCheck {
    let trimmed = text.trim_matches(is_blank);
    if trimmed.is_empty() {
        return QuestionCheck::Empty;
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return QuestionCheck::TooLong {
            chars,
            limit: max_chars,
        };
    }
    QuestionCheck::Ok(trimmed.to_owned())
}

/// Whitespace, plus the invisible characters that clients paste and that show as nothing: a
/// question made only of them is empty to the user who typed it.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

/// How many users [`RateLimiter`] tracks before it sweeps idle ones on its own.
pub const DEFAULT_MAX_TRACKED_USERS: usize = 100_000;

/// A per-user token bucket: each user may ask `burst` questions at once, and regains
/// `per_minute` questions per minute, up to `burst` again.
///
/// Implemented as GCRA (the "virtual scheduling" form of a token bucket): per user it stores one
/// instant, the time at which the user's bucket will be full again. That makes the memory per user
/// one `Instant`, and makes "full bucket" a simple comparison, so idle users can be dropped: a
/// user without an entry behaves exactly like one whose bucket is full.
#[derive(Debug)]
pub struct RateLimiter {
    /// When each tracked user's bucket is full again. A user whose instant has passed is idle.
    full_at: DashMap<u64, Instant>,
    /// The time one question's token takes to come back.
    per_question: Duration,
    /// How far `full_at` may run ahead of now and still admit a question: `burst - 1` tokens.
    tolerance: Duration,
    max_tracked: usize,
}

impl RateLimiter {
    /// A limiter admitting `burst` questions at once and `per_minute` per minute after that.
    /// Zero is treated as one for both, since the configuration rejects zero anyway.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self::with_max_tracked(burst, per_minute, DEFAULT_MAX_TRACKED_USERS)
    }

    /// Like [`new`](Self::new), sweeping idle users when a new user arrives and `max_tracked`
    /// are already tracked. Users whose bucket is not yet full are never dropped (that would
    /// reset their limit), so the map holds at most `max_tracked` or the number of users active
    /// within the last `burst` refill periods, whichever is larger.
    pub fn with_max_tracked(burst: u32, per_minute: u32, max_tracked: usize) -> Self {
        let per_question = Duration::from_secs(60) / per_minute.max(1);
        Self {
            full_at: DashMap::new(),
            per_question,
            tolerance: per_question * (burst.max(1) - 1),
            max_tracked: max_tracked.max(1),
        }
    }

    /// Takes one token from `user_id`'s bucket, or says how long until one is available.
    pub fn check(&self, user_id: u64, now: Instant) -> Result<(), Duration> {
        // Sweep before taking an entry: a DashMap shard lock held by `entry` would deadlock
        // `retain`. Only a new user triggers it, so the sweep's O(n) cost is paid once per new user
        // while the map is full of users active within the last `burst` refill periods — which
        // takes far more questions per second than the bot can answer.
        if self.full_at.len() >= self.max_tracked && !self.full_at.contains_key(&user_id) {
            self.sweep(now);
        }
        let mut full_at = self.full_at.entry(user_id).or_insert(now);
        let start = (*full_at).max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            // Refused questions take no token, so retrying early does not push the wait further.
            return Err(ahead - self.tolerance);
        }
        *full_at = start + self.per_question;
        Ok(())
    }

    /// Forgets users whose bucket is full again at `now`; they are indistinguishable from users
    /// never seen. Returns how many were dropped.
    pub fn sweep(&self, now: Instant) -> usize {
        let before = self.full_at.len();
        self.full_at.retain(|_, full_at| *full_at > now);
        before.saturating_sub(self.full_at.len())
    }

    /// How many users are currently tracked (for metrics and tests).
    pub fn tracked(&self) -> usize {
        self.full_at.len()
    }
}

// The texts these limits answer with live with every other user-visible text in `voice`.
pub use crate::voice::{
    rate_limited_reply, too_long_reply, BUSY_REPLY, EMPTY_QUESTION_REPLY, SHUTTING_DOWN_REPLY,
};

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_question_is_trimmed() {
        assert_eq!(
            check_question("  \n ずんだ餅の作り方は？\t ", 100),
            QuestionCheck::Ok("ずんだ餅の作り方は？".into())
        );
        // Inner whitespace and line breaks are the user's and stay.
        assert_eq!(
            check_question("一行目\n\n二行目", 100),
            QuestionCheck::Ok("一行目\n\n二行目".into())
        );
    }

    #[test]
    fn blank_questions_are_empty() {
        for blank in [
            "",
            " ",
            "\n\t  \r\n",
            "\u{3000}\u{3000}",
            "\u{200B}\u{FEFF} ",
        ] {
            assert_eq!(
                check_question(blank, 100),
                QuestionCheck::Empty,
                "{blank:?}"
            );
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // 5 kanji are 15 bytes in UTF-8, but 5 characters.
        assert_eq!(
            check_question("枝豆と餅", 4),
            QuestionCheck::Ok("枝豆と餅".into())
        );
        assert_eq!(
            check_question("枝豆と餅だ", 4),
            QuestionCheck::TooLong { chars: 5, limit: 4 }
        );
        // An emoji is one scalar value; trimmed whitespace does not count.
        assert_eq!(
            check_question("  🫛🫛🫛  ", 3),
            QuestionCheck::Ok("🫛🫛🫛".into())
        );
    }

    #[test]
    fn the_limit_is_inclusive() {
        let at_limit = "a".repeat(2000);
        assert_eq!(
            check_question(&at_limit, 2000),
            QuestionCheck::Ok(at_limit.clone())
        );
        assert_eq!(
            check_question(&format!("{at_limit}b"), 2000),
            QuestionCheck::TooLong {
                chars: 2001,
                limit: 2000
            }
        );
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_wait() {
        // 3 at once, then one every 10 seconds.
        let limiter = RateLimiter::new(3, 6);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(1, t0), Ok(()));
        }
        assert_eq!(limiter.check(1, t0), Err(10 * SEC));
        assert_eq!(limiter.check(1, t0 + 4 * SEC), Err(6 * SEC));
        // Refusals take no token: the wait did not grow.
        assert_eq!(limiter.check(1, t0 + 10 * SEC), Ok(()));
        assert_eq!(limiter.check(1, t0 + 10 * SEC), Err(10 * SEC));
    }

    #[test]
    fn tokens_come_back_at_the_rate_up_to_the_burst() {
        let limiter = RateLimiter::new(2, 60);
        let t0 = Instant::now();
        assert!(limiter.check(1, t0).is_ok());
        assert!(limiter.check(1, t0).is_ok());
        assert!(limiter.check(1, t0).is_err());
        // A long rest refills the bucket to the burst, not beyond.
        let later = t0 + 3600 * SEC;
        assert!(limiter.check(1, later).is_ok());
        assert!(limiter.check(1, later).is_ok());
        assert_eq!(limiter.check(1, later), Err(SEC));
        // Steady use at exactly the rate is always admitted.
        for n in 1..=100 {
            assert!(limiter.check(1, later + n * SEC).is_ok(), "question {n}");
        }
    }

    #[test]
    fn users_have_separate_buckets() {
        let limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert!(limiter.check(1, t0).is_ok());
        assert_eq!(limiter.check(1, t0), Err(60 * SEC));
        assert!(limiter.check(2, t0).is_ok());
    }

    #[test]
    fn zero_settings_still_admit_one_question() {
        let limiter = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        assert!(limiter.check(1, t0).is_ok());
        assert_eq!(limiter.check(1, t0), Err(60 * SEC));
    }

    #[test]
    fn sweep_drops_only_full_buckets() {
        let limiter = RateLimiter::new(3, 6);
        let t0 = Instant::now();
        for user in 0..1000 {
            limiter.check(user, t0).unwrap();
        }
        let heavy = 5000;
        for _ in 0..3 {
            limiter.check(heavy, t0).unwrap();
        }
        assert_eq!(limiter.tracked(), 1001);
        // After 10 s the light users' single token is back; the heavy user is still 20 s short.
        assert_eq!(limiter.sweep(t0 + 10 * SEC), 1000);
        assert_eq!(limiter.tracked(), 1);
        assert_eq!(limiter.check(heavy, t0 + 10 * SEC), Ok(()));
        assert!(
            limiter.check(heavy, t0 + 10 * SEC).is_err(),
            "sweep kept the limit"
        );
        assert_eq!(limiter.sweep(t0 + 3600 * SEC), 1);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn a_swept_user_behaves_like_a_new_one() {
        let swept = RateLimiter::new(2, 6);
        let kept = RateLimiter::new(2, 6);
        let t0 = Instant::now();
        for limiter in [&swept, &kept] {
            limiter.check(7, t0).unwrap();
        }
        let later = t0 + 60 * SEC;
        swept.sweep(later);
        assert_eq!(swept.tracked(), 0);
        for n in 0..5 {
            assert_eq!(swept.check(7, later), kept.check(7, later), "question {n}");
        }
    }

    #[test]
    fn the_map_sweeps_itself_when_full() {
        let limiter = RateLimiter::with_max_tracked(1, 60, 100);
        let t0 = Instant::now();
        for user in 0..100 {
            limiter.check(user, t0).unwrap();
        }
        assert_eq!(limiter.tracked(), 100);
        // A stream of new users, one every 20 ms: about 50 are active at any time, so sweeping
        // the idle ones keeps the map within its cap, however many users pass through.
        // The first 100 are idle from t0 + 1 s on.
        let mut now = t0 + SEC;
        for user in 100..10_000 {
            now += Duration::from_millis(20);
            limiter.check(user, now).unwrap();
            assert!(limiter.tracked() <= 100, "{} tracked", limiter.tracked());
        }
        // The users active right now were kept: their limit still holds.
        assert!(limiter.check(9_999, now).is_err());
        assert!(limiter.check(9_990, now).is_err());
    }

    #[test]
    fn active_users_are_never_dropped_to_make_room() {
        let limiter = RateLimiter::with_max_tracked(1, 1, 10);
        let t0 = Instant::now();
        for user in 0..20 {
            limiter.check(user, t0).unwrap();
        }
        // Over the cap, but every one of them is still limited.
        assert_eq!(limiter.tracked(), 20);
        for user in 0..20 {
            assert!(limiter.check(user, t0 + SEC).is_err(), "user {user}");
        }
    }

    #[test]
    fn concurrent_checks_never_admit_more_than_the_burst() {
        let limiter = std::sync::Arc::new(RateLimiter::new(5, 1));
        let t0 = Instant::now();
        let admitted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let limiter = &limiter;
                    scope.spawn(move || (0..50).filter(|_| limiter.check(1, t0).is_ok()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 5);
    }

    fn assert_zundamon_voice(text: &str) {
        assert!(!text.contains("です") && !text.contains("ます"), "{text}");
        for sentence in text.split_inclusive(['。', '！']) {
            let sentence = sentence.trim_end_matches(['。', '！']);
            assert!(sentence.ends_with("のだ"), "{sentence:?} in {text}");
        }
    }

    #[test]
    fn replies_speak_as_zundamon() {
        assert_zundamon_voice(EMPTY_QUESTION_REPLY);
        assert_zundamon_voice(SHUTTING_DOWN_REPLY);
        assert_zundamon_voice(BUSY_REPLY);
        assert_zundamon_voice(&too_long_reply(2500, 2000));
        assert_zundamon_voice(&rate_limited_reply(10 * SEC));
        assert!(EMPTY_QUESTION_REPLY.contains("/zunda question:"));
    }

    #[test]
    fn the_too_long_reply_states_both_numbers() {
        let reply = too_long_reply(2345, 2000);
        assert!(
            reply.contains("2345文字") && reply.contains("2000文字以内"),
            "{reply}"
        );
    }

    #[test]
    fn the_rate_limited_reply_rounds_the_wait_up() {
        assert!(rate_limited_reply(Duration::from_millis(9_001)).contains("10秒"));
        assert!(rate_limited_reply(10 * SEC).contains("10秒"));
        assert!(rate_limited_reply(Duration::from_millis(1)).contains("1秒"));
        assert!(rate_limited_reply(Duration::ZERO).contains("1秒"));
        assert!(rate_limited_reply(90 * SEC).contains("90秒"));
        assert!(rate_limited_reply(91 * SEC).contains("2分"));
    }

    #[test]
    fn a_refused_user_who_waits_as_told_is_admitted() {
        let limiter = RateLimiter::new(1, 7); // 60/7 s: not a whole number of seconds
        let t0 = Instant::now();
        limiter.check(1, t0).unwrap();
        let wait = limiter.check(1, t0).unwrap_err();
        let told = rate_limited_reply(wait);
        let secs: u64 = told
            .split("くらい")
            .next()
            .and_then(|head| head.rsplit('。').next())
            .and_then(|n| n.strip_suffix('秒'))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            limiter.check(1, t0 + Duration::from_secs(secs)).is_ok(),
            "told {secs} s: {told}"
        );
    }
}
