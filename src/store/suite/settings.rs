//! The shared checks of the settings part (model choices, token usage), run on both backends.

use super::*;

/// A model choice is read back as set, replaced by the next one and gone once removed; each place
/// (ids past 2^63 included) has its own.
pub async fn model_choices_are_set_replaced_and_removed(store: &dyn Store) {
    let (channel, thread, wrapping) = (1_234_567_890_123_456_789_u64, 42_u64, u64::MAX);
    assert_eq!(store.model_choice(channel).await.unwrap(), None);
    store
        .set_model_choice(channel, Some("gpt-4o-mini"))
        .await
        .unwrap();
    store
        .set_model_choice(wrapping, Some("ずんだ-large"))
        .await
        .unwrap();
    assert_eq!(
        store.model_choice(channel).await.unwrap().as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(store.model_choice(thread).await.unwrap(), None);
    assert_eq!(store.model_choice(u64::MAX >> 1).await.unwrap(), None);
    store
        .set_model_choice(channel, Some("qwen3"))
        .await
        .unwrap();
    assert_eq!(
        store.model_choice(channel).await.unwrap().as_deref(),
        Some("qwen3")
    );
    store.set_model_choice(channel, None).await.unwrap();
    assert_eq!(store.model_choice(channel).await.unwrap(), None);
    store.set_model_choice(channel, None).await.unwrap();
    store.set_model_choice(thread, None).await.unwrap();
    assert_eq!(
        store.model_choice(wrapping).await.unwrap().as_deref(),
        Some("ずんだ-large"),
        "removing one place's choice leaves the others"
    );
}

/// Token usage adds up per user and day: another day or another user starts at 0, a day lists
/// its users (ids past 2^63 included, in id order), and a day that is not `YYYY-MM-DD` is refused.
pub async fn token_usage_adds_up_per_user_and_day(store: &dyn Store) {
    let (day, next_day) = ("2025-06-01", "2025-06-02");
    let (alice, bob, wrapping) = (77_u64, 1_234_567_890_123_456_789_u64, u64::MAX);
    assert_eq!(store.tokens_used(alice, day).await.unwrap(), 0);
    assert!(store.tokens_on(day).await.unwrap().is_empty());
    assert_eq!(store.add_tokens(alice, day, 1200).await.unwrap(), 1200);
    assert_eq!(store.add_tokens(alice, day, 345).await.unwrap(), 1545);
    assert_eq!(store.add_tokens(alice, day, 0).await.unwrap(), 1545);
    assert_eq!(store.add_tokens(bob, day, 10).await.unwrap(), 10);
    assert_eq!(store.add_tokens(wrapping, day, 3).await.unwrap(), 3);
    assert_eq!(store.add_tokens(alice, next_day, 1).await.unwrap(), 1);
    assert_eq!(store.tokens_used(alice, day).await.unwrap(), 1545);
    assert_eq!(store.tokens_used(alice, next_day).await.unwrap(), 1);
    assert_eq!(store.tokens_used(alice, "2025-05-31").await.unwrap(), 0);
    assert_eq!(store.tokens_used(u64::MAX >> 1, day).await.unwrap(), 0);
    assert_eq!(
        store.tokens_on(day).await.unwrap(),
        vec![(alice, 1545), (bob, 10), (wrapping, 3)]
    );
    assert_eq!(store.tokens_on(next_day).await.unwrap(), vec![(alice, 1)]);
    assert!(store.tokens_on("2025-05-31").await.unwrap().is_empty());
    let err = store.add_tokens(alice, "2025-6-1", 5).await.unwrap_err();
    assert!(err.0.contains("YYYY-MM-DD"), "{err:?}");
    assert_eq!(store.tokens_used(alice, day).await.unwrap(), 1545);
}

/// 20 questions of one user finishing at once, spread over `stores` (separate connections, as
/// separate processes would be), each adding 5 tokens: all count, and each add saw a different
/// total, the increments one after another.
pub async fn concurrent_token_adds_all_count(stores: Vec<std::sync::Arc<dyn Store>>) {
    let day = "2025-06-01";
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let adds: Vec<_> = (0..20)
        .map(|n| {
            let store = std::sync::Arc::clone(&stores[n % stores.len()]);
            let start = std::sync::Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                store.add_tokens(77, day, 5).await.unwrap()
            })
        })
        .collect();
    let mut totals = Vec::new();
    for add in adds {
        totals.push(add.await.unwrap());
    }
    totals.sort_unstable();
    assert_eq!(totals, (1..=20).map(|n| n * 5).collect::<Vec<u64>>());
    for store in &stores {
        assert_eq!(store.tokens_used(77, day).await.unwrap(), 100);
    }
}

/// Pruning drops the token usage of days more than a week ago (in UTC, with a day to spare for
/// time zones behind it), keeps this week's and every model choice.
pub async fn prune_drops_old_token_usage(store: &dyn crate::store::Backend) {
    let day = |ago: u64| {
        let at = SystemTime::now() - Duration::from_secs(ago * 24 * 60 * 60);
        crate::store::usage::utc_day(at)
    };
    // Tomorrow: a caller in a time zone ahead of UTC may already be there.
    let tomorrow =
        crate::store::usage::utc_day(SystemTime::now() + Duration::from_secs(24 * 60 * 60));
    for (user, on) in [
        (1, tomorrow.clone()),
        (2, day(0)),
        (3, day(7)),
        (4, day(9)),
        (5, "2000-01-01".to_owned()),
    ] {
        store.add_tokens(user, &on, 10).await.unwrap();
    }
    store.set_model_choice(9, Some("qwen3")).await.unwrap();
    assert_eq!(store.prune().await.unwrap(), 2);
    assert_eq!(store.tokens_used(1, &tomorrow).await.unwrap(), 10);
    assert_eq!(store.tokens_used(2, &day(0)).await.unwrap(), 10);
    assert_eq!(store.tokens_used(3, &day(7)).await.unwrap(), 10);
    assert_eq!(store.tokens_used(4, &day(9)).await.unwrap(), 0);
    assert_eq!(store.tokens_used(5, "2000-01-01").await.unwrap(), 0);
    assert_eq!(
        store.model_choice(9).await.unwrap().as_deref(),
        Some("qwen3")
    );
    assert_eq!(store.prune().await.unwrap(), 0);
}

/// What one process sets, another on the same store reads at once (`a` and `b` are separate
/// handles on one store).
pub async fn settings_are_shared_between_processes(a: &dyn Store, b: &dyn Store) {
    a.set_model_choice(5, Some("qwen3")).await.unwrap();
    assert_eq!(b.model_choice(5).await.unwrap().as_deref(), Some("qwen3"));
    b.set_model_choice(5, None).await.unwrap();
    assert_eq!(a.model_choice(5).await.unwrap(), None);
    a.add_tokens(77, "2025-06-01", 30).await.unwrap();
    assert_eq!(b.add_tokens(77, "2025-06-01", 12).await.unwrap(), 42);
    assert_eq!(a.tokens_on("2025-06-01").await.unwrap(), vec![(77, 42)]);
}
