//! Model token usage, as an operator sees it: `zundamon_model_tokens_total` on `/metrics` after
//! streamed and plain answers, a server that refuses `stream_options` (the answer still arrives,
//! asked again without it), and what `zundamon check-model` says about usage in streams.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::bot::{run_once_blocking, API_KEY};
use support::fake_openai::FakeOpenAi;
use support::world::World;

const PROMPT: &str = "zundamon_model_tokens_total{model=\"default\",kind=\"prompt\"}";
const COMPLETION: &str = "zundamon_model_tokens_total{model=\"default\",kind=\"completion\"}";

/// The prompt and completion tokens the fake reported, summed.
fn reported(openai: &FakeOpenAi) -> (f64, f64) {
    openai
        .reported_usage()
        .iter()
        .fold((0.0, 0.0), |(p, c), (prompt, completion)| {
            (p + *prompt as f64, c + *completion as f64)
        })
}

/// Waits until both token counters show what the fake reported (at least one report), and
/// returns the totals.
async fn wait_counted(world: &World) -> (f64, f64) {
    let (prompt, completion) = reported(&world.openai);
    assert!(
        prompt > 0.0 && completion > 0.0,
        "the fake reported no usage"
    );
    for (name, want) in [(PROMPT, prompt), (COMPLETION, completion)] {
        assert!(
            world
                .bot
                .wait_metric(name, Duration::from_secs(10), |v| v == want)
                .await,
            "{name} never reached {want}: {:?}\nbot log:\n{}",
            world.bot.metric(name).await,
            world.bot.logs()
        );
    }
    (prompt, completion)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_counts_the_tokens_its_server_reported() {
    let world = World::start("tokens-stream", &[]).await;
    // Declared from the start, so dashboards see zeros.
    assert_eq!(world.bot.metric(PROMPT).await, Some(0.0));
    assert_eq!(world.bot.metric(COMPLETION).await, Some(0.0));
    let (_, text) = world.bot.get("/metrics").await;
    assert!(
        text.contains("# TYPE zundamon_model_tokens counter"),
        "{text}"
    );
    assert!(text.contains("# HELP zundamon_model_tokens "), "{text}");

    let shown = world.ask(100, "ずんだ餅の数え方は？").await;
    assert!(
        shown.ends_with("「ずんだ餅の数え方は？」の答えなのだ。"),
        "{shown}"
    );
    let requests = world.openai.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["stream"], true);
    assert_eq!(
        requests[0]["stream_options"],
        serde_json::json!({"include_usage": true})
    );
    let (prompt, completion) = wait_counted(&world).await;
    // One answer: the fake's one report, and the completion is the answer's length.
    assert_eq!(world.openai.reported_usage().len(), 1);
    assert_eq!(prompt, support::fake_openai::PROMPT_TOKENS as f64);
    assert_eq!(
        completion,
        "「ずんだ餅の数え方は？」の答えなのだ。".chars().count() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_stream_options_is_asked_again_without_them() {
    let world = World::start("tokens-refused", &[]).await;
    world.openai.set_rejects_stream_options(true);
    // Such a server may still report usage on its own, on the finishing chunk.
    world.openai.set_stream_usage_unasked(true);

    let shown = world.ask(200, "枝豆はいつ採るの？").await;
    assert!(
        shown.ends_with("「枝豆はいつ採るの？」の答えなのだ。"),
        "no error to the user: {shown}"
    );
    let requests = world.openai.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(requests[0].get("stream_options").is_some());
    assert!(requests[1].get("stream_options").is_none());
    assert_eq!(requests[1]["stream"], true, "still streamed");
    assert_eq!(requests[0]["messages"], requests[1]["messages"]);
    wait_counted(&world).await;
    assert_eq!(world.openai.reported_usage().len(), 1);

    // From then on this client leaves the option out: one request per question.
    let shown = world.ask(200, "ずんだシェイクは？").await;
    assert!(
        shown.ends_with("「ずんだシェイクは？」の答えなのだ。"),
        "{shown}"
    );
    let requests = world.openai.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert!(requests[2].get("stream_options").is_none());
    assert_eq!(requests[2]["stream"], true);
    wait_counted(&world).await;
    assert_eq!(world.openai.reported_usage().len(), 2);

    let logs = world.bot.logs();
    assert_eq!(
        logs.matches("the chat model refused stream_options")
            .count(),
        1,
        "warned once:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_answer_counts_the_tokens_its_server_reported() {
    let world = World::start("tokens-plain", &[("ZUNDA_STREAM", "false")]).await;
    let shown = world.ask(300, "笹かまは？").await;
    assert!(shown.ends_with("「笹かまは？」の答えなのだ。"), "{shown}");
    let requests: Vec<Value> = world.openai.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_ne!(requests[0]["stream"], true);
    assert!(requests[0].get("stream_options").is_none());
    let (prompt, _) = wait_counted(&world).await;
    assert_eq!(prompt, support::fake_openai::PROMPT_TOKENS as f64);
}

/// Runs `zundamon check-model` against `openai`.
async fn check_model(openai: &FakeOpenAi) -> (i32, String, String) {
    let env: Vec<(String, String)> = vec![
        ("OPENAI_API_KEY".into(), API_KEY.into()),
        ("OPENAI_BASE_URL".into(), openai.base_url()),
        ("ZUNDA_LLM_CONNECT_TIMEOUT_SECS".into(), "2".into()),
        ("ZUNDA_LLM_REQUEST_TIMEOUT_SECS".into(), "5".into()),
    ];
    run_once_blocking(&["check-model"], env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_model_says_whether_streams_report_usage() {
    let openai = FakeOpenAi::start().await;
    let (code, stdout, stderr) = check_model(&openai).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|line| line.contains("streaming:"))
        .unwrap_or_default();
    assert!(
        line.starts_with("  streaming:  supported (")
            && line.ends_with(" text pieces, usage reported)"),
        "{stdout}"
    );

    let refusing = FakeOpenAi::start().await;
    refusing.set_rejects_stream_options(true);
    let (code, stdout, stderr) = check_model(&refusing).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            " text pieces, no usage reported; the server refused stream_options.include_usage, \
             so streamed answers are asked for without it)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("usage:      reported"), "{stdout}");
}
