//! Actor-level tests: real supervisor and channel actors, scripted answerers, paused clock.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{question, settings, start, Scripted};
use futures::future::join_all;
use tokio::time::Instant;
use zundamon_actors::{
    AnswerError, AskError, ConversationStore, Exchange, MemoryStore, StoreError,
};

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

    async fn clear(&self, channel: u64) -> Result<(), StoreError> {
        self.inner.clear(channel).await
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

// ---------------------------------------------------------------- tickets: exactly once

use zundamon_actors::{gate, Ticket};

#[tokio::test(start_paused = true)]
async fn a_withdrawn_question_never_reaches_the_model_or_the_window() {
    let answerer = Scripted::sleeping(Duration::from_millis(100));
    let store = Arc::new(MemoryStore::new());
    let channels = start(settings(600, 100), answerer.clone(), store.clone()).await;
    let (first_keeper, first_gate) = gate();
    let (second_keeper, second_gate) = gate();
    // Queued in this order; the gates are decided in the other order.
    let first = channels.submit_with(
        question(1, "refused"),
        Ticket::new(Some(1), None).gated(first_gate),
    );
    let second = channels.submit_with(
        question(1, "taken"),
        Ticket::new(Some(2), None).gated(second_gate),
    );
    second_keeper.open();
    first_keeper.withdraw("40060 already acknowledged");
    assert!(matches!(first.await, Err(AskError::Withdrawn(reason)) if reason.contains("40060")));
    assert_eq!(second.await.unwrap(), "A:taken");
    // A dropped keeper withdraws too.
    let (keeper, abandoned_gate) = gate();
    let abandoned = channels.submit_with(
        question(1, "abandoned"),
        Ticket::new(Some(3), None).gated(abandoned_gate),
    );
    drop(keeper);
    assert!(matches!(abandoned.await, Err(AskError::Withdrawn(_))));
    assert_eq!(
        answerer.seen().len(),
        1,
        "only the taken question was asked"
    );
    let window = channels.window(1).await.unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].question, "taken");
    assert_eq!(window[0].id, Some(2));
    assert_eq!(channels.stats().withdrawn, 2);
    assert_eq!(store.load(1, 5).await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_question_whose_deadline_passes_in_the_queue_is_withdrawn() {
    let answerer = Scripted::sleeping(Duration::from_secs(10));
    let channels = start(
        settings(600, 100),
        answerer.clone(),
        Arc::new(MemoryStore::new()),
    )
    .await;
    let slow = channels.submit_with(question(1, "slow"), Ticket::default());
    let deadline = Instant::now() + Duration::from_secs(5);
    let late = channels.submit_with(question(1, "late"), Ticket::new(Some(9), Some(deadline)));
    assert_eq!(slow.await.unwrap(), "A:slow");
    assert!(matches!(late.await, Err(AskError::Expired(_))));
    assert_eq!(answerer.seen().len(), 1);
    assert_eq!(channels.window(1).await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_question_already_answered_is_not_asked_again() {
    let answerer = Scripted::sleeping(Duration::from_millis(10));
    let store = Arc::new(MemoryStore::new());
    store
        .append(
            1,
            &[Exchange::new("q", "stored answer").with_id(Some(42))],
            5,
        )
        .await
        .unwrap();
    let channels = start(settings(600, 100), answerer.clone(), store.clone()).await;
    let again = channels
        .submit_with(question(1, "q"), Ticket::new(Some(42), None))
        .await;
    assert_eq!(again.unwrap(), "stored answer");
    assert!(answerer.seen().is_empty());
    assert_eq!(store.load(1, 5).await.unwrap().len(), 1);
}

/// Commits every write, but only after `delay` (longer than the actor's store timeout), like a
/// database that answers too late.
struct LateStore {
    inner: MemoryStore,
    delay: Duration,
    writes: AtomicUsize,
}

#[async_trait]
impl ConversationStore for LateStore {
    async fn load(&self, channel: u64, limit: usize) -> Result<Vec<Exchange>, StoreError> {
        self.inner.load(channel, limit).await
    }

    async fn append(&self, channel: u64, ex: &[Exchange], keep: usize) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        // Committed at once; the answer is what comes late.
        self.inner.append(channel, ex, keep).await?;
        tokio::time::sleep(self.delay).await;
        Ok(())
    }

    async fn clear(&self, channel: u64) -> Result<(), StoreError> {
        self.inner.clear(channel).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_that_commits_after_the_timeout_and_its_retry_leave_one_row() {
    let store = Arc::new(LateStore {
        inner: MemoryStore::new(),
        delay: Duration::from_secs(6),
        writes: AtomicUsize::new(0),
    });
    let channels = start(
        settings(600, 100),
        Scripted::sleeping(Duration::ZERO),
        store.clone(),
    )
    .await;
    let answer = channels
        .submit_with(question(1, "once"), Ticket::new(Some(5), None))
        .await;
    assert_eq!(answer.unwrap(), "A:once");
    // The first write timed out (5 s) though it committed; the retry comes 5 s later.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        store.writes.load(Ordering::SeqCst) >= 2,
        "the write was retried"
    );
    let rows = store.inner.load(1, 10).await.unwrap();
    assert_eq!(rows.len(), 1, "one row per exchange: {rows:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reset_racing_a_question_takes_effect_after_it_and_clears_the_store() {
    let answerer = Scripted::sleeping(Duration::from_secs(2));
    let store = Arc::new(MemoryStore::new());
    let channels = start(settings(600, 100), answerer.clone(), store.clone()).await;
    channels.ask(question(1, "first")).await.unwrap();
    assert_eq!(
        channels.memory(1).await.unwrap().in_memory,
        Some(1),
        "the live window's length"
    );
    // A question is being answered when the reset arrives; the reset waits for it.
    let in_flight = channels.submit(question(1, "racing"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let forgotten = channels.reset(1).await.unwrap();
    assert_eq!(in_flight.await.unwrap(), "A:racing");
    assert_eq!(
        forgotten, 2,
        "both exchanges were in the window when it was reset"
    );
    assert!(store.load(1, 10).await.unwrap().is_empty());
    assert_eq!(channels.memory(1).await.unwrap().in_memory, Some(0));
    channels.ask(question(1, "after")).await.unwrap();
    let seen = answerer.seen();
    assert!(
        seen.last().unwrap().1.is_empty(),
        "the next question has no history"
    );
    // A channel never seen: nothing in memory, the settings in force.
    let unknown = channels.memory(99).await.unwrap();
    assert_eq!(unknown.in_memory, None);
    assert_eq!(unknown.idle, Duration::from_secs(600));
    assert_eq!(unknown.window_exchanges, 5);
}
