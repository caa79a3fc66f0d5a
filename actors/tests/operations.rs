//! What operators tune and measure: eviction reasons, cold questions and their load time, and
//! settings changed while the supervisor runs. Real actors, paused clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{question, settings, start, Scripted};
use zundamon_actors::{
    ChannelSettings, ConversationStore, EvictReason, Exchange, MemoryStore, StoreError,
};

/// A memory store whose loads take `load_delay`.
struct SlowLoads {
    inner: MemoryStore,
    load_delay: Duration,
}

#[async_trait]
impl ConversationStore for SlowLoads {
    async fn load(&self, channel: u64, limit: usize) -> Result<Vec<Exchange>, StoreError> {
        tokio::time::sleep(self.load_delay).await;
        self.inner.load(channel, limit).await
    }

    async fn append(&self, channel: u64, ex: &[Exchange], keep: usize) -> Result<(), StoreError> {
        self.inner.append(channel, ex, keep).await
    }

    async fn clear(&self, channel: u64) -> Result<(), StoreError> {
        self.inner.clear(channel).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_question_to_an_evicted_channel_is_cold_and_its_load_time_observed() {
    let store = Arc::new(SlowLoads {
        inner: MemoryStore::new(),
        load_delay: Duration::from_millis(40),
    });
    let answerer = Scripted::sleeping(Duration::from_millis(1));
    let channels = start(settings(10, 100), answerer.clone(), store).await;

    // A brand-new channel loads nothing: not cold.
    channels.ask(question(1, "first")).await.unwrap();
    assert_eq!(channels.stats().cold_questions, 0);
    // A live channel: not cold either.
    channels.ask(question(1, "warm")).await.unwrap();
    assert_eq!(channels.stats().cold_questions, 0);

    tokio::time::sleep(Duration::from_secs(15)).await;
    let stats = channels.stats();
    assert_eq!(stats.live_channels, 0);
    assert_eq!(stats.evicted(EvictReason::Idle), 1);
    assert_eq!(stats.evicted(EvictReason::Cap), 0);

    channels.ask(question(1, "cold")).await.unwrap();
    assert_eq!(answerer.last_history(), vec!["first", "warm"]);
    let stats = channels.stats();
    assert_eq!(stats.cold_questions, 1);
    assert_eq!(stats.cold_load.count(), 1);
    // 40 ms falls in the (25 ms, 50 ms] bucket.
    assert_eq!(stats.cold_load.buckets[6], 1, "{:?}", stats.cold_load);
    assert!(stats.cold_load.sum_secs() >= 0.04);
}

#[tokio::test(start_paused = true)]
async fn cap_evictions_are_counted_as_cap() {
    let answerer = Scripted::sleeping(Duration::from_millis(1));
    let channels = start(settings(600, 2), answerer, Arc::new(MemoryStore::new())).await;
    for c in 0..5 {
        channels.ask(question(c, "hi")).await.unwrap();
    }
    let stats = channels.stats();
    assert_eq!(stats.evicted(EvictReason::Cap), 3);
    assert_eq!(stats.evicted(EvictReason::Idle), 0);
    assert_eq!(stats.evictions, 3);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_idle_timeout_evicts_on_the_new_schedule() {
    let answerer = Scripted::sleeping(Duration::from_millis(1));
    let channels = start(settings(600, 100), answerer, Arc::new(MemoryStore::new())).await;
    channels.ask(question(1, "hi")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(channels.stats().live_channels, 1, "600 s timeout");

    // Idle 20 s already, past a new 5 s timeout: evicted right away.
    channels.reconfigure(settings(5, 100));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(channels.stats().live_channels, 0);
    assert_eq!(channels.stats().evicted(EvictReason::Idle), 1);

    // A new actor follows the new timeout (not the old 30 s sweep period).
    channels.ask(question(2, "hi")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(channels.stats().live_channels, 1, "evicted too early");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(channels.stats().live_channels, 0, "not evicted after 7 s");
    assert_eq!(channels.stats().evicted(EvictReason::Idle), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lower_cap_trims_the_least_recently_used_idle_at_once_and_spares_busy_ones() {
    let answerer = Scripted::sleeping(Duration::from_secs(30));
    let channels = start(settings(600, 100), answerer, Arc::new(MemoryStore::new())).await;
    // Channels 1..=6 answered in order (1 is the least recently used); 7 is busy.
    for c in 1..=6 {
        channels.ask(question(c, "hi")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let busy = channels.submit(question(7, "slow"));
    let busy = tokio::spawn(busy);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(channels.stats().live_channels, 7);

    channels.reconfigure(settings(600, 3));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = channels.stats();
    assert_eq!(stats.live_channels, 3);
    assert_eq!(stats.evicted(EvictReason::Cap), 4);
    for c in [1, 2, 3, 4] {
        assert!(channels.window(c).await.is_none(), "channel {c} kept");
    }
    for c in [5, 6] {
        assert!(channels.window(c).await.is_some(), "channel {c} evicted");
    }
    // The busy channel was never cut off.
    assert_eq!(busy.await.unwrap().unwrap(), "A:slow");
}

#[tokio::test(start_paused = true)]
async fn a_lower_cap_never_cuts_off_busy_channels() {
    let answerer = Scripted::sleeping(Duration::from_secs(30));
    let channels = start(settings(600, 100), answerer, Arc::new(MemoryStore::new())).await;
    let asks: Vec<_> = (1..=4)
        .map(|c| tokio::spawn(channels.submit(question(c, "slow"))))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    channels.reconfigure(settings(600, 1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(channels.stats().live_channels, 4, "busy actors evicted");
    for ask in asks {
        assert_eq!(ask.await.unwrap().unwrap(), "A:slow");
    }
    // Once idle, they shrink back to the cap at the next sweeps.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(channels.stats().live_channels, 1);
}

#[tokio::test(start_paused = true)]
async fn a_smaller_window_trims_on_the_next_question() {
    let answerer = Scripted::sleeping(Duration::from_millis(1));
    let channels = start(
        settings(600, 100),
        answerer.clone(),
        Arc::new(MemoryStore::new()),
    )
    .await;
    for text in ["q1", "q2", "q3", "q4"] {
        channels.ask(question(1, text)).await.unwrap();
    }
    channels.reconfigure(ChannelSettings {
        window_exchanges: 2,
        ..settings(600, 100)
    });
    channels.ask(question(1, "q5")).await.unwrap();
    assert_eq!(answerer.last_history(), vec!["q3", "q4"]);
    assert_eq!(channels.window(1).await.unwrap().len(), 2);
}
