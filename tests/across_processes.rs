//! End-to-end: exactly once where processes share PostgreSQL. A rolling deploy of the gateway bot
//! (two processes on one database, both receiving every event) and an HTTP fleet whose channel
//! holder freezes past its lease. The built `zundamon` binary runs against the loopback fakes and
//! the local PostgreSQL (`ZUNDA_TEST_DATABASE_URL`; each test prints a SKIPPED line without it).

mod support;

use std::time::Duration;

use support::fake_openai::last_user_text;
use support::fleet::Fleet;
use support::pg::PgSchema;
use support::world::{wait_until, World, USER};

/// How many model requests asked `text`.
fn asked_times(world: &World, text: &str) -> usize {
    world.asked().iter().filter(|q| q.as_str() == text).count()
}

#[tokio::test]
async fn a_rolling_deploy_on_one_database_answers_each_question_once_even_when_both_die() {
    let Some(pg) = PgSchema::new("across_processes::rolling_deploy").await else {
        return;
    };
    let mut world = World::builder("rolling")
        .database(&pg.url)
        .envs(&[("ZUNDA_FLEET_LEASE_SECS", "2"), ("ZUNDA_STREAM", "false")])
        .start()
        .await;
    world.openai.set_delay(Duration::from_secs(6));

    // The old process is answering a slow question when the new one starts.
    let slow = world.send_until_asked(810, "遅い質問").await;
    let mut second = world.second_process("unused.db", &[]).await;
    assert!(
        world
            .discord
            .wait_sessions(2, Duration::from_secs(20))
            .await,
        "the new process never connected; log:\n{}",
        second.logs()
    );
    let delivered = world.wait_delivered(&slow, Duration::from_secs(20)).await;
    assert_eq!(delivered.len(), 1, "log:\n{}", world.bot.logs());
    // The new process left the live process's question alone: asked once, answered once. No
    // event marks a takeover that did not happen; it could only follow a lapsed lease, so wait
    // longer than one lease (2 s) of the new process's periodic scans.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(asked_times(&world, "遅い質問"), 1, "{:?}", world.asked());
    assert_eq!(world.deliveries(&slow).len(), 1);
    assert!(
        !second.logs().contains("resuming a pending question"),
        "the new process took a live process's question:\n{}",
        second.logs()
    );

    // Four questions while both are connected: each reaches both, one acknowledges it.
    let mut sent = Vec::new();
    for n in 0..4u64 {
        let question = format!("両方の質問{n}");
        sent.push((
            world
                .discord
                .send_interaction(820 + n, USER, "ずんだ", &question)
                .await,
            question,
        ));
    }
    for (interaction, _) in &sent {
        wait_until("the acknowledgement", Duration::from_secs(10), || {
            world.taken_callbacks(interaction).len() == 1
        })
        .await;
    }
    // Each winner owns its row before it asks the model: once all four are being asked, both die.
    world
        .openai
        .wait_for_requests(5, Duration::from_secs(10))
        .await;
    world.bot.kill_9().await;
    second.kill_9().await;
    for (interaction, _) in &sent {
        assert!(
            world.deliveries(interaction).is_empty(),
            "answered before the kill"
        );
    }

    // The next process takes every question over once the dead owners' heartbeats lapse.
    world.openai.set_delay(Duration::from_millis(50));
    let third = world.second_process("unused.db", &[]).await;
    for (interaction, question) in &sent {
        let delivered = world
            .wait_delivered(interaction, Duration::from_secs(30))
            .await;
        assert_eq!(
            delivered.len(),
            1,
            "{question} unanswered; log:\n{}",
            third.logs()
        );
    }
    // A channel answers in order: once a later question in each channel is answered, a second
    // take of the earlier one would have been answered before it.
    for (n, (interaction, _)) in sent.iter().enumerate() {
        let later = world
            .discord
            .send_interaction(820 + n as u64, USER, "ずんだ", &format!("後の質問{n}"))
            .await;
        let delivered = world.wait_delivered(&later, Duration::from_secs(30)).await;
        assert_eq!(delivered.len(), 1, "log:\n{}", third.logs());
        assert_eq!(world.deliveries(interaction).len(), 1);
    }
    for (interaction, question) in &sent {
        assert_eq!(
            world.deliveries(interaction).len(),
            1,
            "{question} answered twice"
        );
        assert!(
            world
                .discord
                .shown(&interaction.token)
                .concat()
                .contains(question.as_str()),
            "{question}: the answer quotes its question"
        );
    }
    assert_eq!(
        third
            .metric("zundamon_pending_resumed_total{outcome=\"resumed\"}")
            .await,
        Some(4.0)
    );
    world.bot.assert_no_secrets_logged();
    second.assert_no_secrets_logged();
    third.assert_no_secrets_logged();
    drop(third);
    pg.drop_schema().await;
}

/// The instance whose log says it took `channel`.
fn holder_of(fleet: &Fleet, channel: u64) -> Option<usize> {
    let marker = format!("channel_id={channel}");
    fleet.bots.iter().position(|bot| {
        bot.logs()
            .lines()
            .any(|line| line.contains("took a channel") && line.contains(&marker))
    })
}

#[tokio::test]
async fn a_fleet_holder_frozen_past_its_lease_writes_nothing_when_it_wakes() {
    frozen_holder(false).await;
}

#[tokio::test]
async fn a_streaming_fleet_holder_frozen_past_its_lease_writes_nothing_when_it_wakes() {
    frozen_holder(true).await;
}

async fn frozen_holder(stream: bool) {
    let Some(mut fleet) = Fleet::start(
        &format!("across_processes::frozen_holder_stream_{stream}"),
        0,
    )
    .await
    else {
        return;
    };
    fleet
        .overrides
        .push(("ZUNDA_STREAM".into(), stream.to_string()));
    fleet.add_instance().await;
    fleet.add_instance().await;
    fleet.openai.set_delay(Duration::from_secs(4));
    let channel = 4_400;
    let (sent, reply) = fleet.ask(0, channel, "凍る質問なのだ").await;
    assert_eq!(reply, "ちょっと待ってね。");
    fleet
        .openai
        .wait_for_requests(1, Duration::from_secs(10))
        .await;
    let holder = holder_of(&fleet, channel).expect("someone holds the channel");
    let other = 1 - holder;

    // The holder freezes mid-answer; the other takes the channel over once the lease lapses.
    fleet.bots[holder].signal("STOP");
    let answered = fleet.wait_answered(&sent, Duration::from_secs(30)).await;
    assert!(
        answered,
        "the other instance never answered\n{}",
        fleet.logs()
    );
    assert_eq!(fleet.answers(&sent).len(), 1);
    let writes_before = fleet.discord.requests().len();

    // The frozen one wakes with its stale answer: it drops it, counts it, writes nothing.
    fleet.bots[holder].signal("CONT");
    let noticed = fleet.bots[holder]
        .wait_metric(
            "zundamon_fleet_fenced_total",
            Duration::from_secs(20),
            |n| n >= 1.0,
        )
        .await;
    assert!(noticed, "the woken holder never noticed\n{}", fleet.logs());
    assert_eq!(
        fleet.answers(&sent).len(),
        1,
        "a stale answer was delivered"
    );
    let stale_writes: Vec<_> = fleet.discord.requests()[writes_before..]
        .iter()
        .filter(|r| r.path.contains(&sent.token))
        .cloned()
        .collect();
    assert!(stale_writes.is_empty(), "stale writes: {stale_writes:#?}");

    // The window holds the question once: the next question's request shows it one time.
    fleet.openai.set_delay(Duration::from_millis(20));
    let (next, _) = fleet.ask(other, channel, "次の質問なのだ").await;
    assert!(fleet.wait_answered(&next, Duration::from_secs(30)).await);
    let request = fleet
        .model_requests_for("次の質問なのだ")
        .pop()
        .expect("the next question was asked");
    let window: Vec<String> = support::fake_openai::user_texts(&request);
    assert_eq!(
        window
            .iter()
            .filter(|m| m.contains("凍る質問なのだ"))
            .count(),
        1,
        "window: {window:?}"
    );
    assert!(last_user_text(&request).unwrap().contains("次の質問なのだ"));
    fleet.finish().await;
}
