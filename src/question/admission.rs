//! Bounded queues with an honest answer: how many questions each channel, and the bot as a whole,
//! may hold accepted and unanswered, and whether a new one could still start before its
//! interaction token expires. A question refused here gets the "busy" reply at once instead of a
//! "thinking…" that would never turn into an answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Weight of the newest answer time in the moving average.
const EWMA_WEIGHT: f64 = 0.2;

/// Why a question was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The channel already holds its limit of questions.
    ChannelFull,
    /// The bot already holds its limit of questions.
    BotFull,
    /// The questions ahead of it would take longer than its token lives.
    WouldExpire,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ChannelFull => "busy_channel",
            Self::BotFull => "busy",
            Self::WouldExpire => "busy_would_expire",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_channel: HashMap<u64, usize>,
    total: usize,
    /// Moving average of how long one question takes to answer, in seconds.
    answer_secs: Option<f64>,
}

/// Counts accepted questions; cheap to clone (one shared table).
#[derive(Debug, Clone)]
pub struct Admission {
    counts: Arc<Mutex<Counts>>,
    per_channel: usize,
    total: usize,
}

/// A place in the queues; dropping it gives the place back.
#[derive(Debug)]
pub struct Permit {
    counts: Arc<Mutex<Counts>>,
    channel: u64,
}

impl Admission {
    pub fn new(per_channel: usize, total: usize) -> Self {
        Self {
            counts: Arc::default(),
            per_channel: per_channel.max(1),
            total: total.max(1),
        }
    }

    /// Changes the limits (a reload); questions already accepted keep their places.
    pub fn set_limits(&mut self, per_channel: usize, total: usize) {
        self.per_channel = per_channel.max(1);
        self.total = total.max(1);
    }

    /// Takes a place for a question in `channel` whose answer must start within `time_left`.
    pub fn admit(&self, channel: u64, time_left: Duration) -> Result<Permit, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let ahead = counts.per_channel.get(&channel).copied().unwrap_or(0);
        if counts.total >= self.total {
            return Err(Refusal::BotFull);
        }
        if ahead >= self.per_channel {
            return Err(Refusal::ChannelFull);
        }
        // The channel answers one question at a time: this one starts after those ahead.
        if let Some(each) = counts.answer_secs {
            if ahead as f64 * each > time_left.as_secs_f64() {
                return Err(Refusal::WouldExpire);
            }
        }
        *counts.per_channel.entry(channel).or_default() += 1;
        counts.total += 1;
        Ok(Permit {
            counts: self.counts.clone(),
            channel,
        })
    }

    /// Questions accepted and not yet answered.
    pub fn pending(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Permit {
    /// Records how long the question took to answer (for the expiry estimate).
    pub fn answered_in(&self, took: Duration) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let took = took.as_secs_f64();
        counts.answer_secs = Some(match counts.answer_secs {
            Some(average) => average + EWMA_WEIGHT * (took - average),
            None => took,
        });
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_channel.get_mut(&self.channel) {
            *count -= 1;
            if *count == 0 {
                counts.per_channel.remove(&self.channel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(800);

    #[test]
    fn each_channel_and_the_bot_are_bounded() {
        let admission = Admission::new(2, 3);
        let a1 = admission.admit(1, LONG).unwrap();
        let _a2 = admission.admit(1, LONG).unwrap();
        assert_eq!(admission.admit(1, LONG).unwrap_err(), Refusal::ChannelFull);
        let _b1 = admission.admit(2, LONG).unwrap();
        assert_eq!(admission.admit(3, LONG).unwrap_err(), Refusal::BotFull);
        assert_eq!(admission.pending(), 3);
        drop(a1);
        assert!(admission.admit(1, LONG).is_ok());
    }

    #[test]
    fn places_are_given_back_and_the_table_empties() {
        let admission = Admission::new(1, 10);
        for _ in 0..5 {
            let permit = admission.admit(9, LONG).unwrap();
            drop(permit);
        }
        assert_eq!(admission.pending(), 0);
        assert!(admission.counts.lock().unwrap().per_channel.is_empty());
    }

    #[test]
    fn a_question_that_would_start_after_its_token_expires_is_refused() {
        let admission = Admission::new(100, 100);
        let first = admission.admit(1, LONG).unwrap();
        first.answered_in(Duration::from_secs(300));
        let _second = admission.admit(1, LONG).unwrap();
        let _third = admission.admit(1, LONG).unwrap();
        // Three ahead at ~300 s each: 900 s > 800 s left.
        assert_eq!(admission.admit(1, LONG).unwrap_err(), Refusal::WouldExpire);
        // Another channel has nobody ahead.
        assert!(admission.admit(2, LONG).is_ok());
    }
}
