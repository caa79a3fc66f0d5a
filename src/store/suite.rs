//! The behaviour every store backend must have, written once and run against each backend (the
//! backends' test modules call these with a fresh, empty store).

use std::time::{Duration, SystemTime};

use zundamon_actors::Exchange;

use super::{PendingQuestion, Store};
use crate::config::Secret;

fn ex(n: u64) -> Exchange {
    Exchange::new(format!("question {n}"), format!("answer {n}")).with_id(Some(1000 + n))
}

fn pending(interaction_id: u64, channel_id: u64) -> PendingQuestion {
    PendingQuestion {
        interaction_id,
        application_id: u64::MAX - 1,
        token: Secret::new(format!("token-{interaction_id}")),
        channel_id,
        guild_id: Some(u64::MAX - 2),
        user_id: 77,
        user_name: "ずんだ 🫛".into(),
        question: "質問なのだ？\n二行目".into(),
        received_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
        delivered_parts: 0,
    }
}

/// Appending an exchange again under the same id (a retried write) leaves one row, and ids come
/// back from a load.
pub async fn appends_are_idempotent_by_exchange_id(store: &dyn Store) {
    store.append(5, &[ex(1), ex(2)], 10).await.unwrap();
    store.append(5, &[ex(2)], 10).await.unwrap();
    store.append(5, &[ex(2), ex(3)], 10).await.unwrap();
    let rows = store.load(5, 10).await.unwrap();
    assert_eq!(rows, vec![ex(1), ex(2), ex(3)]);
    // The same id in another channel is another exchange; exchanges without an id never collide.
    store.append(6, &[ex(1)], 10).await.unwrap();
    let plain = Exchange::new("q", "a");
    store
        .append(6, &[plain.clone(), plain.clone()], 10)
        .await
        .unwrap();
    assert_eq!(store.load(6, 10).await.unwrap().len(), 3);
}

/// `clear` forgets one channel only.
pub async fn clear_forgets_one_channel(store: &dyn Store) {
    store.append(1, &[ex(1)], 10).await.unwrap();
    store.append(2, &[ex(2)], 10).await.unwrap();
    store.clear(1).await.unwrap();
    assert!(store.load(1, 10).await.unwrap().is_empty());
    assert_eq!(store.load(2, 10).await.unwrap(), vec![ex(2)]);
}

/// Pending questions round-trip every field, keep acceptance order (not id order), ignore a
/// second record of the same interaction, and go when removed.
pub async fn pending_questions_round_trip_in_acceptance_order(store: &dyn Store) {
    assert!(store.pending().await.unwrap().is_empty());
    let (a, b, c) = (pending(30, 1), pending(10, 2), pending(u64::MAX - 3, 1));
    for question in [&a, &b, &c] {
        store.record(question).await.unwrap();
    }
    let mut again = a.clone();
    again.question = "changed".into();
    store.record(&again).await.unwrap();
    assert_eq!(
        store.pending().await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );

    store.delivered_parts(10, 2).await.unwrap();
    store.remove(30).await.unwrap();
    store.remove(30).await.unwrap(); // removing twice is fine
    let mut b_delivered = b.clone();
    b_delivered.delivered_parts = 2;
    assert_eq!(store.pending().await.unwrap(), vec![b_delivered, c]);
}
