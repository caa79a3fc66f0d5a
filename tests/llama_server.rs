//! The bot against a model server that behaves like llama-cpp-python's OpenAI-compatible server
//! (0.3.x), through the fake's [`LlamaCpp`] quirks: a tool round needs `content` on the tool-call
//! message and `tool_choice` on the request, and cannot be streamed; answers stop at
//! `max_tokens`; a prompt past the context is refused with `context_length_exceeded`. Also the
//! persona rewrite seen from Discord, and `check-model` against such a server.
//!
//! `against_a_real_server` (ignored) runs the same checks against a real server at
//! `ZUNDA_TEST_REAL_MODEL_URL` (see the README's recipe for a local llama.cpp server).

mod support;

use std::time::{Duration, Instant};

use support::bot::run_once_blocking;
use support::fake_openai::{FakeOpenAi, LlamaCpp, Step, TOOL_ANSWER_PREFIX};
use support::world::{content, World, USER};

const ERROR_REPLY: &str = "問題が生じたのだ。また、後で質問してほしいのだ。";
const CUT_NOTE: &str = "⚠️ 答えが長くなりすぎて、途中で切れてしまったのだ。";
const REWRITING: &str = "✏️ ずんだもんの言葉で書き直しているのだ…";

/// Waits until `count` answers are stored (the window is written after delivery).
async fn wait_stored(world: &World, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answers = world.stored_answers();
        if answers.len() >= count || Instant::now() > deadline {
            return answers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tool_round_works_on_a_llama_cpp_like_server_and_streaming_is_dropped_for_it() {
    let world = World::start("llama-tools", &[]).await;
    world.openai.set_llama_cpp(LlamaCpp::all(0));
    world.openai.script(
        "仙台の天気",
        vec![
            Step::ToolCalls(vec!["仙台 天気".into()]),
            Step::DefaultAnswer,
        ],
    );
    let reply = world.ask(40_001, "仙台の天気は？").await;
    assert!(
        reply.contains(TOOL_ANSWER_PREFIX),
        "{reply}\nlog:\n{}",
        world.bot.logs()
    );
    assert_eq!(world.search.request_count(), 1, "the model searched once");

    let requests = world.openai.requests();
    // Streamed with tools → empty 200; the same round unstreamed → the call; the answer.
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for request in &requests[..2] {
        assert_eq!(request["tool_choice"], "auto", "{request}");
        assert!(request["tools"].is_array());
    }
    assert_eq!(requests[0]["stream"], true);
    assert_ne!(requests[1]["stream"], true);
    let messages = requests[2]["messages"].as_array().unwrap();
    let call_message = messages
        .iter()
        .find(|m| m.get("tool_calls").is_some())
        .expect("the tool-call message is sent back");
    assert_eq!(call_message["content"], "", "content is an empty string");
    for request in &requests {
        assert_eq!(request["max_tokens"], 1024, "the default answer limit");
    }

    // Remembered: the next question's first round (with tools) is not streamed.
    let reply = world.ask(40_002, "ずんだ餅とは？").await;
    assert!(
        reply.ends_with("「ずんだ餅とは？」の答えなのだ。"),
        "{reply}"
    );
    let requests = world.openai.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert!(requests[3]["tools"].is_array());
    assert_ne!(requests[3]["stream"], true);
    let logs = world.bot.logs();
    assert_eq!(
        logs.matches("cannot stream a request with tools").count(),
        1,
        "{logs}"
    );
    assert!(!logs.contains("HTTP 500"), "{logs}");
}

#[tokio::test]
async fn an_answer_cut_at_the_token_limit_says_so_and_is_counted() {
    let world = World::start("llama-cut", &[("ZUNDA_MAX_ANSWER_TOKENS", "40")]).await;
    world.openai.set_llama_cpp(LlamaCpp::all(0));
    let long = "ずんだ餅は枝豆をすりつぶした餡をお餅にからめた宮城県の郷土菓子なのだ。".repeat(4);
    world
        .openai
        .script("長い答え", vec![Step::Answer(long.clone())]);
    let reply = world.ask(41_001, "長い答えをください").await;
    let first_40: String = long.chars().take(40).collect();
    assert!(reply.contains(&first_40), "{reply}");
    assert!(!reply.contains(&long), "the answer was cut: {reply}");
    assert!(reply.trim_end().ends_with("聞いてほしいのだ。"), "{reply}");
    assert!(reply.contains(CUT_NOTE), "{reply}");
    assert_eq!(world.openai.requests()[0]["max_tokens"], 40);
    assert_eq!(
        world.bot.metric("zundamon_answers_cut_total").await,
        Some(1.0)
    );
    assert!(
        world.bot.logs().contains("cut at the token limit"),
        "{}",
        world.bot.logs()
    );
    // The channel remembers the answer, not the note.
    let stored = wait_stored(&world, 1).await;
    assert_eq!(stored, vec![first_40]);

    // An answer within the limit has no note.
    let reply = world.ask(41_002, "短く").await;
    assert!(!reply.contains(CUT_NOTE), "{reply}");
    assert_eq!(
        world.bot.metric("zundamon_answers_cut_total").await,
        Some(1.0)
    );
}

/// The prompt tokens of a request as the fake counts them (characters of every message).
fn prompt_chars(body: &serde_json::Value) -> usize {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            support::fake_openai::content_text(&m["content"])
                .chars()
                .count()
        })
        .sum()
}

#[tokio::test]
async fn a_context_overflow_drops_the_oldest_exchanges_and_the_channel_never_sticks() {
    let world = World::start(
        "llama-context",
        &[
            ("ZUNDA_MAX_ANSWER_TOKENS", "100"),
            ("ZUNDA_MAX_QUESTION_CHARS", "6000"),
        ],
    )
    .await;
    // Measure the prompt of a question alone, then give the fake a context that holds it and
    // about two exchanges.
    world
        .openai
        .script("最初", vec![Step::Answer("はじめましてなのだ。".into())]);
    assert!(world
        .ask(42_000, "最初")
        .await
        .ends_with("はじめましてなのだ。"));
    let alone = prompt_chars(&world.openai.requests()[0]);
    let answer = "ずんだ".repeat(100) + "なのだ。";
    let exchange = answer.chars().count() + 10;
    let context = alone + 100 + 2 * exchange + exchange / 2;
    // Answers longer than max_tokens here, so that the window fills quickly.
    world.openai.set_llama_cpp(LlamaCpp {
        honours_max_tokens: false,
        ..LlamaCpp::all(context)
    });

    let channel = 42_001;
    for n in 0..5 {
        let question = format!("長い話{n}");
        world
            .openai
            .script(&question, vec![Step::Answer(answer.clone())]);
        let reply = world.ask(channel, &question).await;
        assert!(
            reply.ends_with(&answer),
            "question {n}: {reply}\nlog:\n{}",
            world.bot.logs()
        );
    }
    let trims = world
        .bot
        .metric("zundamon_context_trims_total")
        .await
        .unwrap_or(0.0);
    assert!(trims >= 2.0, "trims: {trims}\n{}", world.bot.logs());
    // Every request that reached the model fitted; a refused one was followed by a shorter one.
    let requests = world.openai.requests();
    let refused: Vec<usize> = (1..requests.len())
        .filter(|&i| prompt_chars(&requests[i]) + 100 > context)
        .collect();
    assert!(!refused.is_empty(), "no request overflowed");
    for &i in &refused {
        assert!(prompt_chars(&requests[i + 1]) < prompt_chars(&requests[i]));
    }
    // Questions 3 and 4 overflowed (4 twice: two exchanges had to go).
    assert_eq!(refused.len(), 3, "context {context}");
    // The stored window is untouched by the trimming (the store keeps the last five).
    assert_eq!(wait_stored(&world, 6).await.len(), 6);
    assert!(world
        .bot
        .logs()
        .contains("does not fit the model's context"));

    // A question that cannot fit even alone gets the error reply, logged as such, and the
    // channel answers the next one.
    let huge = "とても長い質問".repeat(context / 7 + 1);
    let reply = world.ask(channel, &huge).await;
    assert!(reply.ends_with(ERROR_REPLY), "{}", reply.chars().count());
    let logs = world.bot.logs();
    assert!(
        logs.contains("even the question alone does not fit"),
        "{logs}"
    );
    assert!(logs.contains("error reply delivered"), "{logs}");
    world
        .openai
        .script("まだ大丈夫", vec![Step::Answer("大丈夫なのだ。".into())]);
    assert!(world
        .ask(channel, "まだ大丈夫？")
        .await
        .ends_with("大丈夫なのだ。"));
}

#[tokio::test]
async fn a_prompt_that_fits_without_the_full_answer_allowance_gets_a_smaller_one() {
    let world = World::start("llama-room", &[]).await;
    world
        .openai
        .script("測る", vec![Step::Answer("測ったのだ。".into())]);
    world.ask(43_000, "測る").await;
    let alone = prompt_chars(&world.openai.requests()[0]);
    // The question fits with ~500 tokens to spare, not with the default 1024.
    world.openai.set_llama_cpp(LlamaCpp::all(alone + 500));
    world
        .openai
        .script("余裕", vec![Step::Answer("余裕の答えなのだ。".into())]);
    let reply = world.ask(43_001, "余裕").await;
    assert!(reply.ends_with("余裕の答えなのだ。"), "{reply}");
    let requests = world.openai.requests();
    assert_eq!(requests[1]["max_tokens"], 1024);
    let lowered = requests[2]["max_tokens"].as_u64().unwrap();
    assert!((256..500).contains(&lowered), "{lowered}");
    assert_eq!(
        world.bot.metric("zundamon_context_trims_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_persona_rewrite_keeps_the_answer_on_screen_and_a_failed_one_costs_nothing() {
    let world = World::start("rewrite-live", &[("ZUNDA_STREAM_EDIT_MS", "250")]).await;
    world.openai.script(
        "書き直しの質問",
        vec![Step::Answer("ずんだ餅は宮城の郷土菓子です。".into())],
    );
    world.openai.script(
        "ずんだ餅は宮城の郷土菓子です。",
        vec![Step::Delay(
            Duration::from_millis(1500),
            Box::new(Step::Answer("ずんだ餅は宮城の郷土菓子なのだ。".into())),
        )],
    );
    let sent = world
        .discord
        .send_interaction(44_001, USER, "ずんだユーザー", "書き直しの質問")
        .await;
    world.wait_final(&sent).await;
    let shown = world.discord.shown(&sent.token).concat();
    assert!(
        shown.ends_with("ずんだ餅は宮城の郷土菓子なのだ。"),
        "{shown}"
    );
    let edits: Vec<String> = world.deliveries(&sent).iter().map(content).collect();
    let during: Vec<&String> = edits.iter().filter(|e| e.contains(REWRITING)).collect();
    assert!(
        !during.is_empty(),
        "the rewrite was never shown: {edits:#?}"
    );
    for edit in during {
        assert!(
            edit.contains("ずんだ餅は宮城の郷土菓子です。"),
            "the answer must stay visible during the rewrite: {edit}"
        );
        assert!(edit.trim_end().ends_with(REWRITING), "{edit}");
    }

    // A failed rewrite delivers the original.
    world.openai.script(
        "失敗する書き直し",
        vec![Step::Answer("枝豆はおいしいです。".into())],
    );
    world
        .openai
        .script("枝豆はおいしいです。", vec![Step::Status(400)]);
    let reply = world.ask(44_002, "失敗する書き直し").await;
    assert!(reply.ends_with("枝豆はおいしいです。"), "{reply}");
    assert!(!reply.contains(REWRITING), "{reply}");
}

#[tokio::test]
async fn a_rewrite_that_would_not_fit_is_skipped() {
    let world = World::start("rewrite-skip", &[("ZUNDA_MAX_ANSWER_TOKENS", "300")]).await;
    // Longer than the question's whole prompt and the allowance it fitted in: the rewrite
    // (persona, instruction and this answer) could not fit where the question barely did.
    let long = "ずんだ餅は宮城の郷土菓子です。".repeat(120);
    world
        .openai
        .script("長すぎる答え", vec![Step::Answer(long.clone())]);
    let reply = world.ask(45_001, "長すぎる答え").await;
    assert!(reply.contains("郷土菓子です。"), "{reply}");
    assert_eq!(world.openai.request_count(), 1, "no rewrite was asked for");
    let logs = world.bot.logs();
    assert!(logs.contains("a rewrite would not fit"), "{logs}");
}

/// Runs `zundamon check-model` against `base_url`.
async fn check_model(base_url: String, model: &str) -> (i32, String, String) {
    let env: Vec<(String, String)> = vec![
        ("OPENAI_API_KEY".into(), "no-key".into()),
        ("OPENAI_BASE_URL".into(), base_url),
        ("OPENAI_MODEL".into(), model.into()),
        ("ZUNDA_LLM_CONNECT_TIMEOUT_SECS".into(), "2".into()),
        ("ZUNDA_LLM_REQUEST_TIMEOUT_SECS".into(), "120".into()),
    ];
    run_once_blocking(&["check-model"], env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_model_tells_a_llama_cpp_like_server_as_it_is() {
    let openai = FakeOpenAi::start().await;
    openai.set_llama_cpp(LlamaCpp::all(0));
    openai.set_listed_models(&["smollm2"]);
    openai.set_props_context(2048);
    openai.script(
        "web_search",
        vec![Step::ToolCalls(vec!["仙台 天気".into()])],
    );
    let (code, stdout, stderr) = check_model(openai.base_url(), "gpt-4o-mini").await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for line in [
        "model:      not listed by the server (it lists: smollm2)",
        "model name: WARNING: the server also answers for a made-up model name",
        "context:    2048 tokens (n_ctx from /props)",
        "usage:      reported",
        "max_tokens: honoured",
        "tools:      supported (the model called web_search, tool_choice \"auto\")",
        "tool round: ok",
        "streamed tools: not supported (chat model at",
        "streaming:  supported",
        "OK: the bot can answer",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }

    // A model that answers instead of searching, but searches when told to.
    let openai = FakeOpenAi::start().await;
    openai.set_llama_cpp(LlamaCpp::all(0));
    openai.script(
        "web_search",
        vec![
            Step::Answer("晴れなのだ。".into()),
            Step::ToolCalls(vec!["仙台 天気".into()]),
        ],
    );
    let (code, stdout, _) = check_model(openai.base_url(), "m").await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("with tool_choice \"auto\" the model chose not to search"),
        "{stdout}"
    );
    assert!(stdout.contains("context:    not stated"), "{stdout}");

    // A server that never passes the tools on.
    let openai = FakeOpenAi::start().await;
    openai.set_llama_cpp(LlamaCpp {
        ignores_tools: true,
        ..LlamaCpp::default()
    });
    openai.script(
        "web_search",
        vec![
            Step::ToolCalls(vec!["a".into()]),
            Step::ToolCalls(vec!["b".into()]),
        ],
    );
    let (code, stdout, _) = check_model(openai.base_url(), "m").await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("tools:      IGNORED by the server"),
        "{stdout}"
    );
    assert!(
        stdout.contains("model:      found (listed by the server)")
            || stdout.contains("not listed"),
        "{stdout}"
    );
}

/// Sends `question` to `channel` and waits (up to `timeout`) for its final reply.
async fn ask_slowly(world: &World, channel: u64, question: &str, timeout: Duration) -> String {
    let sent = world
        .discord
        .send_interaction(channel, USER, "ずんだユーザー", question)
        .await;
    let marker = format!("interaction_id={}", sent.id);
    let deadline = Instant::now() + timeout;
    while !world.bot.logs().lines().any(|line| {
        line.contains(&marker)
            && (line.contains("answer delivered") || line.contains("error reply delivered"))
    }) {
        assert!(Instant::now() < deadline, "no reply to {question:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.discord.shown(&sent.token).concat()
}

/// The same checks against a real OpenAI-compatible server: `ZUNDA_TEST_REAL_MODEL_URL` (its
/// `/v1` base) and optionally `ZUNDA_TEST_REAL_MODEL_NAME`. Search goes to the in-repo fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real model server: set ZUNDA_TEST_REAL_MODEL_URL"]
async fn against_a_real_server() {
    let Ok(url) = std::env::var("ZUNDA_TEST_REAL_MODEL_URL") else {
        println!("skipped: ZUNDA_TEST_REAL_MODEL_URL is not set (e.g. http://127.0.0.1:8000/v1)");
        return;
    };
    let model = std::env::var("ZUNDA_TEST_REAL_MODEL_NAME").unwrap_or_else(|_| "local".into());
    let (code, stdout, stderr) = check_model(url.clone(), &model).await;
    println!("check-model (exit {code}):\n{stdout}{stderr}");
    assert_eq!(code, 0, "check-model failed");

    let world = World::start(
        "real-model",
        &[
            ("OPENAI_BASE_URL", url.as_str()),
            ("OPENAI_MODEL", model.as_str()),
            ("ZUNDA_MAX_ANSWER_TOKENS", "200"),
            ("ZUNDA_LLM_REQUEST_TIMEOUT_SECS", "170"),
            ("ZUNDA_ANSWER_TIMEOUT_SECS", "170"),
        ],
    )
    .await;
    let wait = Duration::from_secs(180);
    let mut replies = Vec::new();
    for question in [
        "今日の仙台の天気をweb_searchで調べて教えて。",
        "ずんだ餅ってなに？",
    ] {
        let started = Instant::now();
        let reply = ask_slowly(&world, 46_000 + replies.len() as u64, question, wait).await;
        println!("{question} ({:?}):\n{reply}\n", started.elapsed());
        replies.push(reply);
    }
    // One channel until its window passes the context: it must keep answering.
    let channel = 46_100;
    let mut last = String::new();
    for n in 0..8 {
        let question =
            format!("{n}番目の質問なのだ。ずんだ餅の歴史をできるだけ詳しく、長く教えて。");
        let started = Instant::now();
        last = ask_slowly(&world, channel, &question, wait).await;
        let shown: String = last.chars().take(160).collect();
        println!(
            "channel question {n} ({:?}): {} chars, error reply: {}\n{shown}…\n",
            started.elapsed(),
            last.chars().count(),
            last.ends_with(ERROR_REPLY)
        );
    }
    let metrics = [
        "zundamon_answers_cut_total",
        "zundamon_context_trims_total",
        "zundamon_persona_rewrites_total",
        "zundamon_search_requests_total{outcome=\"ok\"}",
    ];
    for name in metrics {
        println!("{name} {:?}", world.bot.metric(name).await);
    }
    let logs = world.bot.logs();
    for event in [
        "cannot stream a request with tools",
        "asking for a shorter answer",
        "asking again without the oldest part",
        "even the question alone does not fit",
        "a rewrite would not fit",
        "the answer lacked Zundamon's voice: rewritten",
        "the rewrite still lacks Zundamon's voice",
        "cannot rewrite the answer",
        "the answer was cut at the token limit",
        "error reply delivered",
        "answer delivered",
    ] {
        println!("log {event:?}: {}", logs.matches(event).count());
    }
    assert!(
        !logs.contains("no attribute 'content'"),
        "a tool round failed on content:\n{logs}"
    );
    assert!(
        !last.ends_with(ERROR_REPLY),
        "the channel got stuck:\n{logs}"
    );
    for reply in &replies {
        assert!(!reply.ends_with(ERROR_REPLY), "{reply}\n{logs}");
    }
}
