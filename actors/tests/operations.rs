//! What operators tune and measure: eviction reasons, cold questions and their load time, and
//! settings changed while the supervisor runs. Real actors, paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use zundamon_actors::{
    AnswerError, Answerer, ChannelSettings, Channels, ConversationStore, EvictReason, Exchange,
    MemoryStore, Question, StoreError, SupervisorArgs,
};

/// Answers "A:{question}" after `delay`, recording the history it was given.
#[derive(Default)]
struct Scripted {
    delay: Duration,
    seen: Mutex<Vec<(String, Vec<String>)>>,
}

#[async_trait]
impl Answerer for Scripted {
    async fn answer(&self, q: &Question, history: &[Exchange]) -> Result<String, AnswerError> {
        self.seen.lock().unwrap().push((
            q.text.clone(),
            history.iter().map(|e| e.question.clone()).collect(),
        ));
        tokio::time::sleep(self.delay).await;
        Ok(format!("A:{}", q.text))
    }
}

impl Scripted {
    fn sleeping(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }

    fn last_history(&self) -> Vec<String> {
        self.seen.lock().unwrap().last().unwrap().1.clone()
    }
}

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
}

fn question(channel: u64, text: &str) -> Question {
    Question {
        channel_id: channel,
        user_id: 7,
        user_name: "tester".into(),
        text: text.into(),
    }
}

fn settings(idle_secs: u64, max_channels: usize) -> ChannelSettings {
    ChannelSettings {
        window_exchanges: 5,
        idle: Duration::from_secs(idle_secs),
        max_channels,
    }
}

async fn start(
    settings: ChannelSettings,
    answerer: Arc<dyn Answerer>,
    store: Arc<dyn ConversationStore>,
) -> Channels {
    Channels::start(SupervisorArgs::new(settings, answerer, store))
        .await
        .expect("supervisor starts")
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
