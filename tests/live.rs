//! End-to-end: the channel memory commands (`/zunda-reset`, `/zunda-memory`), against the built
//! binary and the loopback fakes.

mod support;

use std::time::{Duration, Instant};

use support::fake_discord::{RecordedRequest, SentInteraction};
use support::world::{content, World, USER};

const MANAGE_MESSAGES: u64 = 1 << 13;
const SEND_MESSAGES: u64 = 1 << 11;

/// The first callback Discord took for an interaction, waiting up to 5 s.
async fn callback(world: &World, sent: &SentInteraction) -> RecordedRequest {
    world
        .wait_taken_callback(sent, Duration::from_secs(5))
        .await
}

/// The user turns the model saw before the current question, for the last model request.
fn last_history(world: &World) -> Vec<String> {
    let last = world.openai.requests().pop().expect("a model request");
    support::fake_openai::window_of(&last)
}

#[tokio::test]
async fn all_commands_are_registered_in_one_bulk_overwrite_with_reset_restricted() {
    let world = World::start("commands", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.discord.commands().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "commands: {:?}",
            world.discord.commands()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let puts: Vec<_> = world
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/commands"))
        .collect();
    assert_eq!(puts.len(), 1, "one bulk overwrite");
    let commands = world.discord.commands();
    let names: Vec<&str> = commands
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["zunda", "zunda-reset", "zunda-memory", "zunda-model"]
    );
    assert_eq!(
        commands[1]["default_member_permissions"],
        MANAGE_MESSAGES.to_string()
    );
}

#[tokio::test]
async fn reset_forgets_the_channel_and_is_refused_without_manage_messages() {
    let world = World::start("reset", &[]).await;
    let first = world
        .discord
        .send_interaction(42, USER, "user", "覚えてね")
        .await;
    world.wait_delivered(&first, Duration::from_secs(30)).await;

    // Without the permission: refused, only to the asker, and nothing is forgotten.
    let refused = world
        .discord
        .send_command(42, USER, "zunda-reset", SEND_MESSAGES)
        .await;
    let reply = callback(&world, &refused).await;
    assert_eq!(reply.body["type"], 4);
    assert_eq!(reply.body["data"]["flags"], 64);
    assert!(
        content(&reply).contains("メッセージの管理"),
        "{}",
        content(&reply)
    );
    let second = world
        .discord
        .send_interaction(42, USER, "user", "まだ覚えてる？")
        .await;
    world.wait_delivered(&second, Duration::from_secs(30)).await;
    assert_eq!(
        last_history(&world).len(),
        1,
        "the refused reset forgot something"
    );

    // With it: reset in Zundamon's voice, and the next question has no history.
    let reset = world
        .discord
        .send_command(42, USER, "zunda-reset", MANAGE_MESSAGES)
        .await;
    assert_eq!(callback(&world, &reset).await.body["type"], 5);
    let edit = world.wait_delivered(&reset, Duration::from_secs(10)).await;
    assert!(
        content(&edit[0]).contains("リセットしたのだ"),
        "{}",
        content(&edit[0])
    );
    assert!(content(&edit[0]).contains("2件"));
    let third = world
        .discord
        .send_interaction(42, USER, "user", "はじめまして")
        .await;
    world.wait_delivered(&third, Duration::from_secs(30)).await;
    assert!(
        last_history(&world).is_empty(),
        "history after reset: {:?}",
        last_history(&world)
    );
    // Other channels keep theirs.
    let other = world
        .discord
        .send_interaction(43, USER, "user", "別の部屋")
        .await;
    world.wait_delivered(&other, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_reset_racing_a_question_takes_effect_after_it() {
    let world = World::start("reset-race", &[]).await;
    world.openai.set_delay(Duration::from_millis(800));
    let asked = world.send_until_asked(44, "考え中").await;
    let reset = world
        .discord
        .send_command(44, USER, "zunda-reset", MANAGE_MESSAGES)
        .await;
    let answer = world.wait_delivered(&asked, Duration::from_secs(30)).await;
    assert!(content(&answer[0]).starts_with("> 考え中\n"));
    let edit = world.wait_delivered(&reset, Duration::from_secs(10)).await;
    assert!(
        content(&edit[0]).contains("1件"),
        "the answered question was forgotten too"
    );
    world.openai.set_delay(Duration::ZERO);
    let next = world.discord.send_interaction(44, USER, "user", "次").await;
    world.wait_delivered(&next, Duration::from_secs(30)).await;
    assert!(last_history(&world).is_empty());
}

#[tokio::test]
async fn memory_shows_privately_what_the_channel_remembers_and_when_it_leaves_ram() {
    let world = World::start("memory", &[("ZUNDA_CHANNEL_IDLE_SECS", "600")]).await;
    let empty = world
        .discord
        .send_command(45, USER, "zunda-memory", SEND_MESSAGES)
        .await;
    let reply = callback(&world, &empty).await;
    assert_eq!(reply.body["data"]["flags"], 64);
    assert!(content(&reply).contains("0件"), "{}", content(&reply));
    for n in 0..2 {
        let sent = world
            .discord
            .send_interaction(45, USER, "user", &format!("質問{n}"))
            .await;
        world.wait_delivered(&sent, Duration::from_secs(30)).await;
    }
    let shown = world
        .discord
        .send_command(45, USER, "zunda-memory", SEND_MESSAGES)
        .await;
    let text = content(&callback(&world, &shown).await);
    assert!(
        text.contains("2件") && text.contains("最大5件") && text.contains("10分"),
        "{text}"
    );
}

/// Posts a signed channel memory command (`name`) for `sent` to the bot's `/interactions`,
/// returning the HTTP status and the response as JSON.
async fn post_control(
    world: &World,
    key: &ed25519_dalek::SigningKey,
    sent: &SentInteraction,
    name: &str,
    permissions: u64,
) -> (u16, serde_json::Value) {
    use support::http_load::{signed, unix_now};
    let mut payload =
        support::fake_discord::interaction_payload(sent.id, &sent.token, 46, USER, "member", "");
    payload["data"]["name"] = serde_json::json!(name);
    payload["data"]["options"] = serde_json::json!([]);
    payload["member"]["permissions"] = serde_json::json!(permissions.to_string());
    let body = payload.to_string();
    let (status, reply) = world
        .bot
        .post("/interactions", &signed(key, unix_now(), &body), body)
        .await;
    (status, serde_json::from_str(&reply).unwrap_or_default())
}

#[tokio::test]
async fn the_memory_commands_work_over_post_interactions_too() {
    use support::http_load::{public_key_hex, signing_key};
    let key = signing_key();
    let world = World::start(
        "control-http",
        &[("DISCORD_PUBLIC_KEY", &public_key_hex(&key))],
    )
    .await;
    let asked = world
        .discord
        .send_interaction(46, USER, "user", "覚えてね")
        .await;
    world.wait_delivered(&asked, Duration::from_secs(30)).await;

    // /zunda-memory: deferred only to the asker, then the count edited in.
    let memory = world.discord.register_acknowledged_interaction(46);
    let (status, reply) = post_control(&world, &key, &memory, "zunda-memory", SEND_MESSAGES).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["type"], 5, "{reply}");
    assert_eq!(reply["data"]["flags"], 64, "{reply}");
    let edit = world.wait_delivered(&memory, Duration::from_secs(10)).await;
    assert!(!edit.is_empty(), "no edit; log:\n{}", world.bot.logs());
    assert!(content(&edit[0]).contains("1件"), "{}", content(&edit[0]));

    // /zunda-reset without Manage Messages: refused in the response, nothing forgotten.
    let refused = world.discord.register_acknowledged_interaction(46);
    let (status, reply) = post_control(&world, &key, &refused, "zunda-reset", SEND_MESSAGES).await;
    assert_eq!((status, reply["type"].as_u64()), (200, Some(4)), "{reply}");
    assert_eq!(reply["data"]["flags"], 64);
    assert!(reply["data"]["content"]
        .as_str()
        .unwrap()
        .contains("メッセージの管理"));

    // With it: deferred in public, the channel forgotten, the same request again refused (409).
    let reset = world.discord.register_acknowledged_interaction(46);
    let (status, reply) = post_control(&world, &key, &reset, "zunda-reset", MANAGE_MESSAGES).await;
    assert_eq!((status, reply["type"].as_u64()), (200, Some(5)), "{reply}");
    assert_eq!(reply["data"]["flags"], 0);
    let edit = world.wait_delivered(&reset, Duration::from_secs(10)).await;
    assert!(!edit.is_empty(), "no edit; log:\n{}", world.bot.logs());
    let text = content(&edit[0]);
    assert!(
        text.contains("リセットしたのだ") && text.contains("1件"),
        "{text}"
    );
    let (status, _) = post_control(&world, &key, &reset, "zunda-reset", MANAGE_MESSAGES).await;
    assert_eq!(status, 409);
    let next = world
        .discord
        .send_interaction(46, USER, "user", "はじめまして")
        .await;
    world.wait_delivered(&next, Duration::from_secs(30)).await;
    assert!(
        last_history(&world).is_empty(),
        "history after reset: {:?}",
        last_history(&world)
    );
}

#[tokio::test]
async fn a_model_whose_template_opens_the_thought_shows_no_thought_once_recognised() {
    let world = World::start("think-implicit", &[("ZUNDA_STREAM_EDIT_MS", "250")]).await;
    world
        .openai
        .set_shape(support::fake_openai::Shape::StreamThinkImplicit);
    world.openai.set_stream_gap(Duration::from_millis(15));
    // The first answer teaches the bot that this model's text starts inside the thought.
    let first = world
        .discord
        .send_interaction(47, USER, "user", "最初の質問")
        .await;
    world.wait_final(&first).await;
    let shown = world.discord.shown(&first.token).concat();
    assert!(!shown.contains("SECRET"), "{shown}");
    // From then on no edit shows any of it: each is a status line or the answer so far.
    let second = world
        .discord
        .send_interaction(47, USER, "user", "二番目の質問")
        .await;
    world.wait_final(&second).await;
    let final_text = world.discord.shown(&second.token).concat();
    assert!(!final_text.contains("SECRET"), "{final_text}");
    let edits = original_edits(&world, &second);
    assert!(edits.len() >= 2, "{} edits", edits.len());
    for edit in &edits {
        let text = content(edit);
        assert!(
            final_text.starts_with(&text) || text.contains("考えているのだ"),
            "an edit showed something else than the answer so far: {text:?}"
        );
    }
    assert!(world
        .bot
        .logs()
        .contains("the model's chat template opens its thoughts"));
}

/// The successful edits of an interaction's original response, in order.
fn original_edits(world: &World, sent: &SentInteraction) -> Vec<RecordedRequest> {
    world
        .discord
        .requests()
        .into_iter()
        .filter(|r| r.is("PATCH", &format!("{}/messages/@original", sent.token)) && r.status < 300)
        .collect()
}

#[tokio::test]
async fn a_slowly_streamed_answer_is_shown_in_paced_edits_and_ends_as_the_full_answer() {
    let world = World::start("stream", &[("ZUNDA_STREAM_EDIT_MS", "400")]).await;
    // 300 characters, three per event, 30 ms apart: about 3 s of writing.
    let answer = "ずんだ餅は枝豆の餡をからめたお餅なのだ。".repeat(15);
    world.openai.script(
        "流れる答え",
        vec![support::fake_openai::Step::Answer(answer.clone())],
    );
    world.openai.set_stream_gap(Duration::from_millis(30));
    let sent = world
        .discord
        .send_interaction(50, USER, "user", "流れる答えをちょうだい")
        .await;
    world.wait_final(&sent).await;
    let edits = original_edits(&world, &sent);
    assert!(edits.len() >= 4, "{} edits", edits.len());
    let texts: Vec<String> = edits.iter().map(content).collect();
    for pair in texts.windows(2) {
        assert!(
            pair[1].chars().count() >= pair[0].chars().count(),
            "{pair:?}"
        );
    }
    // Paced: the live edits at least the interval apart (the final one may follow at once).
    for pair in edits[..edits.len() - 1].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(395), "edits {gap:?} apart");
    }
    let full = zundamon::discord::quote_answer("流れる答えをちょうだい", &answer);
    assert_eq!(world.discord.shown(&sent.token), [full]);
    assert!(world.bot.metric("zundamon_stream_edits_count").await >= Some(1.0));
}

#[tokio::test]
async fn the_search_status_shows_then_the_answer_cites_only_urls_the_search_returned() {
    use support::fake_openai::Step;
    let world = World::start("sources", &[("ZUNDA_STREAM_EDIT_MS", "250")]).await;
    world.search.set_delay(Duration::from_millis(700));
    world.openai.set_stream_gap(Duration::from_millis(10));
    world.openai.script(
        "ずんだ餅の由来",
        vec![
            Step::ToolCalls(vec!["ずんだ餅 由来".into()]),
            Step::Answer(
                "伊達政宗ゆかりのお餅なのだ。詳しくは https://invented.example/zunda を見るのだ。\n\n参考: <https://invented.example/>"
                    .into(),
            ),
        ],
    );
    let sent = world
        .discord
        .send_interaction(51, USER, "user", "ずんだ餅の由来は？")
        .await;
    world.wait_final(&sent).await;
    let texts: Vec<String> = original_edits(&world, &sent).iter().map(content).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.ends_with("🔍『ずんだ餅 由来』を調べているのだ…")),
        "no search status among {texts:#?}"
    );
    let shown = world.discord.shown(&sent.token).concat();
    assert!(
        !shown.contains("調べているのだ…"),
        "the status stayed: {shown}"
    );
    let last = shown.lines().last().unwrap();
    assert!(last.starts_with("参考: <"), "{shown}");
    let returned: Vec<String> =
        zundamon::agent::search::parse_results(include_str!("fixtures/ddg_results.html"), 10)
            .into_iter()
            .map(|r| r.url)
            .collect();
    let cited: Vec<&str> = last
        .split_whitespace()
        .skip(1)
        .map(|link| link.trim_start_matches('<').trim_end_matches('>'))
        .collect();
    assert!(!cited.is_empty() && cited.len() <= 3, "{last}");
    for url in &cited {
        assert!(
            returned.iter().any(|r| r == url),
            "{url} was not returned by the search"
        );
    }
    assert_eq!(
        shown.matches("参考:").count(),
        1,
        "the model's own line stayed: {shown}"
    );
    // The window keeps the answer without the sources line.
    let next = world
        .discord
        .send_interaction(51, USER, "user", "ありがとう")
        .await;
    world.wait_final(&next).await;
    let request = world.openai.requests().pop().unwrap().to_string();
    assert!(
        request.contains("伊達政宗ゆかり") && !request.contains("参考:"),
        "{request}"
    );
}

#[tokio::test]
async fn an_answer_without_zundamons_voice_is_rewritten_once() {
    use support::fake_openai::Step;
    let world = World::start("guard", &[]).await;
    world.openai.script(
        "口調テスト",
        vec![Step::Answer("これは丁寧な答えです。".into())],
    );
    world.openai.script(
        "書き直して",
        vec![Step::Answer("これはずんだもんの答えなのだ。".into())],
    );
    let sent = world
        .discord
        .send_interaction(52, USER, "user", "口調テスト")
        .await;
    world.wait_final(&sent).await;
    let shown = world.discord.shown(&sent.token).concat();
    assert!(shown.ends_with("これはずんだもんの答えなのだ。"), "{shown}");
    assert_eq!(
        world.openai.requests().len(),
        2,
        "asked once, rewritten once"
    );
    assert_eq!(
        world.bot.metric("zundamon_persona_rewrites_total").await,
        Some(1.0)
    );
    // An answer in her voice is left alone.
    let fine = world
        .discord
        .send_interaction(52, USER, "user", "普通の質問")
        .await;
    world.wait_final(&fine).await;
    assert_eq!(world.openai.requests().len(), 3);
}

#[tokio::test]
async fn the_persona_guard_can_be_turned_off() {
    use support::fake_openai::Step;
    let world = World::start("guard-off", &[("ZUNDA_PERSONA_GUARD", "false")]).await;
    world.openai.script(
        "口調テスト",
        vec![Step::Answer("これは丁寧な答えです。".into())],
    );
    let sent = world
        .discord
        .send_interaction(53, USER, "user", "口調テスト")
        .await;
    world.wait_final(&sent).await;
    assert!(world
        .discord
        .shown(&sent.token)
        .concat()
        .ends_with("これは丁寧な答えです。"));
    assert_eq!(world.openai.requests().len(), 1);
}

#[tokio::test]
async fn an_answer_to_a_command_over_post_interactions_streams_the_same_way() {
    use support::http_load::{public_key_hex, signed, signing_key, unix_now};
    let key = signing_key();
    let world = World::start(
        "stream-http",
        &[
            ("DISCORD_PUBLIC_KEY", &public_key_hex(&key)),
            ("ZUNDA_STREAM_EDIT_MS", "300"),
        ],
    )
    .await;
    let answer = "HTTPでも少しずつ見えるのだ。".repeat(12);
    world.openai.script(
        "HTTPの質問",
        vec![support::fake_openai::Step::Answer(answer.clone())],
    );
    world.openai.set_stream_gap(Duration::from_millis(25));
    // Discord itself takes the HTTP response as the acknowledgement.
    let sent = world.discord.register_acknowledged_interaction(54);
    let body = support::fake_discord::interaction_payload(
        sent.id,
        &sent.token,
        54,
        USER,
        "user",
        "HTTPの質問なのだ",
    )
    .to_string();
    let (status, reply) = world
        .bot
        .post("/interactions", &signed(&key, unix_now(), &body), body)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("ちょっと待ってね。"), "{reply}");
    world.wait_final(&sent).await;
    let edits = original_edits(&world, &sent);
    assert!(edits.len() >= 3, "{} edits", edits.len());
    let full = zundamon::discord::quote_answer("HTTPの質問なのだ", &answer);
    assert_eq!(world.discord.shown(&sent.token), [full]);
}
