//! The HTTP fleet: two or three built bot processes on one PostgreSQL, each question POSTed (signed,
//! like Discord) to a different instance in turn, as a round-robin load balancer would. Needs
//! `ZUNDA_TEST_DATABASE_URL` (each test prints a SKIPPED line without it).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_discord::interaction_payload;
use support::fake_openai::{last_user_text, window_of};
use support::fleet::Fleet;
use support::world::USER;

fn question(channel: u64, n: usize) -> String {
    format!("チャンネル{channel}の質問{n:02}なのだ")
}

#[tokio::test]
async fn thirty_questions_in_three_channels_through_three_instances_are_answered_once_in_order() {
    let Some(fleet) = Fleet::start(
        "fleet::thirty_questions_in_three_channels_through_three_instances_are_answered_once_in_order",
        3,
    ).await else {
        return;
    };
    fleet.openai.set_delay(Duration::from_millis(30));
    let channels = [3_100_u64, 3_200, 3_300];
    let mut sent = Vec::new();
    for n in 0..10 {
        for (c, channel) in channels.iter().enumerate() {
            // Round robin: consecutive questions of a channel land on different instances.
            let to = (n * channels.len() + c) % 3;
            let (interaction, reply) = fleet.ask(to, *channel, &question(*channel, n)).await;
            assert_eq!(reply, "ちょっと待ってね。");
            sent.push((*channel, n, interaction));
        }
    }
    for (channel, n, interaction) in &sent {
        assert!(
            fleet
                .wait_answered(interaction, Duration::from_secs(60))
                .await,
            "channel {channel} question {n} unanswered\n{}",
            fleet.logs()
        );
    }
    // A channel answers in order: once a later question in each channel is answered (by
    // whichever instance holds it), a second answer to an earlier one would have been delivered.
    for (c, channel) in channels.iter().enumerate() {
        let (later, _) = fleet.ask(c, *channel, "後の質問なのだ").await;
        assert!(
            fleet.wait_answered(&later, Duration::from_secs(60)).await,
            "{}",
            fleet.logs()
        );
    }
    for (channel, n, interaction) in &sent {
        let answers = fleet.answers(interaction);
        assert_eq!(
            answers.len(),
            1,
            "channel {channel} question {n} answered once"
        );
        let content = answers[0].body["content"].as_str().unwrap_or_default();
        assert!(content.contains(&question(*channel, *n)), "{content}");
    }
    assert_eq!(
        fleet.openai.request_count(),
        30 + channels.len(),
        "one model call per question (and per later one)"
    );

    // Per channel: asked of the model in order, each with the window of the questions before.
    for channel in channels {
        let asked: Vec<Value> = fleet
            .openai
            .requests()
            .into_iter()
            .filter(|body| {
                last_user_text(body)
                    .unwrap_or_default()
                    .contains(&format!("チャンネル{channel}の"))
            })
            .collect();
        assert_eq!(asked.len(), 10);
        for (n, body) in asked.iter().enumerate() {
            assert!(
                last_user_text(body)
                    .unwrap()
                    .contains(&question(channel, n)),
                "channel {channel}: the model got question {n} in order"
            );
            let window = window_of(body);
            let expected: Vec<String> = (n.saturating_sub(5)..n)
                .map(|k| question(channel, k))
                .collect();
            assert_eq!(
                window.len(),
                expected.len(),
                "channel {channel} question {n}: {window:?}"
            );
            for (got, want) in window.iter().zip(&expected) {
                assert!(
                    got.contains(want),
                    "channel {channel} question {n}: {window:?}"
                );
            }
        }
    }
    assert_eq!(
        fleet
            .pg
            .scalar("SELECT count(*) FROM pending_questions WHERE NOT done")
            .await,
        0
    );
    // Each channel is held by exactly one instance (kept while its actor would live).
    let mut held = 0.0;
    for bot in &fleet.bots {
        held += bot.metric("zundamon_fleet_channels_held").await.unwrap();
        assert_eq!(
            bot.metric("zundamon_fleet_channel_changes_total{event=\"lost\"}")
                .await,
            Some(0.0)
        );
    }
    assert_eq!(held, 3.0, "channels held across the fleet");
    fleet.finish().await;
}

/// In the fleet a channel's window lives in the instance holding the channel, so a reset taken
/// by another instance would leave it in place: the reset is refused in words instead, while
/// `/zunda-memory` still reports what the store holds.
#[tokio::test]
async fn reset_over_http_is_refused_in_a_fleet_and_forgets_nothing() {
    let Some(fleet) = Fleet::start(
        "fleet::reset_over_http_is_refused_in_a_fleet_and_forgets_nothing",
        2,
    )
    .await
    else {
        return;
    };
    let (asked, _) = fleet.ask(0, 3_400, &question(3_400, 0)).await;
    assert!(fleet.wait_answered(&asked, Duration::from_secs(60)).await);
    for to in 0..2 {
        let reset = fleet.discord.register_acknowledged_interaction(3_400);
        let mut payload = interaction_payload(reset.id, &reset.token, 3_400, USER, "ずんだ", "");
        payload["data"]["name"] = serde_json::json!("zunda-reset");
        payload["data"]["options"] = serde_json::json!([]);
        payload["member"]["permissions"] = serde_json::json!((1u64 << 13).to_string());
        let reply = fleet.post(to, &payload).await;
        assert_eq!(reply["type"], 4, "{reply}");
        assert_eq!(reply["data"]["flags"], 64, "{reply}");
        assert_eq!(
            reply["data"]["content"],
            zundamon::voice::RESET_UNAVAILABLE_REPLY
        );
    }
    let (next, _) = fleet.ask(1, 3_400, &question(3_400, 1)).await;
    assert!(fleet.wait_answered(&next, Duration::from_secs(60)).await);
    let last = fleet.openai.requests().pop().unwrap();
    assert_eq!(window_of(&last).len(), 1, "the window was forgotten");
    fleet.finish().await;
}

#[tokio::test]
async fn a_killed_instances_channel_is_taken_over_and_its_question_answered() {
    let Some(mut fleet) = Fleet::start(
        "fleet::a_killed_instances_channel_is_taken_over_and_its_question_answered",
        2,
    )
    .await
    else {
        return;
    };
    let channel = 4_100_u64;
    // A first exchange, so the window must carry over to the new holder.
    let (first, _) = fleet.ask(0, channel, "最初の質問なのだ").await;
    assert!(
        fleet.wait_answered(&first, Duration::from_secs(30)).await,
        "{}",
        fleet.logs()
    );

    fleet.openai.set_delay(Duration::from_secs(3));
    let (slow, _) = fleet.ask(1, channel, "途中で落ちる質問なのだ").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.model_requests_for("途中で落ちる質問").is_empty() && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fleet.model_requests_for("途中で落ちる質問").len(), 1);
    // The holder is the instance that took the channel (and keeps it while alive); kill it
    // mid-answer.
    let answering = |n: usize| {
        let channel = format!("channel_id={channel}");
        fleet.bots[n]
            .logs()
            .lines()
            .any(|line| line.contains(&channel) && line.contains("took a channel"))
    };
    let holder = (0..2)
        .find(|&n| answering(n))
        .expect("some instance is answering");
    let survivor = 1 - holder;
    fleet.bots[holder].signal("KILL");
    let killed_at = Instant::now();
    fleet.openai.set_delay(Duration::from_millis(30));
    // A question asked after the kill, to the survivor: answered after the one it takes over.
    let (after, _) = fleet.ask(survivor, channel, "落ちた後の質問なのだ").await;

    assert!(
        fleet.wait_answered(&slow, Duration::from_secs(30)).await,
        "the killed instance's question was never answered\n{}",
        fleet.logs()
    );
    let took_over = fleet.model_requests_for("途中で落ちる質問");
    let takeover = killed_at.elapsed();
    assert_eq!(took_over.len(), 2, "asked again by the survivor");
    assert!(window_of(&took_over[1])
        .iter()
        .any(|q| q.contains("最初の質問")));
    assert!(fleet.wait_answered(&after, Duration::from_secs(30)).await);
    let last = fleet.model_requests_for("落ちた後の質問");
    assert_eq!(last.len(), 1);
    let window = window_of(&last[0]);
    assert!(
        window.len() == 2 && window[1].contains("途中で落ちる質問"),
        "order kept across the takeover: {window:?}"
    );
    assert_eq!(fleet.answers(&slow).len(), 1);
    assert!(
        takeover < Duration::from_secs(15),
        "took over in {takeover:?}"
    );
    eprintln!("takeover after kill -9: {takeover:?}");
    // The survivor counts the channel it took over, and holds it.
    assert_eq!(
        fleet.bots[survivor]
            .metric("zundamon_fleet_channel_changes_total{event=\"taken\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        fleet.bots[survivor]
            .metric("zundamon_fleet_channels_held")
            .await,
        Some(1.0)
    );
    fleet.bots.remove(holder);
    fleet.add_instance().await; // keeps the fleet's indices simple for finish()
    fleet.finish().await;
}
