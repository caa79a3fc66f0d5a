//! End-to-end: every accepted question is answered exactly once, in its channel's order, whatever
//! happens to the process or the network. The built `zundamon` binary runs against the loopback
//! fakes; assertions are on what users see (Discord REST calls) and on the model requests.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::bot::wait_totals;
use support::fake_discord::{FakeDiscord, SentInteraction, APP_ID, GUILD_ID};
use support::world::{asked_question, content, wait_until, World, USER};

#[tokio::test]
async fn questions_dispatched_in_one_gateway_write_are_asked_in_dispatch_order() {
    let world = World::start("order-burst", &[]).await;
    for round in 0..20u64 {
        let channel = 7_000 + round;
        let questions: Vec<String> = (1..=5).map(|n| format!("r{round}-q{n}")).collect();
        let refs: Vec<&str> = questions.iter().map(String::as_str).collect();
        let sent = world
            .discord
            .send_interactions_at_once(channel, USER, &refs)
            .await;
        for interaction in &sent {
            let delivered = world
                .wait_delivered(interaction, Duration::from_secs(30))
                .await;
            assert!(
                !delivered.is_empty(),
                "round {round}: no answer; log:\n{}",
                world.bot.logs()
            );
        }
        let asked: Vec<String> = world
            .asked()
            .into_iter()
            .filter(|q| q.starts_with(&format!("r{round}-")))
            .collect();
        assert_eq!(
            asked, questions,
            "round {round}: asked out of dispatch order"
        );
    }
}

#[tokio::test]
async fn kill_9_loses_nothing_the_next_process_answers_each_pending_question_once_in_order() {
    let mut world = World::start("kill9", &[]).await;
    world.openai.set_delay(Duration::from_secs(30));
    // Five questions in one gateway write: their records are inserted concurrently, in any order.
    let a_questions = ["A1", "A2", "A3", "A4", "A5"];
    let a = world
        .discord
        .send_interactions_at_once(100, USER, &a_questions)
        .await;
    let b1 = world
        .discord
        .send_interaction(200, USER, "user", "B1")
        .await;
    let all: Vec<&SentInteraction> = a.iter().chain([&b1]).collect();
    for sent in &all {
        wait_until("the acknowledgement", Duration::from_secs(5), || {
            !world.taken_callbacks(sent).is_empty()
        })
        .await;
    }
    // A1 and B1 are with the (slow) model; A2..A5 wait behind A1.
    world
        .openai
        .wait_for_requests(2, Duration::from_secs(5))
        .await;
    world.bot.kill_9().await;
    for sent in &all {
        assert!(
            world.deliveries(sent).is_empty(),
            "answered before the kill"
        );
    }

    world.openai.set_delay(Duration::ZERO);
    world.restart(&[]).await;
    for sent in &all {
        let delivered = world.wait_delivered(sent, Duration::from_secs(30)).await;
        assert!(
            !delivered.is_empty(),
            "not resumed; log:\n{}",
            world.bot.logs()
        );
    }
    // A later question in each channel: a channel answers in order, so a duplicate of a resumed
    // question would be delivered before it.
    let a6 = world
        .discord
        .send_interaction(100, USER, "user", "A6")
        .await;
    let b2 = world
        .discord
        .send_interaction(200, USER, "user", "B2")
        .await;
    for later in [&a6, &b2] {
        assert!(!world
            .wait_delivered(later, Duration::from_secs(30))
            .await
            .is_empty());
    }
    let questions = a_questions.iter().chain(["B1"].iter());
    for (sent, question) in all.iter().zip(questions) {
        let delivered = world.deliveries(sent);
        assert_eq!(
            delivered.len(),
            1,
            "{question} delivered {} times",
            delivered.len()
        );
        assert!(content(&delivered[0]).starts_with(&format!("> {question}\n")));
    }
    // Asked again after the restart in each channel's order, each seeing the one before.
    let asked: Vec<String> = world
        .asked()
        .into_iter()
        .skip(2)
        .filter(|q| q != "A6" && q != "B2")
        .collect();
    let a_order: Vec<&String> = asked.iter().filter(|q| q.starts_with('A')).collect();
    assert_eq!(a_order, a_questions, "resumed out of acceptance order");
    assert_eq!(
        asked.len(),
        6,
        "each pending question asked once: {asked:?}"
    );
    // The windows are intact: the new question in channel A saw the last ones in order.
    let last = world
        .openai
        .requests()
        .into_iter()
        .find(|body| asked_question(body) == "A6")
        .unwrap();
    let history: Vec<String> = support::fake_openai::user_texts(&last);
    let before: Vec<&String> = history.iter().rev().skip(1).take(3).collect();
    assert!(
        before[0].ends_with("A5") && before[1].ends_with("A4") && before[2].ends_with("A3"),
        "window out of order: {history:?}"
    );
    assert_eq!(
        world
            .bot
            .metric("zundamon_pending_resumed_total{outcome=\"resumed\"}")
            .await,
        Some(6.0)
    );
    world.bot.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_pending_question_older_than_its_token_is_dropped_and_counted() {
    let world = World::start("expired", &[]).await;
    let discord = &world.discord;
    let stale = discord.register_acknowledged_interaction(300);
    let fresh = discord.register_acknowledged_interaction(300);
    // Left by a process that died 20 minutes ago, and by one that died just now.
    let db = world.dir.join("left.db");
    {
        let store = zundamon::store::SqliteStore::open(&db, Duration::from_secs(86_400)).unwrap();
        for (sent, age, text) in [(&stale, 20 * 60, "古い質問"), (&fresh, 5, "新しい質問")]
        {
            let question = zundamon::store::PendingQuestion {
                interaction_id: sent.id,
                application_id: APP_ID,
                token: zundamon::config::Secret::new(sent.token.clone()),
                channel_id: 300,
                guild_id: Some(GUILD_ID),
                user_id: USER,
                user_name: "user".into(),
                question: text.into(),
                received_at: std::time::SystemTime::now() - Duration::from_secs(age),
                accepted: zundamon::store::acceptance_stamp(),
                delivered_parts: 0,
                follow_ups: Vec::new(),
                fence: 0,
                attachments: Vec::new(),
                places: Vec::new(),
            };
            zundamon::store::PendingStore::record(&store, &question)
                .await
                .unwrap();
        }
    }
    let bot = world.second_process("left.db", &[]).await;
    let delivered = world.wait_delivered(&fresh, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 1, "log:\n{}", bot.logs());
    // Counted as expired: the stale question's fate is decided.
    let expired = bot
        .wait_metric(
            "zundamon_pending_resumed_total{outcome=\"expired\"}",
            Duration::from_secs(10),
            |n| n == 1.0,
        )
        .await;
    assert!(expired, "{}", bot.logs());
    assert!(
        world.deliveries(&stale).is_empty(),
        "an expired question was answered"
    );
    assert_eq!(world.asked(), ["新しい質問"]);
    assert!(bot.logs().contains("token has expired"));
    // Both rows are gone: a further restart resumes nothing.
    drop(bot);
    let store = zundamon::store::SqliteStore::open(&db, Duration::from_secs(86_400)).unwrap();
    assert!(zundamon::store::PendingStore::pending(&store)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_refused_acknowledgement_means_no_model_call() {
    let world = World::start("refused", &[]).await;
    let taken = world
        .discord
        .send_interaction_taken_elsewhere(400, "他のプロセスが取った質問")
        .await;
    let mine = world
        .discord
        .send_interaction(400, USER, "user", "自分の質問")
        .await;
    world.wait_delivered(&mine, Duration::from_secs(30)).await;
    // Counted as withdrawn: the refused question's fate is decided.
    let withdrawn = world
        .bot
        .wait_metric(
            "zundamon_questions_withdrawn_total{reason=\"already_acknowledged\"}",
            Duration::from_secs(10),
            |n| n == 1.0,
        )
        .await;
    assert!(withdrawn, "{}", world.bot.logs());
    assert_eq!(
        world.asked(),
        ["自分の質問"],
        "the refused question reached the model"
    );
    assert!(world.deliveries(&taken).is_empty());
    // The window holds only the answered question.
    let next = world
        .discord
        .send_interaction(400, USER, "user", "次")
        .await;
    world.wait_delivered(&next, Duration::from_secs(30)).await;
    let last = world.openai.requests().pop().unwrap();
    let text = last.to_string();
    assert!(text.contains("自分の質問") && !text.contains("他のプロセスが取った質問"));
}

#[tokio::test]
async fn two_processes_on_one_gateway_answer_each_question_and_mention_once() {
    let world = World::start("two-processes", &[]).await;
    let second = world.second_process("second.db", &[]).await;
    assert!(
        world
            .discord
            .wait_sessions(2, Duration::from_secs(20))
            .await,
        "second session; log:\n{}",
        second.logs()
    );
    let mut sent = Vec::new();
    for n in 0..10u64 {
        sent.push(
            world
                .discord
                .send_interaction(500 + n % 3, USER + n, "user", &format!("二重{n}"))
                .await,
        );
    }
    let mut mentions = Vec::new();
    for n in 0..3u64 {
        mentions.push(
            world
                .discord
                .send_message(600, USER + n, false, "<@zundamon> やあ", true)
                .await,
        );
    }
    for interaction in &sent {
        let delivered = world
            .wait_delivered(interaction, Duration::from_secs(30))
            .await;
        assert!(!delivered.is_empty());
    }
    // Each question and mention reached both processes: once the loser of every acknowledgement
    // has withdrawn its copy and both have sent every mention reply (the nonce makes Discord
    // keep one), nothing more is on its way.
    let settled = wait_totals(
        &[&world.bot, &second],
        &[
            (
                "zundamon_questions_withdrawn_total{reason=\"already_acknowledged\"}",
                10.0,
            ),
            ("zundamon_replies_total{kind=\"mention\"}", 6.0),
        ],
        Duration::from_secs(10),
    )
    .await;
    assert!(settled, "{}\n---\n{}", world.bot.logs(), second.logs());
    for interaction in &sent {
        assert_eq!(world.taken_callbacks(interaction).len(), 1);
        assert_eq!(world.deliveries(interaction).len(), 1);
    }
    let asked = world.asked();
    assert_eq!(
        asked.len(),
        10,
        "each question asked once across both: {asked:?}"
    );
    let replies: Vec<Value> = world
        .discord
        .created_messages()
        .into_iter()
        .filter(|m| m["channel_id"] == "600")
        .collect();
    assert_eq!(replies.len(), 3, "one reply per mention: {replies:#?}");
    for message_id in mentions {
        assert_eq!(
            replies
                .iter()
                .filter(|m| {
                    m["message_reference"]["message_id"].as_str()
                        == Some(message_id.to_string().as_str())
                })
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn a_flood_in_one_channel_is_answered_in_order_up_to_the_limit_and_the_rest_told_busy() {
    let world = World::start("flood", &[("ZUNDA_MAX_QUEUED_PER_CHANNEL", "8")]).await;
    world.openai.set_delay(Duration::from_millis(300));
    let questions: Vec<String> = (1..=30).map(|n| format!("洪水{n:02}")).collect();
    let refs: Vec<&str> = questions.iter().map(String::as_str).collect();
    let sent = world
        .discord
        .send_interactions_at_once(900, USER, &refs)
        .await;
    // Every one gets its callback at once: deferred, or the busy reply.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut kinds = Vec::new();
    for interaction in &sent {
        loop {
            if let Some(callback) = world.taken_callbacks(interaction).first() {
                kinds.push(callback.body["type"].as_u64().unwrap());
                if callback.body["type"] == 4 {
                    assert!(
                        content(callback).contains("混んでいる"),
                        "{}",
                        content(callback)
                    );
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a question got no reply: silence"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(kinds[..8], [5; 8], "the first eight are accepted");
    assert!(
        kinds[8..].iter().all(|&k| k == 4),
        "the rest are told busy: {kinds:?}"
    );
    for interaction in &sent[..8] {
        assert!(!world
            .wait_delivered(interaction, Duration::from_secs(30))
            .await
            .is_empty());
    }
    assert_eq!(world.asked(), questions[..8]);
}

/// The "would expire" estimate multiplies the questions ahead by the time ONE answer takes: after
/// a backlog (whose answers each waited for the ones before) it must not refuse questions that
/// can start in time. Here a question has 4 s to start (`ZUNDA_ANSWER_TIMEOUT_SECS` leaves 4 s of
/// the token) and an answer takes 0.5 s: six at once fit (the sixth starts at 2.5 s). Fed on
/// end-to-end times, the first backlog (0.5, 1, 1.5, 2 s) would push the estimate past 1 s and
/// turn the fifth and sixth away.
#[tokio::test]
async fn a_backlog_does_not_make_admission_refuse_what_can_start_in_time() {
    let world = World::start(
        "service-time",
        &[
            ("ZUNDA_ANSWER_TIMEOUT_SECS", "866"),
            ("ZUNDA_STREAM", "false"),
        ],
    )
    .await;
    world.openai.set_delay(Duration::from_millis(500));
    for wave in ["一波", "二波"] {
        let count = if wave == "一波" { 4 } else { 6 };
        let questions: Vec<String> = (1..=count).map(|n| format!("{wave}{n}")).collect();
        let refs: Vec<&str> = questions.iter().map(String::as_str).collect();
        let sent = world
            .discord
            .send_interactions_at_once(950, USER, &refs)
            .await;
        for (interaction, question) in sent.iter().zip(&questions) {
            let delivered = world
                .wait_delivered(interaction, Duration::from_secs(30))
                .await;
            assert!(!delivered.is_empty(), "{question}: no answer");
            let shown = world.discord.shown(&interaction.token).concat();
            assert!(
                !shown.contains("混んでいる"),
                "{question} was refused as busy: {shown}\n{}",
                world.bot.logs()
            );
        }
    }
    assert_eq!(world.asked().len(), 10);
}

#[tokio::test]
async fn sigterm_past_the_grace_period_leaves_the_question_to_the_next_process() {
    let mut world = World::start("sigterm-leave", &[("ZUNDA_SHUTDOWN_GRACE_SECS", "4")]).await;
    world.openai.set_delay(Duration::from_secs(60));
    let slow = world.send_until_asked(700, "とても遅い質問").await;
    world.bot.signal("TERM");
    let status = world
        .bot
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits within the grace period");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        world.deliveries(&slow).is_empty(),
        "the leaving process must not answer with an error"
    );
    assert!(world
        .bot
        .logs()
        .contains("stay stored for the next process"));

    world.openai.set_delay(Duration::ZERO);
    world.restart(&[]).await;
    let delivered = world.wait_delivered(&slow, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 1);
    assert!(content(&delivered[0]).starts_with("> とても遅い質問\n"));
    assert!(!content(&delivered[0]).contains("問題が生じた"));
}

/// A streamed answer longer than one message continues in a follow-up while the model writes. A
/// process killed after posting it leaves the follow-up's id with the pending question: the next
/// process edits that message into the final answer instead of posting the part again.
#[tokio::test]
async fn kill_9_mid_stream_reuses_the_follow_up_already_posted() {
    let mut world = World::start("kill9-stream", &[("ZUNDA_STREAM_EDIT_MS", "250")]).await;
    let answer = "ずんだ餅は枝豆をすりつぶした餡でできているのだ。".repeat(110);
    let steps = vec![
        support::fake_openai::Step::Answer(answer.clone()),
        support::fake_openai::Step::Answer(answer.clone()),
    ];
    world.openai.script("長い話", steps);
    // About 900 events 6 ms apart: the follow-up appears after about 4 s of a 5.5 s answer.
    world.openai.set_stream_gap(Duration::from_millis(6));
    let sent = world
        .discord
        .send_interaction(500, USER, "user", "長い話をして")
        .await;
    let posted = |discord: &FakeDiscord| {
        discord
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(&sent.token) && r.status < 300)
            .count()
    };
    // Killed as soon as the follow-up's id is kept with the question (a crash between Discord
    // taking the follow-up and the store noting it cannot be told apart by the next process).
    let noted = |db: &std::path::Path| {
        let conn = rusqlite::Connection::open(db).expect("open the bot's database");
        conn.query_row(
            "SELECT count(*) FROM pending_questions WHERE follow_ups != ''",
            [],
            |row| row.get::<_, i64>(0),
        )
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while posted(&world.discord) == 0 || noted(&world.db()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no follow-up noted while streaming; log:\n{}",
            world.bot.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    world.bot.kill_9().await;
    let before = world.discord.shown(&sent.token);
    assert_eq!(before.len(), 2, "{before:?}");

    world.openai.set_stream_gap(Duration::ZERO);
    world.restart(&[]).await;
    world.wait_final(&sent).await;
    let expected = zundamon::discord::split::split_message(
        &zundamon::discord::bound_reply(&zundamon::discord::quote_answer("長い話をして", &answer)),
        zundamon::discord::MESSAGE_LIMIT,
    );
    assert_eq!(expected.len(), 2);
    let shown = world.discord.shown(&sent.token);
    let lengths = |parts: &[String]| parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>();
    assert!(
        shown == expected,
        "shows messages of {:?} characters, expected {:?}",
        lengths(&shown),
        lengths(&expected)
    );
    assert_eq!(
        posted(&world.discord),
        1,
        "the follow-up was posted again after the restart"
    );
}
