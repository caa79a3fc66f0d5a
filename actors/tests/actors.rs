//! Actor-level tests: real supervisor and channel actors, scripted answerers, paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use tokio::time::Instant;
use zundamon_actors::{
    AnswerError, Answerer, AskError, ChannelSettings, Channels, ConversationStore, Exchange,
    MemoryStore, Question, StoreError, SupervisorArgs,
};

/// Answers "A:{question}" after `delay`, recording the history it was given; panics on "panic",
/// fails on "fail".
#[derive(Default)]
struct Scripted {
    delay: Duration,
    seen: Mutex<Vec<(String, Vec<String>)>>,
}

impl Scripted {
    fn sleeping(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }

    fn seen(&self) -> Vec<(String, Vec<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Answerer for Scripted {
    async fn answer(&self, q: &Question, history: &[Exchange]) -> Result<String, AnswerError> {
        self.seen.lock().unwrap().push((
            q.text.clone(),
            history.iter().map(|e| e.question.clone()).collect(),
        ));
        tokio::time::sleep(self.delay).await;
        match q.text.as_str() {
            "panic" => panic!("scripted panic"),
            "fail" => Err(AnswerError::new("scripted failure")),
            text => Ok(format!("A:{text}")),
        }
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
async fn fifty_channels_are_answered_concurrently() {
    let answerer = Scripted::sleeping(Duration::from_secs(2));
    let channels = start(
        settings(600, 100),
        answerer.clone(),
        Arc::new(MemoryStore::new()),
    )
    .await;
    let started = Instant::now();
    let answers = join_all((0..50).map(|c| channels.ask(question(c, &format!("q{c}"))))).await;
    let elapsed = started.elapsed();
    for (c, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), format!("A:q{c}"));
    }
    // One answer time (2 s), not fifty (100 s). The clock is paused, so this is exact.
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert_eq!(channels.stats().live_channels, 50);
}

#[tokio::test(start_paused = true)]
async fn one_channel_answers_in_order_each_seeing_the_previous() {
    let answerer = Scripted::sleeping(Duration::from_millis(300));
    let channels = start(
        settings(600, 100),
        answerer.clone(),
        Arc::new(MemoryStore::new()),
    )
    .await;
    let started = Instant::now();
    let texts: Vec<String> = (1..=5).map(|n| format!("q{n}")).collect();
    let answers = join_all(texts.iter().map(|t| channels.ask(question(1, t)))).await;
    let answers: Vec<String> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers,
        texts.iter().map(|t| format!("A:{t}")).collect::<Vec<_>>()
    );
    // Serial within a channel: five answer times.
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let seen = answerer.seen();
    for (n, (text, history)) in seen.iter().enumerate() {
        assert_eq!(text, &texts[n]);
        assert_eq!(
            history,
            &texts[..n].to_vec(),
            "question {n} saw {history:?}"
        );
    }
    let window = channels.window(1).await.unwrap();
    assert_eq!(window.len(), 5);
    assert_eq!(window[4], Exchange::new("q5", "A:q5"));
}

#[tokio::test(start_paused = true)]
async fn the_window_keeps_the_last_k() {
    let answerer = Scripted::sleeping(Duration::ZERO);
    let mut s = settings(600, 10);
    s.window_exchanges = 3;
    let channels = start(s, answerer.clone(), Arc::new(MemoryStore::new())).await;
    for n in 1..=5 {
        channels.ask(question(9, &format!("q{n}"))).await.unwrap();
    }
    let last = answerer.seen().pop().unwrap();
    assert_eq!(last.1, vec!["q2", "q3", "q4"]);
    let window: Vec<String> = channels
        .window(9)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.question)
        .collect();
    assert_eq!(window, vec!["q3", "q4", "q5"]);
}

#[tokio::test(start_paused = true)]
async fn idle_actors_are_evicted_and_their_window_survives() {
    let answerer = Scripted::sleeping(Duration::ZERO);
    let channels = start(
        settings(10, 100),
        answerer.clone(),
        Arc::new(MemoryStore::new()),
    )
    .await;
    channels.ask(question(1, "first")).await.unwrap();
    channels.ask(question(2, "other")).await.unwrap();
    assert_eq!(channels.stats().live_channels, 2);

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        channels.stats().live_channels,
        2,
        "evicted before the timeout"
    );
    channels.ask(question(2, "keeps 2 alive")).await.unwrap();

    tokio::time::sleep(Duration::from_secs(8)).await;
    let stats = channels.stats();
    assert_eq!(
        stats.live_channels, 1,
        "channel 1 idle 13 s, channel 2 idle 8 s"
    );
    assert_eq!(stats.evictions, 1);
    assert!(channels.window(1).await.is_none());

    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(channels.stats().live_channels, 0);

    channels.ask(question(1, "second")).await.unwrap();
    let (_, history) = answerer.seen().pop().unwrap();
    assert_eq!(
        history,
        vec!["first"],
        "the window came back from the store"
    );
}

#[tokio::test(start_paused = true)]
async fn the_cap_holds_under_churn() {
    let answerer = Scripted::sleeping(Duration::from_millis(1));
    let cap = 10;
    let channels = start(settings(600, cap), answerer, Arc::new(MemoryStore::new())).await;
    let mut max_live = 0;
    for c in 0..(10 * cap as u64) {
        channels.ask(question(c, "hi")).await.unwrap();
        max_live = max_live.max(channels.stats().live_channels);
    }
    assert_eq!(max_live, cap);
    let stats = channels.stats();
    assert_eq!(stats.live_channels, cap);
    assert_eq!(stats.evictions, 9 * cap as u64);
    // The least recently used went first: the last `cap` channels are the ones alive.
    for c in (9 * cap as u64)..(10 * cap as u64) {
        assert!(channels.window(c).await.is_some(), "channel {c} evicted");
    }
}

#[tokio::test(start_paused = true)]
async fn busy_actors_are_not_evicted_for_the_cap() {
    let answerer = Scripted::sleeping(Duration::from_secs(5));
    let channels = start(settings(600, 2), answerer, Arc::new(MemoryStore::new())).await;
    // Three channels busy at once: the cap is exceeded rather than a question lost.
    let answers = join_all((0..3).map(|c| channels.ask(question(c, "slow")))).await;
    assert!(answers.iter().all(Result::is_ok));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        channels.stats().live_channels,
        2,
        "shrinks back to the cap once idle"
    );
}

#[tokio::test(start_paused = true)]
async fn questions_arriving_during_eviction_are_answered() {
    let answerer = Scripted::sleeping(Duration::ZERO);
    let channels = start(
        settings(1, 100),
        answerer.clone(),
        Arc::new(MemoryStore::new()),
    )
    .await;
    let mut asked = Vec::new();
    // Ask right around the idle deadline, over and over, so questions race the sweeps.
    for n in 0..40u64 {
        let text = format!("q{n}");
        channels.ask(question(5, &text)).await.expect("answered");
        asked.push(text);
        tokio::time::sleep(Duration::from_millis(900 + (n % 9) * 50)).await;
    }
    let stats = channels.stats();
    assert!(stats.evictions > 0, "the test must actually race evictions");
    assert_eq!(stats.answered, 40);
    let (_, history) = answerer.seen().pop().unwrap();
    assert_eq!(
        history,
        asked[34..39].to_vec(),
        "no exchange lost across evictions"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_answerer_gets_an_error_reply_and_the_channel_keeps_working() {
    let answerer = Scripted::sleeping(Duration::from_millis(10));
    let channels = start(settings(600, 100), answerer, Arc::new(MemoryStore::new())).await;
    channels.ask(question(1, "before")).await.unwrap();
    let other = tokio::spawn({
        let channels = channels.clone();
        async move { channels.ask(question(2, "elsewhere")).await }
    });
    let err = channels.ask(question(1, "panic")).await.unwrap_err();
    assert!(
        matches!(err, AskError::Panicked(ref m) if m.contains("scripted panic")),
        "{err:?}"
    );
    assert_eq!(other.await.unwrap().unwrap(), "A:elsewhere");
    assert_eq!(channels.ask(question(1, "after")).await.unwrap(), "A:after");
    let window: Vec<String> = channels
        .window(1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.question)
        .collect();
    assert_eq!(
        window,
        vec!["before", "after"],
        "the failed question is not remembered"
    );
    let stats = channels.stats();
    assert_eq!(stats.panics, 1);
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_answer_is_an_error_reply() {
    let channels = start(
        settings(600, 100),
        Scripted::sleeping(Duration::ZERO),
        Arc::new(MemoryStore::new()),
    )
    .await;
    let err = channels.ask(question(1, "fail")).await.unwrap_err();
    assert_eq!(err, AskError::Failed(AnswerError::new("scripted failure")));
    assert_eq!(channels.ask(question(1, "ok")).await.unwrap(), "A:ok");
    assert_eq!(channels.stats().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn windows_survive_a_restart_of_the_actor_system() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let answerer = Scripted::sleeping(Duration::ZERO);
    let first = start(settings(600, 100), answerer.clone(), store.clone()).await;
    for n in 1..=6 {
        first.ask(question(3, &format!("q{n}"))).await.unwrap();
    }
    first.stop().await;

    let second = start(settings(600, 100), answerer.clone(), store).await;
    second.ask(question(3, "q7")).await.unwrap();
    let (_, history) = answerer.seen().pop().unwrap();
    assert_eq!(history, vec!["q2", "q3", "q4", "q5", "q6"]);
}

/// A store whose writes fail until `heal` is called, and whose loads fail `load_failures` times.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStore,
    broken: std::sync::atomic::AtomicBool,
    load_failures: AtomicUsize,
    failed_writes: AtomicUsize,
}

#[async_trait]
impl ConversationStore for FlakyStore {
    async fn load(&self, channel: u64, limit: usize) -> Result<Vec<Exchange>, StoreError> {
        if self
            .load_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError("disk on fire".into()));
        }
        self.inner.load(channel, limit).await
    }

    async fn append(&self, channel: u64, ex: &[Exchange], keep: usize) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            self.failed_writes.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError("disk full".into()));
        }
        self.inner.append(channel, ex, keep).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_never_blocks_answers_and_writes_are_retried() {
    let store = Arc::new(FlakyStore::default());
    store.broken.store(true, Ordering::SeqCst);
    let answerer = Scripted::sleeping(Duration::ZERO);
    let channels = start(settings(1, 100), answerer.clone(), store.clone()).await;
    assert_eq!(channels.ask(question(1, "q1")).await.unwrap(), "A:q1");
    assert_eq!(channels.ask(question(1, "q2")).await.unwrap(), "A:q2");

    // Unsaved exchanges keep the actor alive past its idle timeout…
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(channels.stats().live_channels, 1);
    assert!(store.failed_writes.load(Ordering::SeqCst) >= 2);

    // …until the store heals and the retry lands; then it may be evicted.
    store.broken.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(channels.stats().live_channels, 0);
    let saved = store.inner.load(1, 5).await.unwrap();
    assert_eq!(
        saved,
        vec![Exchange::new("q1", "A:q1"), Exchange::new("q2", "A:q2")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_is_retried_without_losing_the_stored_window() {
    let store = Arc::new(FlakyStore::default());
    store
        .inner
        .append(4, &[Exchange::new("old", "A:old")], 5)
        .await
        .unwrap();
    store.load_failures.store(1, Ordering::SeqCst);
    let answerer = Scripted::sleeping(Duration::ZERO);
    let channels = start(settings(600, 100), answerer.clone(), store.clone()).await;
    channels.ask(question(4, "new1")).await.unwrap();
    assert_eq!(answerer.seen()[0].1, Vec::<String>::new());
    channels.ask(question(4, "new2")).await.unwrap();
    assert_eq!(answerer.seen()[1].1, vec!["old", "new1"]);
    let saved: Vec<String> = store
        .inner
        .load(4, 5)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.question)
        .collect();
    assert_eq!(saved, vec!["old", "new1", "new2"]);
}
