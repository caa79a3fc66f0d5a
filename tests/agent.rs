//! The agent against a fake OpenAI-compatible server and a fake DuckDuckGo: prompt framing, the
//! tool loop, retries, timeouts, search failures and the cache, and the window through the real
//! actor system.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use support::fake_openai::{content_text, FakeOpenAi, Step, TOOL_ANSWER_PREFIX};
use support::fake_search::{
    FakeSearch, SearchMode, FIXTURE_AD_TITLE, FIXTURE_FIRST_TITLE, FIXTURE_FIRST_URL,
};
use zundamon::agent::search::{WebSearch, UNAVAILABLE};
use zundamon::agent::ZundaAgent;
use zundamon::config::{Config, Purpose};
use zundamon::ops::metrics::Metrics;
use zundamon_actors::{
    Answerer, ChannelSettings, Channels, Exchange, MemoryStore, Question, StatsSnapshot,
    SupervisorArgs,
};

const API_KEY: &str = "sk-test-Zunda0123456789secret";
/// 2024-12-31 15:04:05 UTC is 2025/01/01 00:04:05 in Asia/Tokyo (the default zone).
const FIXED_NOW: &str = "2025/01/01 00:04:05";

struct Harness {
    openai: FakeOpenAi,
    search: FakeSearch,
    config: Config,
    metrics: Arc<Metrics>,
}

impl Harness {
    /// Fakes plus a config pointing at them; `overrides` are extra environment variables.
    async fn start(overrides: &[(&str, &str)]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let openai = FakeOpenAi::start().await;
        let search = FakeSearch::start().await;
        let mut env: HashMap<String, String> = [
            ("OPENAI_API_KEY", API_KEY.to_owned()),
            ("OPENAI_BASE_URL", openai.base_url()),
            ("OPENAI_MODEL", "test-model".to_owned()),
            ("SEARCH_BASE_URL", search.base_url()),
            ("ZUNDA_LLM_CONNECT_TIMEOUT_SECS", "2".to_owned()),
            ("ZUNDA_LLM_REQUEST_TIMEOUT_SECS", "5".to_owned()),
            ("ZUNDA_LLM_MAX_RETRIES", "2".to_owned()),
            ("ZUNDA_ANSWER_TIMEOUT_SECS", "20".to_owned()),
            ("ZUNDA_MAX_TOOL_ROUNDS", "3".to_owned()),
            ("ZUNDA_SEARCH_TIMEOUT_SECS", "2".to_owned()),
            ("ZUNDA_SEARCH_MAX_RESULTS", "5".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (name, value) in overrides {
            env.insert((*name).to_owned(), (*value).to_owned());
        }
        let config = Config::load_with(None, Purpose::Ask, |name| env.get(name).cloned())
            .expect("test config is valid");
        Self {
            openai,
            search,
            config,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The agent under test, with the clock pinned to [`FIXED_NOW`].
    fn agent(&self) -> ZundaAgent {
        let now = Utc.with_ymd_and_hms(2024, 12, 31, 15, 4, 5).unwrap();
        ZundaAgent::with_clock(&self.config, self.metrics.clone(), Arc::new(move || now))
            .expect("agent builds")
    }

    fn metrics_text(&self) -> String {
        self.metrics.render(&StatsSnapshot::default())
    }
}

use zundamon::agent::sources::strip_sources;

fn question(text: &str) -> Question {
    Question {
        channel_id: 10,
        user_id: 20,
        user_name: "たろう".into(),
        text: text.into(),
        places: Vec::new(),
        attachments: Vec::new(),
    }
}

fn framed(text: &str) -> String {
    format!(
        "私の名前は`たろう`です。今の時間は{FIXED_NOW}です。以上を踏まえて以下の質問に答えてください。\n\n{text}"
    )
}

fn messages(body: &Value) -> &Vec<Value> {
    body["messages"].as_array().expect("messages array")
}

fn tool_messages(body: &Value) -> Vec<&Value> {
    messages(body)
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect()
}

#[tokio::test]
async fn a_plain_question_gets_the_models_answer() {
    let h = Harness::start(&[]).await;
    let answer = h
        .agent()
        .answer(&question("ずんだ餅って何？"), &[])
        .await
        .unwrap();
    assert_eq!(answer, "「ずんだ餅って何？」の答えなのだ。");

    let recorded = h.openai.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].authorization.as_deref(),
        Some(&*format!("Bearer {API_KEY}"))
    );
    let body = &recorded[0].body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "web_search");
    assert_eq!(
        body["tools"][0]["function"]["parameters"]["properties"]["query"]["type"],
        "string"
    );
    assert_eq!(h.search.request_count(), 0);
    assert!(h
        .metrics_text()
        .contains("zundamon_llm_requests_total{outcome=\"ok\"} 1"));
}

#[tokio::test]
async fn search_results_reach_the_model_as_delimited_untrusted_data() {
    let h = Harness::start(&[]).await;
    h.openai.script(
        "ずんだ餅",
        vec![Step::ToolCalls(vec!["ずんだ餅 とは".into()])],
    );
    let answer = h
        .agent()
        .answer(&question("ずんだ餅って何？"), &[])
        .await
        .unwrap();
    assert!(answer.starts_with(TOOL_ANSWER_PREFIX), "{answer}");

    let searches = h.search.requests();
    assert_eq!(searches.len(), 1);
    assert_eq!(searches[0].query.as_deref(), Some("ずんだ餅 とは"));
    assert_eq!(searches[0].region.as_deref(), Some("jp-jp"));

    let requests = h.openai.requests();
    assert_eq!(requests.len(), 2);
    let tools = tool_messages(&requests[1]);
    assert_eq!(tools.len(), 1);
    let result = content_text(&tools[0]["content"]);
    assert!(
        result.starts_with("<search_results untrusted=\"true\">"),
        "{result}"
    );
    assert!(result.ends_with("</search_results>"), "{result}");
    assert!(result.contains(FIXTURE_FIRST_TITLE), "{result}");
    assert!(result.contains(FIXTURE_FIRST_URL), "{result}");
    assert!(!result.contains(FIXTURE_AD_TITLE), "{result}");
    assert!(!result.contains("duckduckgo.com"), "{result}");
    assert!(h
        .metrics_text()
        .contains("zundamon_search_requests_total{outcome=\"ok\"} 1"));
}

#[tokio::test]
async fn messages_follow_the_original_order_and_framing() {
    let h = Harness::start(&[]).await;
    h.openai
        .script("三つ目", vec![Step::ToolCalls(vec!["ずんだ".into()])]);
    let history = vec![
        Exchange::new("一つ目の質問", "一つ目の答えなのだ。"),
        Exchange::new("二つ目の質問", "二つ目の答えなのだ。"),
    ];
    h.agent()
        .answer(&question("三つ目の質問"), &history)
        .await
        .unwrap();

    let requests = h.openai.requests();
    assert_eq!(requests.len(), 2);
    let persona = &h.config.persona.system_prompt;
    let closing = &h.config.persona.closing_reminder;
    let head = json!([
        {"role": "system", "content": persona},
        {"role": "user", "content": "一つ目の質問"},
        {"role": "assistant", "content": "一つ目の答えなのだ。"},
        {"role": "user", "content": "二つ目の質問"},
        {"role": "assistant", "content": "二つ目の答えなのだ。"},
        {"role": "user", "content": framed("三つ目の質問")},
    ]);
    let head = head.as_array().unwrap();

    let first = messages(&requests[0]);
    assert_eq!(first.len(), head.len() + 1);
    assert_eq!(&first[..head.len()], &head[..]);
    assert_eq!(
        first[head.len()],
        json!({"role": "system", "content": closing})
    );

    let second = messages(&requests[1]);
    assert_eq!(second.len(), head.len() + 3);
    assert_eq!(&second[..head.len()], &head[..]);
    let call = &second[head.len()];
    assert_eq!(call["role"], "assistant");
    let call_id = call["tool_calls"][0]["id"].as_str().unwrap();
    assert_eq!(call["tool_calls"][0]["function"]["name"], "web_search");
    assert_eq!(
        serde_json::from_str::<Value>(
            call["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"query": "ずんだ"})
    );
    let result = &second[head.len() + 1];
    assert_eq!(result["role"], "tool");
    assert_eq!(result["tool_call_id"], call_id);
    assert!(content_text(&result["content"]).contains("<search_results"));
    assert_eq!(
        second.last().unwrap(),
        &json!({"role": "system", "content": closing})
    );
}

#[tokio::test]
async fn the_window_holds_the_last_five_plain_exchanges() {
    let h = Harness::start(&[("ZUNDA_WINDOW_EXCHANGES", "5")]).await;
    let channels = Channels::start(SupervisorArgs::new(
        ChannelSettings {
            window_exchanges: h.config.channels.window_exchanges,
            idle: Duration::from_secs(60),
            max_channels: 10,
        },
        Arc::new(h.agent()),
        Arc::new(MemoryStore::new()),
    ))
    .await
    .unwrap();
    for n in 1..=7 {
        let answer = channels.ask(question(&format!("質問{n}"))).await.unwrap();
        assert_eq!(answer, format!("「質問{n}」の答えなのだ。"));
    }
    channels.stop().await;

    let requests = h.openai.requests();
    assert_eq!(requests.len(), 7);
    let seventh = messages(&requests[6]);
    let turns: Vec<(String, String)> = seventh
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                content_text(&m["content"]),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for n in 2..=6 {
        expected.push(("user".to_owned(), format!("質問{n}")));
        expected.push(("assistant".to_owned(), format!("「質問{n}」の答えなのだ。")));
    }
    expected.push(("user".to_owned(), framed("質問7")));
    assert_eq!(turns, expected);
}

#[tokio::test]
async fn a_rate_limit_is_retried_after_retry_after() {
    let h = Harness::start(&[]).await;
    h.openai.script(
        "混んでる",
        vec![
            Step::RateLimited {
                retry_after_secs: 1,
            },
            Step::Answer("待ったのだ。".into()),
        ],
    );
    let answer = h
        .agent()
        .answer(&question("混んでる？"), &[])
        .await
        .unwrap();
    assert_eq!(answer, "待ったのだ。");
    let recorded = h.openai.recorded();
    assert_eq!(recorded.len(), 2);
    let waited = recorded[1].received_at - recorded[0].received_at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    let metrics = h.metrics_text();
    assert!(
        metrics.contains("zundamon_llm_requests_total{outcome=\"retry\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("zundamon_llm_requests_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn persistent_server_errors_become_an_error_after_the_retries() {
    let h = Harness::start(&[("ZUNDA_LLM_MAX_RETRIES", "2")]).await;
    h.openai.script("壊れ", vec![Step::Status(500); 10]);
    let err = h
        .agent()
        .answer(&question("壊れてる？"), &[])
        .await
        .unwrap_err();
    assert!(err.reason.contains("HTTP 500"), "{err}");
    assert!(err.reason.contains(&h.openai.base_url()), "{err}");
    assert!(!err.reason.contains(API_KEY), "{err}");
    assert_eq!(h.openai.request_count(), 3, "one request and two retries");
    let metrics = h.metrics_text();
    assert!(
        metrics.contains("zundamon_llm_requests_total{outcome=\"retry\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("zundamon_llm_requests_total{outcome=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_auth_error_is_not_retried_and_never_shows_the_key() {
    let h = Harness::start(&[]).await;
    h.openai.script("鍵", vec![Step::Status(401)]);
    let err = h
        .agent()
        .answer(&question("鍵は？"), &[])
        .await
        .unwrap_err();
    assert!(err.reason.contains("HTTP 401"), "{err}");
    assert!(err.reason.contains("Incorrect API key"), "{err}");
    assert!(!err.reason.contains(API_KEY), "{err}");
    assert!(!err.reason.contains("sk-"), "{err}");
    assert_eq!(h.openai.request_count(), 1);
}

#[tokio::test]
async fn a_hanging_model_times_out_within_the_answer_bound() {
    let h = Harness::start(&[
        ("ZUNDA_ANSWER_TIMEOUT_SECS", "1"),
        ("ZUNDA_LLM_REQUEST_TIMEOUT_SECS", "30"),
    ])
    .await;
    h.openai.script("眠", vec![Step::Hang]);
    let started = Instant::now();
    let err = h
        .agent()
        .answer(&question("眠い？"), &[])
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.reason.contains("timed out after 1s"), "{err}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn a_request_timeout_is_retried() {
    let h = Harness::start(&[("ZUNDA_LLM_REQUEST_TIMEOUT_SECS", "1")]).await;
    h.openai.script(
        "遅",
        vec![Step::Hang, Step::Answer("間に合ったのだ。".into())],
    );
    let answer = h.agent().answer(&question("遅い？"), &[]).await.unwrap();
    assert_eq!(answer, "間に合ったのだ。");
    assert!(h
        .metrics_text()
        .contains("zundamon_llm_requests_total{outcome=\"timeout\"} 1"));
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let h = Harness::start(&[]).await;
    h.openai.script(
        "切れ",
        vec![
            Step::CloseConnection,
            Step::Answer("つながったのだ。".into()),
        ],
    );
    let answer = h.agent().answer(&question("切れた？"), &[]).await.unwrap();
    assert_eq!(answer, "つながったのだ。");
    assert_eq!(h.openai.request_count(), 2);
}

#[tokio::test]
async fn a_rate_limited_search_still_gets_an_answer() {
    let h = Harness::start(&[]).await;
    h.search.set_mode(SearchMode::RateLimited);
    h.openai
        .script("天気", vec![Step::ToolCalls(vec!["今日の天気".into()])]);
    let answer = h.agent().answer(&question("天気は？"), &[]).await.unwrap();
    assert!(answer.starts_with(TOOL_ANSWER_PREFIX), "{answer}");
    let requests = h.openai.requests();
    let tools = tool_messages(&requests[1]);
    assert_eq!(content_text(&tools[0]["content"]), UNAVAILABLE);
    assert_eq!(h.search.request_count(), 1);
    assert!(h
        .metrics_text()
        .contains("zundamon_search_requests_total{outcome=\"rate_limited\"} 1"));
}

#[tokio::test]
async fn failing_and_hanging_searches_still_get_an_answer() {
    for mode in [SearchMode::ServerError, SearchMode::Hang] {
        let h = Harness::start(&[("ZUNDA_SEARCH_TIMEOUT_SECS", "1")]).await;
        h.search.set_mode(mode);
        h.openai
            .script("ニュース", vec![Step::ToolCalls(vec!["ニュース".into()])]);
        let answer = h
            .agent()
            .answer(&question("ニュースは？"), &[])
            .await
            .unwrap();
        assert!(answer.contains("search unavailable"), "{mode:?}: {answer}");
        assert!(h
            .metrics_text()
            .contains("zundamon_search_requests_total{outcome=\"error\"} 1"));
    }
}

#[tokio::test]
async fn the_same_query_is_searched_once() {
    let h = Harness::start(&[]).await;
    h.search.set_echo_query(true);
    h.openai.script(
        "仙台",
        vec![
            Step::ToolCalls(vec!["仙台 名物".into()]),
            Step::Answer("一回目なのだ。".into()),
            Step::ToolCalls(vec!["仙台  名物".into()]),
            Step::Answer("二回目なのだ。".into()),
        ],
    );
    let agent = h.agent();
    agent
        .answer(&question("仙台の名物は？"), &[])
        .await
        .unwrap();
    agent
        .answer(&question("仙台の名物をもう一度"), &[])
        .await
        .unwrap();
    assert_eq!(h.search.request_count(), 1);
    let requests = h.openai.requests();
    assert_eq!(
        content_text(&tool_messages(&requests[1])[0]["content"]),
        content_text(&tool_messages(&requests[3])[0]["content"]),
    );
    assert!(content_text(&tool_messages(&requests[3])[0]["content"])
        .contains("「仙台 名物」の検索結果"));
    assert!(h
        .metrics_text()
        .contains("zundamon_search_requests_total{outcome=\"cached\"} 1"));
}

#[tokio::test]
async fn concurrent_identical_searches_make_one_request() {
    let h = Harness::start(&[("ZUNDA_SEARCH_TIMEOUT_SECS", "5")]).await;
    h.search.set_echo_query(true);
    // Long enough that all eight lookups are in flight before the first answer arrives.
    h.search.set_delay(Duration::from_millis(500));
    let search = WebSearch::new(&h.config.search, h.metrics.clone()).expect("search client");
    let lookups = (0..8).map(|n| {
        let search = &search;
        // The same query after normalization (whitespace differs).
        let query = if n % 2 == 0 {
            "ずんだ 餅"
        } else {
            " ずんだ   餅 "
        };
        async move { search.search(query).await }
    });
    let results = futures::future::join_all(lookups).await;
    assert_eq!(h.search.request_count(), 1, "{:?}", h.search.queries());
    let first = results[0].as_ref().expect("search succeeds");
    assert!(!first.is_empty());
    for result in &results {
        assert_eq!(result.as_ref().expect("search succeeds"), first);
    }
    let metrics = h.metrics_text();
    assert!(
        metrics.contains("zundamon_search_requests_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("zundamon_search_requests_total{outcome=\"cached\"} 7"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failed_search_is_not_cached() {
    let h = Harness::start(&[]).await;
    h.search.set_mode(SearchMode::ServerError);
    let search = WebSearch::new(&h.config.search, h.metrics.clone()).expect("search client");
    assert!(search.search("ずんだ").await.is_err());
    h.search.set_mode(SearchMode::Normal);
    assert!(search.search("ずんだ").await.is_ok());
    assert_eq!(h.search.request_count(), 2);
}

#[tokio::test]
async fn parallel_tool_calls_run_concurrently_and_answer_each_id() {
    let h = Harness::start(&[("ZUNDA_SEARCH_TIMEOUT_SECS", "5")]).await;
    h.search.set_echo_query(true);
    h.search.set_delay(Duration::from_millis(800));
    h.openai.script(
        "比べて",
        vec![Step::ToolCalls(vec![
            "ずんだ".into(),
            "枝豆".into(),
            "仙台".into(),
        ])],
    );
    h.agent().answer(&question("比べて"), &[]).await.unwrap();

    let searches = h.search.requests();
    assert_eq!(searches.len(), 3);
    let first = searches.iter().map(|s| s.received_at).min().unwrap();
    let last = searches.iter().map(|s| s.received_at).max().unwrap();
    assert!(
        last - first < Duration::from_millis(800),
        "all three searches started before the first finished"
    );

    let requests = h.openai.requests();
    let second = messages(&requests[1]);
    let call = second.iter().find(|m| m["role"] == "assistant").unwrap();
    let ids: Vec<&str> = call["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let tools = tool_messages(&requests[1]);
    assert_eq!(tools.len(), 3);
    for ((tool, id), query) in tools.iter().zip(&ids).zip(["ずんだ", "枝豆", "仙台"]) {
        assert_eq!(tool["tool_call_id"], *id);
        assert!(content_text(&tool["content"]).contains(&format!("「{query}」の検索結果")));
    }
}

#[tokio::test]
async fn exhausted_tool_rounds_force_an_answer_without_tools() {
    let h = Harness::start(&[("ZUNDA_MAX_TOOL_ROUNDS", "2")]).await;
    h.openai.script(
        "しつこく",
        vec![
            Step::ToolCalls(vec!["一回目".into()]),
            Step::ToolCalls(vec!["二回目".into()]),
            Step::Answer("もう調べないのだ。".into()),
        ],
    );
    let answer = h
        .agent()
        .answer(&question("しつこく調べて"), &[])
        .await
        .unwrap();
    // The searches' results are cited after the answer.
    assert_eq!(strip_sources(&answer), "もう調べないのだ。");
    assert!(answer.contains("\n\n参考: <https://"), "{answer}");
    let requests = h.openai.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[0].get("tools").is_some());
    assert!(requests[1].get("tools").is_some());
    assert!(requests[2].get("tools").is_none(), "{}", requests[2]);
    assert_eq!(tool_messages(&requests[2]).len(), 2);
    assert_eq!(messages(&requests[2]).last().unwrap()["role"], "system");
}

#[tokio::test]
async fn malformed_tool_arguments_are_reported_to_the_model() {
    let h = Harness::start(&[]).await;
    h.openai.script(
        "壊れた引数",
        vec![Step::RawToolCalls(vec![
            ("web_search".into(), "{not json".into()),
            ("web_search".into(), "{\"query\": \"\"}".into()),
            ("calculator".into(), "{}".into()),
        ])],
    );
    let answer = h
        .agent()
        .answer(&question("壊れた引数"), &[])
        .await
        .unwrap();
    assert!(answer.starts_with(TOOL_ANSWER_PREFIX));
    assert_eq!(h.search.request_count(), 0);
    let requests = h.openai.requests();
    let tools = tool_messages(&requests[1]);
    assert_eq!(tools.len(), 3);
    assert!(content_text(&tools[0]["content"]).contains("invalid arguments"));
    assert!(content_text(&tools[1]["content"]).contains("invalid arguments"));
    assert!(content_text(&tools[2]["content"]).contains("unknown tool"));
}

#[tokio::test]
async fn an_empty_answer_is_an_error() {
    let h = Harness::start(&[]).await;
    h.openai.script("無言", vec![Step::Answer("  \n".into())]);
    let err = h
        .agent()
        .answer(&question("無言？"), &[])
        .await
        .unwrap_err();
    assert!(err.reason.contains("empty answer"), "{err}");
}

#[tokio::test]
async fn the_user_sees_no_internal_error_text_through_channels() {
    let h = Harness::start(&[("ZUNDA_LLM_MAX_RETRIES", "0")]).await;
    h.openai.script("失敗", vec![Step::Status(503)]);
    let channels = Channels::start(SupervisorArgs::new(
        ChannelSettings::default(),
        Arc::new(h.agent()),
        Arc::new(MemoryStore::new()),
    ))
    .await
    .unwrap();
    let err = channels.ask(question("失敗する？")).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    // A failed question does not enter the window.
    assert_eq!(channels.window(10).await.unwrap_or_default(), Vec::new());
    channels.stop().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_fails_at_once() {
    let h = Harness::start(&[("ZUNDA_ANSWER_TIMEOUT_SECS", "10")]).await;
    h.openai.script(
        "後で",
        vec![Step::RateLimited {
            retry_after_secs: 3600,
        }],
    );
    let started = Instant::now();
    let err = h
        .agent()
        .answer(&question("後で？"), &[])
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.reason.contains("HTTP 429"), "{err}");
    assert!(err.reason.contains("3600s"), "{err}");
    assert_eq!(h.openai.request_count(), 1);
}

#[tokio::test]
async fn zunda_tools_off_never_offers_tools() {
    let h = Harness::start(&[("ZUNDA_TOOLS", "off")]).await;
    let answer = h.agent().answer(&question("道具なし"), &[]).await.unwrap();
    assert_eq!(answer, "「道具なし」の答えなのだ。");
    let requests = h.openai.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].get("tools").is_none(), "{}", requests[0]);
}

#[tokio::test]
async fn zunda_tools_on_does_not_fall_back() {
    let h = Harness::start(&[("ZUNDA_TOOLS", "on")]).await;
    h.openai.set_rejects_tools(true);
    let agent = h.agent();
    for _ in 0..2 {
        let err = agent
            .answer(&question("道具は必須"), &[])
            .await
            .unwrap_err();
        assert!(err.reason.contains("HTTP 400"), "{err}");
        assert!(err.reason.contains("does not support tools"), "{err}");
    }
    let requests = h.openai.requests();
    assert_eq!(requests.len(), 2, "no retry without tools");
    assert!(requests.iter().all(|r| r["tools"].is_array()));
}

#[tokio::test]
async fn auto_tools_fall_back_once_per_process_and_keep_the_conversation() {
    let h = Harness::start(&[]).await;
    h.openai.set_rejects_tools(true);
    let agent = h.agent();
    let history = vec![Exchange::new("前の質問", "前の答えなのだ。")];
    let answer = agent.answer(&question("今の質問"), &history).await.unwrap();
    assert_eq!(answer, "「今の質問」の答えなのだ。");
    agent.answer(&question("次の質問"), &[]).await.unwrap();
    let requests = h.openai.requests();
    assert_eq!(requests.len(), 3);
    // The retry is the same conversation, minus the tools (and the tool_choice that goes
    // with them).
    assert_eq!(requests[0]["tool_choice"], "auto");
    let mut without_tools = requests[0].clone();
    without_tools.as_object_mut().unwrap().remove("tools");
    without_tools.as_object_mut().unwrap().remove("tool_choice");
    assert_eq!(requests[1], without_tools);
    assert!(requests[2].get("tools").is_none());
    // A fresh agent (a new process) tries tools again.
    h.openai.set_rejects_tools(false);
    h.agent().answer(&question("再起動後"), &[]).await.unwrap();
    assert!(h.openai.requests()[3]["tools"].is_array());
}

#[tokio::test]
async fn reasoning_is_hidden_from_the_answer_and_counted() {
    use support::fake_openai::{Shape, THOUGHT};
    let h = Harness::start(&[]).await;
    h.openai.script(
        "考えて",
        vec![
            Step::Shaped(
                Shape::ThinkTags,
                Box::new(Step::ToolCalls(vec!["ずんだ".into()])),
            ),
            Step::Shaped(
                Shape::ThinkTags,
                Box::new(Step::Answer("考えたのだ。".into())),
            ),
        ],
    );
    let answer = h.agent().answer(&question("考えて"), &[]).await.unwrap();
    assert_eq!(strip_sources(&answer), "考えたのだ。");
    // The tool round's thoughts are not sent back to the model either.
    let requests = h.openai.requests();
    assert!(
        !requests[1].to_string().contains(THOUGHT),
        "{}",
        requests[1]
    );
    assert!(h
        .metrics_text()
        .contains("zundamon_reasoning_answers_total 1"));
    h.agent().answer(&question("普通に"), &[]).await.unwrap();
    assert!(h
        .metrics_text()
        .contains("zundamon_reasoning_answers_total 1"));
}

#[tokio::test]
async fn a_retry_after_of_1e20_fails_at_once_without_panicking() {
    let h = Harness::start(&[("ZUNDA_ANSWER_TIMEOUT_SECS", "10")]).await;
    h.openai
        .script("永遠", vec![Step::RetryAfterRaw("1e20".into())]);
    let started = Instant::now();
    let err = h
        .agent()
        .answer(&question("永遠に待つ？"), &[])
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.reason.contains("HTTP 429"), "{err}");
    assert!(
        err.reason.contains("would pass the answer deadline"),
        "{err}"
    );
    assert_eq!(h.openai.request_count(), 1);
}
