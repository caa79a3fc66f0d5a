//! End-to-end: the built `zundamon` binary against a fake Discord (gateway + REST), a fake
//! OpenAI-compatible server and a fake DuckDuckGo page, all on 127.0.0.1. Assertions are on what
//! users and operators see: Discord REST calls, the health server, exit codes and logs.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::bot::{run_once, run_once_blocking, temp_dir};
use support::fake_discord::{SentInteraction, GUILD_ID};
use support::fake_openai::{content_text, window_of, FakeOpenAi, Step};
use support::fake_search::FakeSearch;
use support::world::{content, is_follow_up, Fakes, World, USER};

const ERROR_REPLY: &str = "問題が生じたのだ。また、後で質問してほしいのだ。";
const MENTION_REPLY: &str =
    "ずんだもんだよ。何でも聞いてくださいなのだ。質問するときは`/zunda`を使ってね。";

/// The last user message of a model request (the framed question).
fn framed_question(body: &Value) -> String {
    support::fake_openai::last_user_text(body).unwrap_or_default()
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[tokio::test]
async fn registers_the_guild_command_and_answers_with_the_quoted_question() {
    let world = World::start("basic", &[]).await;
    let registered = world
        .discord
        .wait_for_requests(
            |r| r.path.contains(&format!("/guilds/{GUILD_ID}/commands")) && r.status < 300,
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        registered.len(),
        1,
        "the command must be registered for the guild"
    );
    let commands = world.discord.commands();
    let zunda = commands
        .iter()
        .find(|c| c["name"] == "zunda")
        .expect("/zunda");
    assert_eq!(
        zunda["description"],
        "ずんだもんに質問することができます。何でも聞いてください。"
    );
    assert_eq!(zunda["options"][0]["name"], "question");
    assert_eq!(zunda["options"][0]["type"], 3);
    assert_eq!(zunda["options"][0]["required"], true);
    // GUILDS | GUILD_MESSAGES, and no privileged intent.
    assert_eq!(world.discord.last_identify().unwrap()["intents"], 513);

    let sent = world
        .discord
        .send_interaction(10, USER, "ずんだユーザー", "ずんだ餅って何？\n二行目なのだ")
        .await;
    let edits = world.replies(&sent, 1).await;
    let callback = world
        .callback(&sent)
        .expect("the interaction was acknowledged");
    assert_eq!(callback.body["type"], 5, "a deferred (thinking) response");
    assert!(
        callback.body["data"]["flags"].as_u64().unwrap_or(0) & 64 == 0,
        "not ephemeral"
    );
    assert!(callback.at.duration_since(sent.sent_at) < Duration::from_secs(3));
    assert_eq!(
        content(&edits[0]),
        "> ずんだ餅って何？\n> 二行目なのだ\n「ずんだ餅って何？\n二行目なのだ」の答えなのだ。"
    );
    assert!(edits[0].path.ends_with("/messages/@original"));
    assert_eq!(
        edits[0].body["allowed_mentions"]["parse"],
        serde_json::json!([])
    );

    // The model saw the original framing with the user's name.
    let framed = framed_question(&world.openai.requests()[0]);
    assert!(
        framed.starts_with("私の名前は`ずんだユーザー`です。今の時間は"),
        "{framed}"
    );
    assert!(framed
        .ends_with("以上を踏まえて以下の質問に答えてください。\n\nずんだ餅って何？\n二行目なのだ"));

    // Health endpoints.
    assert_eq!(world.bot.get("/").await, (200, "ack".to_owned()));
    assert_eq!(world.bot.get("/healthz").await.0, 200);
    assert!(
        world
            .bot
            .wait_status("/readyz", 200, Duration::from_secs(5))
            .await
    );
    let (status, metrics) = world.bot.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "zundamon_channel_actors 1",
        "zundamon_interactions_total 1",
        "zundamon_ack_latency_seconds_count 1",
        "zundamon_answer_seconds_count 1",
        "zundamon_llm_requests_total{outcome=\"ok\"} 1",
        "zundamon_search_requests_total",
        "zundamon_evictions_total 0",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    world.bot.assert_no_secrets_logged();
}

#[tokio::test]
async fn twenty_channels_at_once_are_all_acknowledged_in_time_and_answered_concurrently() {
    let world = World::start("burst", &[]).await;
    world.openai.set_delay(Duration::from_secs(2));
    let started = Instant::now();
    let mut sent = Vec::new();
    for channel in 0..20u64 {
        sent.push(
            world
                .discord
                .send_interaction(
                    100 + channel,
                    USER + channel,
                    "user",
                    &format!("質問{channel}"),
                )
                .await,
        );
    }
    for (channel, interaction) in sent.iter().enumerate() {
        let edits = world.replies(interaction, 1).await;
        assert!(content(&edits[0]).ends_with(&format!("「質問{channel}」の答えなのだ。")));
        let callback = world.callback(interaction).unwrap();
        let ack = callback.at.duration_since(interaction.sent_at);
        assert!(
            ack < Duration::from_secs(3),
            "channel {channel} acknowledged after {ack:?}"
        );
    }
    let elapsed = started.elapsed();
    // Serially this would take 20 × 2 s = 40 s.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

#[tokio::test]
async fn each_channel_remembers_its_last_five_exchanges() {
    let world = World::start("window", &[]).await;
    for n in 1..=7 {
        world.first_answer(200, &format!("窓の質問{n}")).await;
    }
    let seventh = world.model_requests_for("窓の質問7");
    let window = window_of(&seventh[0]);
    assert_eq!(
        window,
        (2..=6).map(|n| format!("窓の質問{n}")).collect::<Vec<_>>()
    );
    // Assistant turns carry the earlier answers.
    let assistants: Vec<String> = seventh[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| content_text(&m["content"]))
        .collect();
    assert_eq!(assistants[0], "「窓の質問2」の答えなのだ。");

    world.first_answer(201, "別のチャンネル").await;
    let other = world.model_requests_for("別のチャンネル");
    assert!(
        window_of(&other[0]).is_empty(),
        "another channel's window is its own"
    );
}

#[tokio::test]
async fn a_long_answer_arrives_complete_in_parts_within_the_limit() {
    // The parts as sent, without intermediate streamed edits (tests/live.rs covers streaming).
    let world = World::start("long", &[("ZUNDA_STREAM", "false")]).await;
    let answer: String = (0..100)
        .map(|n| {
            format!("これは{n:03}番目のとても長い説明の文なのだ。ずんだ餅はおいしいのだ！😀\n")
        })
        .collect::<String>()
        .repeat(2);
    assert!(answer.chars().count() > 5000);
    world
        .openai
        .script("長い答え", vec![Step::Answer(answer.clone())]);
    let sent = world
        .discord
        .send_interaction(300, USER, "user", "長い答えをちょうだい")
        .await;
    let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let expected = strip(&format!("> 長い答えをちょうだい\n{answer}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let parts = loop {
        let parts = world.replies(&sent, 1).await;
        let so_far: String = parts.iter().map(content).collect();
        if strip(&so_far).len() >= expected.len() || Instant::now() > deadline {
            break parts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        parts.len() >= utf16_len(&answer).div_ceil(2000),
        "{} parts",
        parts.len()
    );
    let mut joined = String::new();
    for part in &parts {
        let text = content(part);
        assert!(
            utf16_len(&text) <= 2000,
            "a part has {} UTF-16 units",
            utf16_len(&text)
        );
        assert_eq!(
            part.body["allowed_mentions"]["parse"],
            serde_json::json!([])
        );
        joined.push_str(&text);
    }
    assert!(parts[0].path.ends_with("@original"));
    assert!(
        parts[1..].iter().all(|p| p.method == "POST"),
        "the rest are follow-ups"
    );
    assert_eq!(strip(&joined), expected);
}

#[tokio::test]
async fn mentions_in_an_answer_or_question_ping_nobody() {
    let world = World::start("mentions", &[]).await;
    world.openai.script(
        "みんなを呼んで",
        vec![Step::Answer(
            "@everyone @here <@&123456789012345678> 集合なのだ！".into(),
        )],
    );
    let text = world
        .ask(400, "@everyone みんなを呼んで <@&123456789012345678>")
        .await;
    assert!(text.contains("@everyone"));
    let edit = world
        .discord
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        edit.body["allowed_mentions"],
        serde_json::json!({"parse": []})
    );
}

#[tokio::test]
async fn a_mention_gets_the_guide_reply_and_other_messages_are_ignored() {
    let world = World::start("mention", &[]).await;
    let bot_id = support::fake_discord::BOT_USER_ID;
    world
        .discord
        .send_message(500, USER, false, "ただの会話なのだ", false)
        .await;
    world
        .discord
        .send_message(
            500,
            USER + 1,
            true,
            &format!("<@{bot_id}> bot talking"),
            true,
        )
        .await;
    let message_id = world
        .discord
        .send_message(500, USER, false, &format!("<@{bot_id}> こんにちは"), true)
        .await;
    let replies = world
        .discord
        .wait_for_requests(
            |r| r.is("POST", "/channels/500/messages"),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(replies.len(), 1);
    // A later mention is answered after: the messages before it have had their turn.
    world
        .discord
        .send_message(501, USER, false, &format!("<@{bot_id}> もう一度"), true)
        .await;
    let later = world
        .discord
        .wait_for_requests(
            |r| r.is("POST", "/channels/501/messages"),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(later.len(), 1);
    let replies: Vec<_> = world
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.is("POST", "/channels/500/"))
        .collect();
    assert_eq!(
        replies.len(),
        1,
        "only the human's mention is answered: {replies:#?}"
    );
    assert_eq!(content(&replies[0]), MENTION_REPLY);
    assert_eq!(
        replies[0].body["message_reference"]["message_id"]
            .to_string()
            .trim_matches('"'),
        message_id.to_string()
    );
    assert_eq!(
        replies[0].body["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn the_window_survives_a_restart() {
    let mut world = World::start("restart", &[]).await;
    world.first_answer(600, "再起動前の質問").await;
    world.bot.signal("TERM");
    let status = world
        .bot
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    assert!(status.success(), "exit status {status:?}");

    world.restart(&[]).await;
    world.first_answer(600, "再起動後の質問").await;
    let after = world.model_requests_for("再起動後の質問");
    assert_eq!(window_of(&after[0]), vec!["再起動前の質問"]);
}

#[tokio::test]
async fn the_window_survives_eviction() {
    let world = World::start("evict", &[("ZUNDA_CHANNEL_IDLE_SECS", "1")]).await;
    world.first_answer(700, "追い出される前").await;
    assert_eq!(world.bot.metric("zundamon_channel_actors").await, Some(1.0));
    let evicted = world
        .bot
        .wait_metric("zundamon_evictions_total", Duration::from_secs(10), |n| {
            n == 1.0
        })
        .await;
    assert!(evicted, "the idle channel was never evicted");
    assert_eq!(world.bot.metric("zundamon_channel_actors").await, Some(0.0));
    world.first_answer(700, "追い出された後").await;
    let after = world.model_requests_for("追い出された後");
    assert_eq!(window_of(&after[0]), vec!["追い出される前"]);
}

#[tokio::test]
async fn sigterm_during_a_slow_answer_delivers_it_and_exits_zero() {
    let mut world = World::start("sigterm", &[("ZUNDA_SHUTDOWN_GRACE_SECS", "15")]).await;
    world.openai.set_delay(Duration::from_secs(3));
    let slow = world
        .discord
        .send_interaction(800, USER, "user", "ゆっくり答えて")
        .await;
    world
        .discord
        .wait_for_requests(
            |r| r.is("POST", &format!("/interactions/{}/", slow.id)),
            1,
            Duration::from_secs(5),
        )
        .await;
    world.bot.signal("TERM");
    assert!(
        world
            .bot
            .wait_status("/readyz", 503, Duration::from_secs(2))
            .await
    );

    // The gateway session closes at once, so new events go to another process of the bot (a
    // rolling deploy's new one) instead of to one that is leaving.
    let deadline = Instant::now() + Duration::from_secs(3);
    while world.discord.ready_sessions() > 0 {
        assert!(Instant::now() < deadline, "the gateway session stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = world
        .bot
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits in time");
    assert!(status.success(), "exit status {status:?}");
    let edits = world.replies(&slow, 1).await;
    assert!(content(&edits[0]).ends_with("「ゆっくり答えて」の答えなのだ。"));
}

#[tokio::test]
async fn model_errors_and_timeouts_give_the_error_message_and_the_bot_keeps_serving() {
    let world = World::start(
        "model-errors",
        &[
            ("ZUNDA_ANSWER_TIMEOUT_SECS", "3"),
            ("ZUNDA_LLM_REQUEST_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    world.openai.script("壊れて", vec![Step::Status(500); 5]);
    world.openai.script("固まって", vec![Step::Hang; 5]);
    world
        .openai
        .script("切れて", vec![Step::CloseConnection; 5]);
    assert_eq!(world.first_answer(900, "壊れて").await, ERROR_REPLY);
    assert_eq!(world.first_answer(901, "固まって").await, ERROR_REPLY);
    assert_eq!(world.first_answer(902, "切れて").await, ERROR_REPLY);
    assert!(world
        .ask(900, "次は大丈夫？")
        .await
        .ends_with("「次は大丈夫？」の答えなのだ。"));
    let logs = world.bot.logs();
    assert!(
        logs.contains("500"),
        "the operator log names the status:\n{logs}"
    );
    world.bot.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_rate_limited_edit_is_delivered_after_retry_after() {
    let world = World::start("discord-429", &[]).await;
    world
        .discord
        .fail_next("PATCH", "@original", 1, 429, Some(1.0));
    world.discord.fail_next("PATCH", "@original", 0, 500, None);
    let sent = world
        .discord
        .send_interaction(1000, USER, "user", "混んでる？")
        .await;
    let attempts = world
        .discord
        .wait_for_requests(|r| r.is("PATCH", &sent.token), 2, Duration::from_secs(15))
        .await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[0].status, 429);
    assert_eq!(attempts[1].status, 200);
    assert!(attempts[1].at.duration_since(attempts[0].at) >= Duration::from_millis(950));
    assert!(content(&attempts[1]).ends_with("「混んでる？」の答えなのだ。"));
}

#[tokio::test]
async fn a_failing_follow_up_is_retried_until_delivered() {
    let world = World::start("discord-500", &[]).await;
    world
        .openai
        .script("長めで", vec![Step::Answer("あ".repeat(3000))]);
    world.discord.fail_next("POST", "/webhooks/", 2, 502, None);
    let sent = world
        .discord
        .send_interaction(1001, USER, "user", "長めで")
        .await;
    let follow_ups = world
        .discord
        .wait_for_requests(|r| is_follow_up(r, &sent.token), 3, Duration::from_secs(20))
        .await;
    assert_eq!(
        follow_ups.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![502, 502, 200]
    );
}

#[tokio::test]
async fn the_bot_resumes_after_the_gateway_drops_and_readyz_follows() {
    let world = World::start("gateway-drop", &[]).await;
    assert!(
        world
            .bot
            .wait_status("/readyz", 200, Duration::from_secs(5))
            .await
    );
    let sessions = world.discord.identify_count() + world.discord.resume_count();
    world.discord.refuse_gateway_for(Duration::from_secs(3));
    world.discord.drop_gateway().await;
    assert!(
        world
            .bot
            .wait_status("/readyz", 503, Duration::from_secs(3))
            .await,
        "/readyz must report the lost gateway session:\n{}",
        world.bot.logs()
    );
    assert_eq!(
        world.bot.get("/").await.0,
        200,
        "the process stays healthy meanwhile"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.discord.identify_count() + world.discord.resume_count() == sessions {
        assert!(
            Instant::now() < deadline,
            "the bot never reconnected:\n{}",
            world.bot.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(world.discord.wait_ready(Duration::from_secs(10)).await);
    assert!(
        world
            .bot
            .wait_status("/readyz", 200, Duration::from_secs(10))
            .await
    );
    assert!(world
        .ask(1100, "戻ってきた？")
        .await
        .ends_with("「戻ってきた？」の答えなのだ。"));
}

#[tokio::test]
async fn bad_questions_and_floods_get_zundamon_voiced_replies() {
    let world = World::start(
        "limits",
        &[
            ("ZUNDA_RATE_BURST", "2"),
            ("ZUNDA_RATE_PER_MINUTE", "1"),
            ("ZUNDA_MAX_QUESTION_CHARS", "50"),
        ],
    )
    .await;
    let immediate = |sent: SentInteraction| {
        let discord = &world.discord;
        async move {
            let got = discord
                .wait_for_requests(
                    |r| r.is("POST", &format!("/interactions/{}/", sent.id)),
                    1,
                    Duration::from_secs(5),
                )
                .await;
            assert_eq!(
                got[0].body["type"], 4,
                "answered at once: {:?}",
                got[0].body
            );
            got[0].body["data"]["content"].as_str().unwrap().to_owned()
        }
    };
    let empty = world
        .discord
        .send_interaction(1200, USER, "u", "   \n ")
        .await;
    let text = immediate(empty).await;
    assert!(text.contains("/zunda") && text.contains("のだ"), "{text}");

    let long = world
        .discord
        .send_interaction(1200, USER, "u", &"長".repeat(51))
        .await;
    let text = immediate(long).await;
    assert!(text.contains("50"), "{text}");

    world.first_answer(1200, "一つ目").await;
    world.first_answer(1200, "二つ目").await;
    let third = world
        .discord
        .send_interaction(1200, USER, "u", "三つ目")
        .await;
    let text = immediate(third).await;
    assert!(text.contains("待って"), "{text}");
    // Another user is not limited.
    let other = world
        .discord
        .send_interaction(1200, USER + 9, "v", "私は？")
        .await;
    assert!(content(&world.replies(&other, 1).await[0]).ends_with("「私は？」の答えなのだ。"));
    assert_eq!(
        world.model_requests_for("三つ目").len(),
        0,
        "a limited question costs no model call"
    );
}

#[test]
fn a_corrupt_or_unusable_database_is_a_clear_startup_error() {
    let dir = temp_dir("bad-db");
    let corrupt = dir.join("corrupt.db");
    std::fs::write(&corrupt, vec![0x42u8; 8192]).unwrap();
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "file").unwrap();
    let under_a_file = blocker.join("zundamon.db");
    for (path, expect) in [
        (corrupt.display().to_string(), "not a database"),
        (under_a_file.display().to_string(), "not-a-dir"),
        (dir.display().to_string(), "directory"),
    ] {
        let (code, _, stderr) = run_once(
            &[],
            &[
                ("DISCORD_BOT_TOKEN", "t"),
                ("DISCORD_GUILD_ID", "1"),
                ("OPENAI_API_KEY", "k"),
                ("DISCORD_API_BASE", "http://127.0.0.1:9"),
                ("PORT", "0"),
                ("ZUNDA_DB_PATH", &path),
            ],
        );
        assert_ne!(code, 0, "{path}: {stderr}");
        assert!(stderr.contains(&path), "the error names the path: {stderr}");
        assert!(stderr.contains(expect), "{path}: {stderr}");
        assert!(
            stderr.contains("ZUNDA_DB_PATH"),
            "the error says what to do: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_configuration_is_listed_and_exits_2() {
    let (code, _, stderr) = run_once(&[], &[]);
    assert_eq!(code, 2, "{stderr}");
    for name in ["DISCORD_BOT_TOKEN", "DISCORD_GUILD_ID", "OPENAI_API_KEY"] {
        assert!(stderr.contains(name), "{stderr}");
    }
    let (code, stdout, stderr) = run_once(
        &["check-config"],
        &[
            ("DISCORD_BOT_TOKEN", "tok-sekrit"),
            ("DISCORD_GUILD_ID", "5"),
            ("OPENAI_API_KEY", "sk-sekrit"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("guild_id = 5") && stdout.contains("[redacted]"),
        "{stdout}"
    );
    assert!(!stdout.contains("sekrit") && !stderr.contains("sekrit"));
    let (_, stdout, _) = run_once(&["--help"], &[]);
    assert!(
        stdout.contains("check-config") && stdout.contains("ask"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_answers_from_the_console_and_remembers_the_conversation() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let openai = FakeOpenAi::start().await;
    let search = FakeSearch::start().await;
    let env = [
        ("OPENAI_API_KEY", "sk-console-secret".to_owned()),
        ("OPENAI_BASE_URL", openai.base_url()),
        ("SEARCH_BASE_URL", search.base_url()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ];
    let once_env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let (code, stdout, stderr) = run_once_blocking(
        &["ask", "ずんだ餅ってなに？", "--name", "テスター"],
        once_env,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "「ずんだ餅ってなに？」の答えなのだ。");
    let framed = framed_question(&openai.requests()[0]);
    assert!(framed.starts_with("私の名前は`テスター`です。"), "{framed}");

    // Without a question it reads lines from stdin, one conversation.
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zundamon"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("ask")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all("一つ目の質問\n二つ目の質問\n".as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("「二つ目の質問」の答えなのだ。"),
        "{stdout}"
    );
    let second = openai
        .requests()
        .into_iter()
        .find(|body| framed_question(body).contains("二つ目の質問"))
        .unwrap();
    assert_eq!(window_of(&second), vec!["一つ目の質問"]);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("sk-console-secret"));
}

#[tokio::test]
async fn a_runaway_answer_takes_five_messages_the_last_carrying_it_whole_as_a_file() {
    let world = World::start("runaway", &[("ZUNDA_STREAM", "false")]).await;
    let answer = "ずんだ".repeat(10_000);
    world
        .openai
        .script("止まらない", vec![Step::Answer(answer.clone())]);
    let sent = world
        .discord
        .send_interaction(1300, USER, "user", "止まらない話")
        .await;
    world.replies(&sent, 5).await;
    // Its final delivery is logged once every part is sent.
    world.wait_final(&sent).await;
    let parts = world.replies(&sent, 5).await;
    assert_eq!(parts.len(), 5, "a flood of messages");
    assert!(
        content(&parts[4]).contains("ファイル"),
        "{}",
        content(&parts[4])
    );
    assert_eq!(parts[4].files.len(), 1, "the note carries the answer");
    assert_eq!(parts[4].files[0].filename, "zundamon-answer.txt");
    assert_eq!(parts[4].files[0].text(), answer);
}

#[tokio::test]
async fn the_http_interactions_endpoint_verifies_signatures_and_answers() {
    use ed25519_dalek::SigningKey;
    use support::http_load::{public_key_hex, signed, signing_key, unix_now, PING};

    let key = signing_key();
    let public = public_key_hex(&key);
    let world = World::start(
        "http-interactions",
        &[("DISCORD_PUBLIC_KEY", public.as_str())],
    )
    .await;
    let now = unix_now();
    let ping = PING.to_owned();

    let (status, body) = world
        .bot
        .post("/interactions", &signed(&key, now, &ping), ping.clone())
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"type":1}"#));

    // Discord probes with bad signatures and expects 401.
    let stranger = SigningKey::from_bytes(&[8u8; 32]);
    for headers in [
        signed(&stranger, now, &ping),
        signed(&key, now - 3600, &ping),
        vec![("Content-Type", "application/json".to_owned())],
    ] {
        assert_eq!(
            world
                .bot
                .post("/interactions", &headers, ping.clone())
                .await
                .0,
            401
        );
    }
    let mut tampered = signed(&key, now, &ping);
    tampered[1].1 = (now + 1).to_string();
    assert_eq!(
        world
            .bot
            .post("/interactions", &tampered, ping.clone())
            .await
            .0,
        401
    );

    // A command: the HTTP response is the first message, the answer then replaces it.
    let sent = world.discord.register_acknowledged_interaction(1400);
    let payload = support::fake_discord::interaction_payload(
        sent.id,
        &sent.token,
        1400,
        USER,
        "ずんだユーザー",
        "HTTPで聞くのだ",
    )
    .to_string();
    let (status, body) = world
        .bot
        .post(
            "/interactions",
            &signed(&key, now, &payload),
            payload.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let response: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(response["type"], 4);
    assert_eq!(response["data"]["content"], "ちょっと待ってね。");
    assert_eq!(
        response["data"]["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
    let edits = world.replies(&sent, 1).await;
    assert_eq!(
        content(&edits[0]),
        "> HTTPで聞くのだ\n「HTTPで聞くのだ」の答えなのだ。"
    );

    // Without DISCORD_PUBLIC_KEY there is no endpoint at all.
    let plain = World::start("no-interactions", &[]).await;
    assert_eq!(
        plain
            .bot
            .post("/interactions", &signed(&key, now, &ping), ping)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn probes_pass_while_the_gateway_is_still_connecting() {
    let fakes = Fakes::start().await;
    let lookup_delay = Duration::from_secs(5);
    fakes.discord.delay_next("GET", "/gateway", lookup_delay);
    let world = World::builder("startup")
        .fakes(fakes)
        .start_connecting()
        .await;
    let (discord, bot) = (&world.discord, &world.bot);
    assert_eq!(bot.get("/").await, (200, "ack".to_owned()));
    // The lookup starts on the gateway's own thread, shortly after the probes are up.
    let lookup = discord
        .wait_for_requests(|r| r.is("GET", "/gateway"), 1, Duration::from_secs(3))
        .await
        .into_iter()
        .next()
        .expect("the bot looked up the gateway");
    assert_eq!(bot.get("/").await, (200, "ack".to_owned()));
    assert!(
        lookup.at.elapsed() < lookup_delay,
        "probes must answer while the gateway lookup is still pending"
    );
    assert_eq!(bot.get("/healthz").await.0, 200);
    assert_eq!(
        bot.get("/readyz").await.0,
        503,
        "not ready before the gateway session"
    );
    assert!(discord.wait_ready(Duration::from_secs(20)).await);
    assert!(
        bot.wait_status("/readyz", 200, Duration::from_secs(10))
            .await
    );
}

#[tokio::test]
async fn questions_keep_their_order_even_when_an_acknowledgement_is_slow() {
    let world = World::start("order", &[]).await;
    // The first question's acknowledgement comes back late; the ones after it must still wait
    // their turn behind it in the channel.
    world
        .discord
        .delay_next("POST", "/callback", Duration::from_millis(700));
    let mut sent = Vec::new();
    for n in 1..=3 {
        sent.push(
            world
                .discord
                .send_interaction(1500, USER, "user", &format!("順番{n}"))
                .await,
        );
        // Well apart for serenity (it dispatches each event on a task of its own, so events a few
        // milliseconds apart can reach the bot swapped on a loaded machine), well within the
        // slow acknowledgement.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for interaction in &sent {
        world.replies(interaction, 1).await;
    }
    let asked: Vec<String> = world
        .openai
        .requests()
        .iter()
        .map(framed_question)
        .map(|framed| framed.rsplit("\n\n").next().unwrap().to_owned())
        .collect();
    assert_eq!(asked, vec!["順番1", "順番2", "順番3"]);
    let third = world.model_requests_for("順番3");
    assert_eq!(window_of(&third[0]), vec!["順番1", "順番2"]);
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let world = World::start("json-logs", &[("LOG_FORMAT", "json")]).await;
    world.first_answer(1600, "JSONで").await;
    let logs = world.bot.logs();
    let mut lines = 0;
    for line in logs.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 3, "{logs}");
    assert!(
        logs.contains("\"interaction_id\""),
        "interaction spans carry their ids:\n{logs}"
    );
    world.bot.assert_no_secrets_logged();
}
