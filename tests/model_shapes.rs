//! The bot against model servers that answer the way real OpenAI-compatible servers do, not the
//! way OpenAI's schema says: the fake model server's shape knob, reasoning models, servers without
//! tool support, absurd `Retry-After` values, and `zundamon check-model`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::bot::{run_once_blocking, API_KEY};
use support::fake_openai::{FakeOpenAi, Shape, Step, THOUGHT, TOOL_ANSWER_PREFIX};
use support::world::World;

const ERROR_REPLY: &str = "問題が生じたのだ。また、後で質問してほしいのだ。";
/// What a shape should lead to.
enum Expect {
    /// The reply ends with this text.
    Answer(&'static str),
    /// The reply ends with an answer to a search result.
    SearchedAnswer,
    /// The error message, and the log says this.
    Error(&'static str),
}

#[tokio::test]
async fn real_server_shapes_are_answered_and_reasoning_never_shows() {
    // Answers shown when complete, so each request carries its shape as the server wrote it (the
    // fake answers a stream request in plain stream form); the stream shapes are served as
    // streams either way, and the client reads a stream it did not ask for.
    let world = World::start("shapes", &[("ZUNDA_STREAM", "false")]).await;
    // (shape, the model calls web_search first, expectation)
    let table: Vec<(Shape, bool, Expect)> = vec![
        (Shape::Standard, false, Expect::Answer("標準の答えなのだ。")),
        (
            Shape::MissingIds,
            false,
            Expect::Answer("idなしの答えなのだ。"),
        ),
        (
            Shape::NoRole,
            false,
            Expect::Answer("roleなしの答えなのだ。"),
        ),
        (Shape::ToolCallWithoutType, true, Expect::SearchedAnswer),
        (
            Shape::FinishEmpty,
            false,
            Expect::Answer("空のfinishなのだ。"),
        ),
        (
            Shape::FinishEosToken,
            false,
            Expect::Answer("eos_tokenなのだ。"),
        ),
        (Shape::FinishEosToken, true, Expect::SearchedAnswer),
        (Shape::NoUsage, false, Expect::Answer("usageなしなのだ。")),
        (
            Shape::ExtraFields,
            false,
            Expect::Answer("余計な項目つきなのだ。"),
        ),
        (Shape::ExtraFields, true, Expect::SearchedAnswer),
        (
            Shape::NullContentWithToolCalls,
            true,
            Expect::SearchedAnswer,
        ),
        (
            Shape::ContentParts,
            false,
            Expect::Answer("部品に分かれた答えなのだ。"),
        ),
        (
            Shape::ThinkTags,
            false,
            Expect::Answer("考えた末の答えなのだ。"),
        ),
        (Shape::ThinkTags, true, Expect::SearchedAnswer),
        (
            Shape::ReasoningContent,
            false,
            Expect::Answer("理由つきの答えなのだ。"),
        ),
        (
            Shape::Stream,
            false,
            Expect::Answer("流れてきた答えなのだ。"),
        ),
        (Shape::Stream, true, Expect::SearchedAnswer),
        (
            Shape::StreamEmptyChoices,
            false,
            Expect::Answer("空のchoicesの後の答えなのだ。"),
        ),
        (
            Shape::StreamKeepAlive,
            false,
            Expect::Answer("keep-aliveの間の答えなのだ。"),
        ),
        (
            Shape::StreamNoDone,
            false,
            Expect::Answer("DONEなしの答えなのだ。"),
        ),
        (
            Shape::StreamThink,
            false,
            Expect::Answer("流れる考えの後の答えなのだ。"),
        ),
        (
            Shape::NoChoices,
            false,
            Expect::Error("the response has no choices"),
        ),
        (
            Shape::EmptyMessage,
            false,
            Expect::Error("no text and no tool call"),
        ),
        (Shape::OnlyThinking, false, Expect::Error("only reasoning")),
    ];
    for (n, (shape, searches, expect)) in table.iter().enumerate() {
        let question = format!("形{n}の質問 {shape:?}");
        let answer = match expect {
            Expect::Answer(text) => text.to_string(),
            _ => "使われない答えなのだ。".to_string(),
        };
        let mut steps = Vec::new();
        if *searches {
            steps.push(Step::Shaped(
                *shape,
                Box::new(Step::ToolCalls(vec![format!("検索{n}")])),
            ));
        }
        if matches!(expect, Expect::SearchedAnswer) {
            // The default answer to a tool result: TOOL_ANSWER_PREFIX + the result.
            steps.push(Step::Shaped(*shape, Box::new(Step::DefaultAnswer)));
        } else {
            steps.push(Step::Shaped(*shape, Box::new(Step::Answer(answer))));
        }
        world.openai.script(&question, steps);
        let channel = 10_000 + n as u64;
        let reply = world.ask(channel, &question).await;
        let case = format!("{shape:?} (search: {searches})");
        match expect {
            Expect::Answer(text) => assert!(
                reply.ends_with(text),
                "{case}: {reply:?}\nlog:\n{}",
                world.bot.logs()
            ),
            Expect::SearchedAnswer => {
                assert!(reply.contains(TOOL_ANSWER_PREFIX), "{case}: {reply:?}");
            }
            Expect::Error(why) => {
                assert_eq!(reply, ERROR_REPLY, "{case}");
                let logs = world.bot.logs();
                assert!(
                    logs.contains(why),
                    "{case}: the log should say {why:?}:\n{logs}"
                );
            }
        }
        assert!(!reply.contains(THOUGHT), "{case}: {reply:?}");
        assert!(!reply.contains("<think>"), "{case}: {reply:?}");
    }
    // The searched shapes really searched.
    assert_eq!(
        world.search.request_count(),
        table.iter().filter(|(_, searches, _)| *searches).count()
    );

    // No thought reached Discord, in any message.
    for request in world.discord.requests() {
        let body = request.body.to_string();
        assert!(!body.contains("SECRET-THOUGHT"), "{}: {body}", request.path);
    }
    // Nor the store, while the answers around it were stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answers = loop {
        let answers = world.stored_answers();
        let answered = table
            .iter()
            .filter(|(_, _, e)| !matches!(e, Expect::Error(_)))
            .count();
        if answers.len() >= answered || Instant::now() > deadline {
            break answers;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        answers.iter().any(|a| a == "考えた末の答えなのだ。"),
        "{answers:#?}"
    );
    assert!(
        answers.iter().any(|a| a == "流れる考えの後の答えなのだ。"),
        "{answers:#?}"
    );
    for answer in &answers {
        assert!(
            !answer.contains("SECRET-THOUGHT") && !answer.contains("think>"),
            "{answer}"
        );
    }
    // ThinkTags (twice), ReasoningContent and StreamThink had reasoning.
    assert_eq!(
        world.bot.metric("zundamon_reasoning_answers_total").await,
        Some(4.0)
    );
    world.bot.assert_no_secrets_logged();
}

#[tokio::test]
async fn a_server_that_rejects_tools_still_answers_and_is_remembered() {
    let world = World::start("no-tools", &[]).await;
    world.openai.set_rejects_tools(true);
    let first = world.ask(20_001, "道具なしで一つ目").await;
    assert!(
        first.ends_with("「道具なしで一つ目」の答えなのだ。"),
        "{first}"
    );
    let second = world.ask(20_002, "道具なしで二つ目").await;
    assert!(
        second.ends_with("「道具なしで二つ目」の答えなのだ。"),
        "{second}"
    );

    let requests = world.openai.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert!(requests[0].get("tools").is_some());
    assert!(requests[1].get("tools").is_none());
    // Remembered: the second question went without tools at once.
    assert!(requests[2].get("tools").is_none());
    let logs = world.bot.logs();
    assert!(logs.contains("rejected tools"), "{logs}");
    assert_eq!(logs.matches("rejected tools").count(), 1, "{logs}");
}

#[tokio::test]
async fn absurd_retry_after_values_never_panic() {
    let world = World::start("retry-after", &[("ZUNDA_ANSWER_TIMEOUT_SECS", "30")]).await;
    world
        .openai
        .script("巨大な待ち", vec![Step::RetryAfterRaw("1e20".into())]);
    let started = Instant::now();
    assert_eq!(world.ask(30_001, "巨大な待ち").await, ERROR_REPLY);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the error came after {:?}",
        started.elapsed()
    );
    // Nonsense values are ignored: the normal backoff applies and the retry answers.
    for (n, value) in ["-1", "NaN", "inf", "soon"].into_iter().enumerate() {
        let question = format!("変な待ち{n}");
        world.openai.script(
            &question,
            vec![
                Step::RetryAfterRaw(value.into()),
                Step::Answer("待ったのだ。".into()),
            ],
        );
        let reply = world.ask(30_010 + n as u64, &question).await;
        assert!(reply.ends_with("待ったのだ。"), "{value}: {reply}");
    }
    let logs = world.bot.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(logs.contains("429"), "the log names the status:\n{logs}");
    // Still serving.
    assert!(world
        .ask(30_001, "まだ大丈夫？")
        .await
        .ends_with("「まだ大丈夫？」の答えなのだ。"));
}

/// Runs `zundamon check-model` against `base_url` with `key` and `model`.
async fn check_model(
    base_url: String,
    key: &str,
    model: &str,
    extra: &[(&str, &str)],
) -> (i32, String, String) {
    let mut env: Vec<(String, String)> = vec![
        ("OPENAI_API_KEY".into(), key.into()),
        ("OPENAI_BASE_URL".into(), base_url),
        ("OPENAI_MODEL".into(), model.into()),
        ("ZUNDA_LLM_CONNECT_TIMEOUT_SECS".into(), "2".into()),
        ("ZUNDA_LLM_REQUEST_TIMEOUT_SECS".into(), "5".into()),
    ];
    for (k, v) in extra {
        env.push(((*k).into(), (*v).into()));
    }
    run_once_blocking(&["check-model"], env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_model_passes_against_a_working_server() {
    let openai = FakeOpenAi::start().await;
    openai.set_api_key(API_KEY);
    openai.set_models(&["good-model"]);
    openai.script(
        "web_search",
        vec![Step::ToolCalls(vec!["仙台 天気".into()])],
    );
    let (code, stdout, stderr) = check_model(openai.base_url(), API_KEY, "good-model", &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for line in [
        "reachable:  yes",
        "auth:       ok",
        "model:      found",
        "tools:      supported",
        "streaming:  supported",
        "reasoning:  none seen",
        "OK: the bot can answer",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    assert!(stdout.contains(" ms)"), "latency is shown:\n{stdout}");
    assert!(!stdout.contains(API_KEY) && !stderr.contains(API_KEY));
    for line in [
        "model:      found (listed by the server)",
        "model name: checked (a made-up name is refused)",
        "usage:      reported",
        "tool round: ok",
        "streamed tools: accepted, but the model answered without calling",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    let requests = openai.requests();
    // Plain, made-up model name, max_tokens, tools, the tool round, streamed tools, an image,
    // streaming.
    assert_eq!(requests.len(), 8, "{requests:#?}");
    assert!(requests[1]["model"]
        .as_str()
        .unwrap()
        .starts_with("zundamon-check-no-such-model"));
    assert!(requests[3]["tools"].is_array());
    assert_eq!(requests[3]["tool_choice"], "auto");
    assert_eq!(requests[4]["messages"][2]["content"], "");
    assert_eq!(requests[5]["stream"], true);
    assert!(requests[5]["tools"].is_array());
    let image = requests[6]["messages"][0]["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        image.starts_with("data:image/png;base64,"),
        "{}",
        requests[6]
    );
    assert!(
        stdout.contains("images:     accepted, but ZUNDA_VISION is false"),
        "{stdout}"
    );
    assert_eq!(requests[7]["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_model_reports_tools_and_reasoning() {
    let openai = FakeOpenAi::start().await;
    openai.set_rejects_tools(true);
    openai.set_shape(Shape::ThinkTags);
    let (code, stdout, stderr) = check_model(openai.base_url(), "ollama", "qwen3", &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("tools:      not supported"), "{stdout}");
    assert!(stdout.contains("without web search"), "{stdout}");
    assert!(stdout.contains("reasoning:  seen"), "{stdout}");
    assert!(!stdout.contains("SECRET-THOUGHT"), "{stdout}");

    // With ZUNDA_TOOLS=on a server without tools cannot serve the bot.
    let (code, stdout, _) = check_model(
        openai.base_url(),
        "ollama",
        "qwen3",
        &[("ZUNDA_TOOLS", "on")],
    )
    .await;
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.contains("ZUNDA_TOOLS=on"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_model_fails_with_the_reason() {
    let openai = FakeOpenAi::start().await;
    openai.set_api_key(API_KEY);
    openai.set_models(&["good-model"]);

    let (code, stdout, stderr) = check_model(
        openai.base_url(),
        "sk-wrong-key-0123456789",
        "good-model",
        &[],
    )
    .await;
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.contains("rejected the API key"), "{stdout}");
    assert!(stdout.contains("HTTP 401"), "{stdout}");
    assert!(
        !stdout.contains("sk-wrong-key") && !stderr.contains("sk-wrong-key"),
        "{stdout}{stderr}"
    );

    let (code, stdout, _) = check_model(openai.base_url(), API_KEY, "no-such-model", &[]).await;
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.contains("model was not found"), "{stdout}");
    assert!(stdout.contains("model_not_found"), "{stdout}");

    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (code, stdout, stderr) = check_model(
        format!("http://127.0.0.1:{closed}/v1"),
        API_KEY,
        "good-model",
        &[],
    )
    .await;
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.contains("reachable:  no"), "{stdout}");
    assert!(stdout.contains("unreachable"), "{stdout}");
    assert!(stderr.contains("check-model failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_streamed_answer_arrives_in_pieces_without_thoughts() {
    use zundamon::agent::llm::ChatClient;
    use zundamon::agent::stream::StreamEvent;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let openai = FakeOpenAi::start().await;
    openai.set_shape(Shape::StreamThink);
    openai.script(
        "流して",
        vec![Step::Answer("少しずつ届く答えなのだ。".into())],
    );
    let env = [
        ("OPENAI_API_KEY", "k".to_owned()),
        ("OPENAI_BASE_URL", openai.base_url()),
    ];
    let config =
        zundamon::config::Config::load_with(None, zundamon::config::Purpose::Ask, |name| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        })
        .unwrap();
    let client = ChatClient::new(
        &config.openai,
        Arc::new(zundamon::ops::metrics::Metrics::new()),
    )
    .unwrap();
    let request = async_openai::types::chat::CreateChatCompletionRequest {
        model: "m".into(),
        messages: vec![
            async_openai::types::chat::ChatCompletionRequestUserMessage::from("流して").into(),
        ],
        ..Default::default()
    };
    let mut events = Vec::new();
    let message = client
        .stream(
            &request,
            tokio::time::Instant::now() + Duration::from_secs(10),
            &mut |event| events.push(event),
        )
        .await
        .unwrap();
    assert_eq!(message.content.as_deref(), Some("少しずつ届く答えなのだ。"));
    assert!(message.had_reasoning && message.streamed);
    assert_eq!(events.first(), Some(&StreamEvent::Thinking));
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Text(text) => Some(text.as_str()),
            StreamEvent::Thinking => None,
        })
        .collect();
    assert!(texts.len() > 1, "{texts:?}");
    assert_eq!(texts.concat(), "少しずつ届く答えなのだ。");
    assert_eq!(openai.requests()[0]["stream"], true);
}
