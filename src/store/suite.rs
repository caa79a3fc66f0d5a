//! The behaviour every store backend must have, written once and run against each backend (the
//! backends' test modules call these with a fresh, empty store).

use std::time::{Duration, SystemTime};

use zundamon_actors::Exchange;

use super::{PendingQuestion, Recorded, Store};
use crate::config::Secret;

fn ex(n: u64) -> Exchange {
    Exchange::new(format!("question {n}"), format!("answer {n}")).with_id(Some(1000 + n))
}

fn pending(interaction_id: u64, channel_id: u64, accepted: u64) -> PendingQuestion {
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
        accepted,
        delivered_parts: 0,
        follow_ups: Vec::new(),
        fence: 0,
        attachments: Vec::new(),
        places: Vec::new(),
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

/// Pending questions round-trip every field, keep acceptance order (neither id order nor the
/// order their inserts landed in), ignore a second record of the same interaction, and go when
/// finished.
pub async fn pending_questions_round_trip_in_acceptance_order(store: &dyn Store) {
    assert!(store.pending().await.unwrap().is_empty());
    let (a, b, c) = (
        pending(30, 1, 1_764_000_000_123_001),
        pending(10, 2, 1_764_000_000_123_002),
        pending(u64::MAX - 3, 1, 1_764_000_000_123_003),
    );
    // What a takeover needs to answer it the same way: its attachments and its places.
    let mut b = b;
    b.attachments = vec![zundamon_actors::Attachment {
        kind: zundamon_actors::AttachmentKind::Image,
        filename: "スクショ \"1\".png".into(),
        url: "https://cdn.example/a.png?ex=1&hm=2".into(),
        content_type: "image/png".into(),
        size: 12_345,
    }];
    b.places = vec![u64::MAX - 9, 3, u64::MAX - 2];
    for question in [&c, &a, &b] {
        assert_eq!(store.record(question).await.unwrap(), Recorded::Mine(0));
    }
    let mut again = a.clone();
    again.question = "changed".into();
    assert_eq!(store.record(&again).await.unwrap(), Recorded::Existing);
    assert_eq!(
        store.pending().await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );

    assert!(store.delivered_parts(10, 2, 0).await.unwrap());
    assert!(store.follow_ups(10, &[u64::MAX - 7, 42], 0).await.unwrap());
    assert!(store.finish(&a, Some(0)).await.unwrap());
    assert!(!store.finish(&a, Some(0)).await.unwrap(), "finished once");
    let mut b_delivered = b.clone();
    b_delivered.delivered_parts = 2;
    b_delivered.follow_ups = vec![u64::MAX - 7, 42];
    assert_eq!(store.pending().await.unwrap(), vec![b_delivered, c]);
}

/// A finished question stays finished: a record that timed out and commits after the finish
/// (or arrives after it) leaves no pending row, and a finish of a question whose record has not
/// landed yet leaves a tombstone that the record then meets.
pub async fn a_late_record_cannot_resurrect_a_finished_question(store: &dyn Store) {
    let q = pending(40, 1, 1);
    store.record(&q).await.unwrap();
    assert!(store.finish(&q, Some(0)).await.unwrap());
    assert_eq!(store.record(&q).await.unwrap(), Recorded::Existing);
    assert_eq!(
        store.adopt(&q).await.unwrap(),
        None,
        "finished: nothing to adopt"
    );
    let late = pending(41, 1, 2);
    assert!(
        store.finish(&late, None).await.unwrap(),
        "a tombstone is written"
    );
    assert_eq!(store.record(&late).await.unwrap(), Recorded::Existing);
    assert!(store.pending().await.unwrap().is_empty());
    assert!(!store.holds(40, 0).await.unwrap());
}

/// Two processes on one store (`a` and `b` are the same store as two instances): each owns what
/// it recorded; a live owner's questions are never taken; a withdrawal touches only the
/// withdrawer's row; the winner of the acknowledgement adopts the row (raising the fence, so the
/// first recorder's writes fail); once an owner's heartbeat lapses, one process takes its
/// questions with a raised fence and the old owner's writes (window included) change nothing.
pub async fn questions_belong_to_their_owner_until_its_heartbeat_lapses(
    a: &dyn Store,
    b: &dyn Store,
    lapse: Duration,
) {
    let all: crate::store::Wanted = std::sync::Arc::new(|_| true);
    let fresh = |id, accepted| PendingQuestion {
        received_at: SystemTime::now(),
        ..pending(id, 9, accepted)
    };
    a.heartbeat(lapse).await.unwrap();
    b.heartbeat(lapse).await.unwrap();
    let (q1, q2) = (fresh(1, 1), fresh(2, 2));
    assert_eq!(a.record(&q1).await.unwrap(), Recorded::Mine(0));
    // Both processes got q2 (a rolling deploy): a recorded it first, b won the acknowledgement.
    a.record(&q2).await.unwrap();
    assert_eq!(b.record(&q2).await.unwrap(), Recorded::Existing);
    let b_fence = b.adopt(&q2).await.unwrap().expect("b adopts");
    assert_eq!(b_fence, 1);
    assert!(!a.holds(2, 0).await.unwrap(), "a lost q2 to b");
    assert!(b.holds(2, b_fence).await.unwrap());
    // a's withdrawal (40060) finishes only its own row: q2 is b's now.
    assert!(!a.finish(&q2, None).await.unwrap());
    assert!(b.holds(2, b_fence).await.unwrap());

    // Everyone alive: nothing to take (a's own unheld rows only after `unheld_after`).
    assert!(b
        .claim_orphans(Duration::from_secs(3600), all.clone())
        .await
        .unwrap()
        .is_empty());
    assert!(a
        .claim_orphans(Duration::from_secs(3600), all.clone())
        .await
        .unwrap()
        .is_empty());

    // a stops renewing (frozen, or killed): once its heartbeat lapses b takes q1, fence raised.
    tokio::time::sleep(lapse + Duration::from_millis(200)).await;
    b.heartbeat(lapse).await.unwrap();
    let taken = b
        .claim_orphans(Duration::from_secs(3600), all.clone())
        .await
        .unwrap();
    assert_eq!(
        taken
            .iter()
            .map(|q| (q.interaction_id, q.fence))
            .collect::<Vec<_>>(),
        vec![(1, 1)]
    );
    assert!(
        b.claim_orphans(Duration::from_secs(3600), all.clone())
            .await
            .unwrap()
            .is_empty(),
        "taken once"
    );
    // a wakes: every write of its own for q1 fails.
    assert!(!a.holds(1, 0).await.unwrap());
    assert!(!a.delivered_parts(1, 1, 0).await.unwrap());
    assert!(!a.follow_ups(1, &[5], 0).await.unwrap());
    assert!(!a.finish(&q1, Some(0)).await.unwrap());
    let stale = Exchange::new("q1", "stale").with_id(Some(1));
    a.append(9, &[stale], 10).await.unwrap();
    assert!(
        a.load(9, 10).await.unwrap().is_empty(),
        "a's window write is fenced"
    );
    let answered = Exchange::new("q1", "fresh").with_id(Some(1));
    b.append(9, std::slice::from_ref(&answered), 10)
        .await
        .unwrap();
    assert_eq!(b.load(9, 10).await.unwrap(), vec![answered]);
    assert!(b.finish(&taken[0], Some(1)).await.unwrap());

    // A process that leaves cleanly can be taken over at once; a filter keeps other guilds'.
    let q3 = fresh(3, 3);
    b.record(&q3).await.unwrap();
    a.heartbeat(lapse).await.unwrap();
    b.leave().await.unwrap();
    let none: crate::store::Wanted = std::sync::Arc::new(|_| false);
    assert!(a
        .claim_orphans(Duration::from_secs(3600), none)
        .await
        .unwrap()
        .is_empty());
    let taken = a
        .claim_orphans(Duration::from_secs(3600), all.clone())
        .await
        .unwrap();
    assert_eq!(
        taken.iter().map(|q| q.interaction_id).collect::<Vec<_>>(),
        vec![2, 3]
    );

    // A process's own questions come back once unheld for `unheld_after`. "Unheld for zero" is
    // "received before now" in milliseconds, and q3 may have been received this millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let own = a.claim_orphans(Duration::ZERO, all).await.unwrap();
    assert_eq!(
        own.iter().map(|q| q.interaction_id).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

fn plain(n: usize) -> Exchange {
    Exchange::new(format!("question {n}"), format!("answer {n}"))
}

fn questions(exchanges: &[Exchange]) -> Vec<&str> {
    exchanges.iter().map(|e| e.question.as_str()).collect()
}

/// Text (Japanese, quotes, newlines) and order come back as written; channels are separate.
pub async fn round_trip_keeps_text_and_order(store: &dyn Store) {
    let first = Exchange::new(
        "ずんだ餅って何？",
        "枝豆のお餅なのだ！\n'quotes' and \"more\"",
    );
    store
        .append(7, &[first.clone(), plain(2)], 10)
        .await
        .unwrap();
    store.append(7, &[plain(3)], 10).await.unwrap();
    assert_eq!(
        store.load(7, 10).await.unwrap(),
        vec![first, plain(2), plain(3)]
    );
    assert!(store.load(8, 10).await.unwrap().is_empty());
}

/// `load` gives the newest `limit` exchanges, oldest first.
pub async fn load_returns_the_newest_limit_oldest_first(store: &dyn Store) {
    let all: Vec<_> = (1..=6).map(plain).collect();
    store.append(1, &all, 100).await.unwrap();
    let newest = store.load(1, 3).await.unwrap();
    assert_eq!(
        questions(&newest),
        ["question 4", "question 5", "question 6"]
    );
    assert!(store.load(1, 0).await.unwrap().is_empty());
    assert_eq!(store.load(1, usize::MAX).await.unwrap(), all);
}

/// `append` keeps each channel's newest `keep` (the caller checks the rows are deleted).
pub async fn append_trims_each_channel_to_keep(store: &dyn Store) {
    for n in 1..=5 {
        store.append(1, &[plain(n)], 3).await.unwrap();
    }
    store.append(2, &[plain(100)], 3).await.unwrap();
    // A batch larger than `keep` keeps only its own newest.
    store
        .append(3, &[plain(1), plain(2), plain(3), plain(4)], 2)
        .await
        .unwrap();
    let kept = store.load(1, 100).await.unwrap();
    assert_eq!(questions(&kept), ["question 3", "question 4", "question 5"]);
    assert_eq!(store.load(2, 100).await.unwrap(), vec![plain(100)]);
    assert_eq!(store.load(3, 100).await.unwrap(), vec![plain(3), plain(4)]);
}

/// Channel ids above 2^63 (and their signed twins) never share rows.
pub async fn channel_ids_use_the_full_u64_range(store: &dyn Store) {
    let snowflake = 1_234_567_890_123_456_789_u64;
    let wrapping = u64::MAX;
    let wrapped_twin = u64::MAX >> 1;
    store.append(snowflake, &[plain(1)], 5).await.unwrap();
    store.append(wrapping, &[plain(2)], 5).await.unwrap();
    store.append(wrapped_twin, &[plain(3)], 5).await.unwrap();
    assert_eq!(store.load(snowflake, 5).await.unwrap(), vec![plain(1)]);
    assert_eq!(store.load(wrapping, 5).await.unwrap(), vec![plain(2)]);
    assert_eq!(store.load(wrapped_twin, 5).await.unwrap(), vec![plain(3)]);
}

/// 64 concurrent two-exchange appends over 4 channels: all saved, batches never interleave, and
/// trimming under contention never splits the newest batches.
pub async fn concurrent_appends_are_all_saved_and_atomic(store: std::sync::Arc<dyn Store>) {
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let channel = task % 4;
                let pair = [
                    Exchange::new(format!("{task}a"), "x"),
                    Exchange::new(format!("{task}b"), "x"),
                ];
                store.append(channel as u64, &pair, 1000).await.unwrap();
                store.append(99, &pair, 10).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for channel in 0..4_u64 {
        let saved = store.load(channel, 1000).await.unwrap();
        assert_eq!(saved.len(), 32, "channel {channel}");
        for pair in saved.chunks(2) {
            let first = pair[0].question.strip_suffix('a').unwrap();
            assert_eq!(
                pair[1].question,
                format!("{first}b"),
                "batches never interleave"
            );
        }
    }
    let window = store.load(99, 1000).await.unwrap();
    assert_eq!(window.len(), 10);
    assert!(
        window[0].question.ends_with('a'),
        "trimming never splits the newest batches"
    );
}

mod settings;
pub use settings::*;
