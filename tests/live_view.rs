//! The live view of a streamed answer (`zundamon::discord::live`) against the fake Discord's REST
//! API: pacing per interaction, rate limits, coalescing, and the final state of the messages.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::fake_discord::{FakeDiscord, RecordedRequest, SentInteraction, APP_ID};
use tokio::sync::watch;
use tokio::time::Instant;
use zundamon::config::Secret;
use zundamon::discord::deliver::Delivery;
use zundamon::discord::live::{Shown, View};
use zundamon::discord::split::split_message;
use zundamon::discord::{bound_reply, quote_answer, MESSAGE_LIMIT};
use zundamon_actors::Live;

const QUESTION: &str = "ずんだ餅について教えて";

/// An acknowledged interaction and a delivery client for it.
async fn acknowledged(fake: &FakeDiscord, channel: u64) -> (Arc<Delivery>, SentInteraction) {
    let delivery = Arc::new(Delivery::new(
        &fake.base_url(),
        APP_ID,
        Duration::from_secs(5),
    ));
    let sent = fake.register_interaction(channel);
    delivery
        .defer(sent.id, &sent.token)
        .await
        .expect("deferred");
    (delivery, sent)
}

/// Streams `answer` in `chunks` pieces, one every `gap`, then runs the final delivery as the
/// bot does; returns what the live view left and when each piece was published.
async fn stream(
    delivery: Arc<Delivery>,
    sent: &SentInteraction,
    answer: &str,
    chunks: usize,
    gap: Duration,
    every: Duration,
) -> Shown {
    let (progress, states) = watch::channel(Live::Waiting);
    let deliver_by = Instant::now() + Duration::from_secs(600);
    let view = View::start(
        delivery.clone(),
        Secret::new(sent.token.clone()),
        QUESTION.to_owned(),
        states,
        every,
        deliver_by,
        None,
    );
    let chars: Vec<char> = answer.chars().collect();
    let size = chars.len().div_ceil(chunks);
    let _ = progress.send(Live::Status("🔍『ずんだ餅』を調べているのだ…".into()));
    tokio::time::sleep(gap).await;
    for n in 1..=chunks {
        let so_far: String = chars[..(n * size).min(chars.len())].iter().collect();
        let _ = progress.send(Live::Text(so_far));
        tokio::time::sleep(gap).await;
    }
    drop(progress);
    // The answer is complete: the view ends by itself (the grace only bounds a stuck write).
    let mut shown = view.stop(Duration::from_secs(60)).await;
    let parts = split_message(&bound_reply(&quote_answer(QUESTION, answer)), MESSAGE_LIMIT);
    for (index, part) in parts.iter().enumerate() {
        shown
            .finish_part(&delivery, &sent.token, index, part, deliver_by)
            .await
            .expect("final part delivered");
    }
    shown
        .finish_extras(&delivery, &sent.token, parts.len(), deliver_by)
        .await
        .expect("extras deleted");
    shown
}

/// The successful edits of the original response, in order.
fn original_edits(fake: &FakeDiscord, sent: &SentInteraction) -> Vec<RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.is("PATCH", &format!("{}/messages/@original", sent.token)) && r.status < 300)
        .collect()
}

fn gaps(edits: &[RecordedRequest]) -> Vec<Duration> {
    edits.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test]
async fn a_slow_answer_is_shown_in_paced_edits_and_ends_exactly_as_the_full_answer() {
    let fake = FakeDiscord::start().await;
    let (delivery, sent) = acknowledged(&fake, 1).await;
    let answer = "ずんだ餅は枝豆をすりつぶした餡のお餅なのだ。".repeat(20);
    let every = Duration::from_millis(300);
    stream(
        delivery,
        &sent,
        &answer,
        30,
        Duration::from_millis(50),
        every,
    )
    .await;
    let edits = original_edits(&fake, &sent);
    assert!(edits.len() >= 4, "only {} edits", edits.len());
    // The status line came first, then growing text, never shrinking.
    let texts: Vec<String> = edits
        .iter()
        .map(|e| e.body["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(texts[0].contains("調べているのだ"), "{}", texts[0]);
    for pair in texts[1..].windows(2) {
        assert!(pair[1].len() >= pair[0].len(), "edits out of order");
    }
    // Paced: every live edit at least the interval after the previous one (the final delivery
    // may follow the last live edit at once).
    for gap in &gaps(&edits)[..edits.len() - 2] {
        assert!(
            *gap >= every - Duration::from_millis(5),
            "edits {gap:?} apart"
        );
    }
    assert_eq!(fake.shown(&sent.token), [quote_answer(QUESTION, &answer)]);
}

#[tokio::test]
async fn twenty_interactions_streaming_at_once_are_paced_independently() {
    let fake = FakeDiscord::start().await;
    let every = Duration::from_millis(400);
    let mut streams = Vec::new();
    let started = Instant::now();
    for n in 0..20u64 {
        let (delivery, sent) = acknowledged(&fake, 100 + n).await;
        let answer = format!("答え{n}なのだ。").repeat(40);
        streams.push(tokio::spawn(async move {
            // Each starts at its own moment, 23 ms after the previous one.
            tokio::time::sleep(Duration::from_millis(23 * n)).await;
            let first_text_at = Instant::now();
            stream(
                delivery,
                &sent,
                &answer,
                10,
                Duration::from_millis(60),
                every,
            )
            .await;
            (sent, answer, first_text_at)
        }));
    }
    let mut first_edit_delays = Vec::new();
    for handle in streams {
        let (sent, answer, first_text_at) = handle.await.unwrap();
        let edits = original_edits(&fake, &sent);
        assert!(edits.len() >= 2);
        for gap in &gaps(&edits)[..edits.len() - 2] {
            assert!(
                *gap >= every - Duration::from_millis(5),
                "edits {gap:?} apart"
            );
        }
        first_edit_delays.push(
            edits[0]
                .at
                .saturating_duration_since(first_text_at.into_std()),
        );
        assert_eq!(fake.shown(&sent.token), [quote_answer(QUESTION, &answer)]);
    }
    // A shared timer would hold each stream's first edit until its next tick (up to the
    // interval); paced per interaction, each one's first edit goes out at once.
    for delay in &first_edit_delays {
        assert!(
            *delay < Duration::from_millis(200),
            "first edit after {delay:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_429_on_an_edit_slows_that_interaction_and_loses_no_text() {
    let fake = FakeDiscord::start().await;
    let (delivery, sent) = acknowledged(&fake, 2).await;
    fake.fail_next("PATCH", &sent.token, 1, 429, Some(1.5));
    let answer = "レートリミットにも負けないのだ。".repeat(30);
    let every = Duration::from_millis(200);
    stream(
        delivery,
        &sent,
        &answer,
        40,
        Duration::from_millis(60),
        every,
    )
    .await;
    let attempts: Vec<RecordedRequest> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is("PATCH", &sent.token))
        .collect();
    assert_eq!(attempts[0].status, 429);
    // The next edit waited what Discord said, and carried the newest text (coalesced).
    let after = attempts[1].at - attempts[0].at;
    assert!(
        after >= Duration::from_millis(1400),
        "retried after {after:?}"
    );
    let edits = original_edits(&fake, &sent);
    assert!(
        edits.len() < 40,
        "edits queued up instead of coalescing: {}",
        edits.len()
    );
    assert_eq!(fake.shown(&sent.token), [quote_answer(QUESTION, &answer)]);
}

#[tokio::test]
async fn a_nearly_empty_bucket_slows_the_edits_before_any_429() {
    let fake = FakeDiscord::start().await;
    fake.limit_webhooks(5, Duration::from_secs(2));
    let (delivery, sent) = acknowledged(&fake, 3).await;
    let answer = "ゆっくり丁寧に書くのだ。".repeat(40);
    stream(
        delivery,
        &sent,
        &answer,
        40,
        Duration::from_millis(50),
        Duration::from_millis(250),
    )
    .await;
    let limited = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(&sent.token) && r.status == 429)
        .count();
    assert_eq!(limited, 0, "the view ran into the rate limit");
    assert_eq!(fake.shown(&sent.token), [quote_answer(QUESTION, &answer)]);
}

#[tokio::test]
async fn a_streamed_answer_past_2000_characters_ends_as_the_same_parts_as_without_streaming() {
    let fake = FakeDiscord::start().await;
    let (delivery, sent) = acknowledged(&fake, 4).await;
    let paragraph = "長い説明なのだ。".repeat(30);
    let answer = format!("{paragraph}\n\n```rust\nfn main() {{}}\n```\n").repeat(20);
    stream(
        delivery,
        &sent,
        &answer,
        25,
        Duration::from_millis(40),
        Duration::from_millis(250),
    )
    .await;
    let expected = split_message(
        &bound_reply(&quote_answer(QUESTION, &answer)),
        MESSAGE_LIMIT,
    );
    assert!(expected.len() >= 3);
    assert_eq!(fake.shown(&sent.token), expected);
    let follow_ups = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&sent.token) && r.status < 300)
        .count();
    assert_eq!(
        follow_ups,
        expected.len() - 1,
        "a follow-up was posted twice"
    );
}
