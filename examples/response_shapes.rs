//! Benchmark of the model response readers: which real-server response shapes async-openai's
//! strict types accept versus the bot's lenient readers, and what each costs per response.
//!
//! Run: `cargo run --example response_shapes` (add `--release` for optimised figures). It prints
//! a table and timings; it asserts nothing (STYLE.md rule 10).

use std::time::Instant;

use async_openai::types::chat::{CreateChatCompletionResponse, CreateChatCompletionStreamResponse};
use serde_json::{json, Value};
use zundamon::agent::response::parse_completion;
use zundamon::agent::stream::StreamAssembler;

const THOUGHT: &str = "ユーザーには見せない考え";

fn base(message: Value, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000u32,
        "model": "m",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
}

fn text(content: &str) -> Value {
    json!({"role": "assistant", "content": content, "refusal": null})
}

fn plain_shapes() -> Vec<(&'static str, Value)> {
    let call = json!({"id": "call_1", "type": "function",
        "function": {"name": "web_search", "arguments": "{\"query\":\"ずんだ\"}"}});
    let mut missing_ids = base(text("答えなのだ"), "stop");
    for key in ["id", "object", "created"] {
        missing_ids.as_object_mut().unwrap().remove(key);
    }
    let mut no_usage = base(text("答えなのだ"), "stop");
    no_usage.as_object_mut().unwrap().remove("usage");
    let mut extra = base(text("答えなのだ"), "stop");
    extra["x_groq"] = json!({"id": "r"});
    extra["choices"][0]["stop_reason"] = json!(128009);
    vec![
        ("standard", base(text("答えなのだ"), "stop")),
        ("missing id/object/created", missing_ids),
        ("no role", base(json!({"content": "答えなのだ"}), "stop")),
        (
            "tool call without type/id",
            base(
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"function": {"name": "web_search", "arguments": "{\"query\":\"ずんだ\"}"}}]}),
                "tool_calls",
            ),
        ),
        ("finish_reason \"\"", base(text("答えなのだ"), "")),
        (
            "finish_reason eos_token",
            base(text("答えなのだ"), "eos_token"),
        ),
        ("usage missing", no_usage),
        ("extra unknown fields", extra),
        (
            "null content with tool calls",
            base(
                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                "tool_calls",
            ),
        ),
        (
            "content as text parts",
            base(
                json!({"role": "assistant", "content": [{"type": "text", "text": "答え"}, {"type": "text", "text": "なのだ"}]}),
                "stop",
            ),
        ),
        (
            "<think> tags",
            base(
                text(&format!("<think>{THOUGHT}</think>\n\n答えなのだ")),
                "stop",
            ),
        ),
        (
            "reasoning_content",
            base(
                json!({"role": "assistant", "content": "答えなのだ", "reasoning_content": THOUGHT}),
                "stop",
            ),
        ),
    ]
}

fn sse(chunks: &[Value], keep_alive: bool, done: bool) -> String {
    let mut body = String::new();
    for chunk in chunks {
        body.push_str(&format!("data: {chunk}\n\n"));
        if keep_alive {
            body.push_str(": keep-alive\n\n");
        }
    }
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

fn delta(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn answer_chunks(text: &str) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let mut chunks = vec![delta(json!({"role": "assistant", "content": ""}), None)];
    for piece in chars.chunks(3) {
        chunks.push(delta(
            json!({"content": piece.iter().collect::<String>()}),
            None,
        ));
    }
    chunks.push(delta(json!({}), Some("stop")));
    chunks
}

fn stream_shapes() -> Vec<(&'static str, String)> {
    let chunks = answer_chunks("流れてきた答えなのだ");
    let mut azure = vec![
        json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
        "prompt_filter_results": []}),
    ];
    azure.extend(chunks.clone());
    vec![
        ("stream", sse(&chunks, false, true)),
        ("stream, empty choices first", sse(&azure, false, true)),
        ("stream, keep-alive comments", sse(&chunks, true, true)),
        ("stream, no [DONE]", sse(&chunks, false, false)),
        (
            "stream, <think> tags",
            sse(
                &answer_chunks(&format!("<think>{THOUGHT}</think>答えなのだ")),
                false,
                true,
            ),
        ),
    ]
}

/// async-openai's strict reading: (parses, shows reasoning).
fn strict_plain(body: &[u8]) -> (bool, bool) {
    match serde_json::from_slice::<CreateChatCompletionResponse>(body) {
        Ok(response) => {
            let shown = response.choices[0]
                .message
                .content
                .clone()
                .unwrap_or_default();
            (true, shown.contains(THOUGHT))
        }
        Err(_) => (false, false),
    }
}

fn strict_stream(body: &str) -> (bool, bool) {
    let mut shown = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        match serde_json::from_str::<CreateChatCompletionStreamResponse>(data) {
            Ok(chunk) => {
                if let Some(choice) = chunk.choices.first() {
                    shown.push_str(choice.delta.content.as_deref().unwrap_or_default());
                }
            }
            Err(_) => return (false, false),
        }
    }
    (true, shown.contains(THOUGHT))
}

fn lenient_stream(body: &[u8]) -> Result<zundamon::agent::response::AssistantMessage, String> {
    let mut assembler = StreamAssembler::new();
    let mut ignore = |_| {};
    assembler
        .push(body, &mut ignore)
        .map_err(|e| e.to_string())?;
    assembler.finish(&mut ignore).map_err(|e| e.to_string())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Median nanoseconds per call of `f` over `rounds` rounds of `per_round` calls.
fn time(rounds: usize, per_round: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_round {
                f();
            }
            started.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

fn main() {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("# Response shapes ({profile} build)\n");
    println!("| shape | async-openai strict: parses | strict: shows reasoning | lenient: answer | lenient: reasoning hidden |");
    println!("|---|---|---|---|---|");
    let (mut strict_ok, mut lenient_ok, mut total) = (0, 0, 0);
    for (name, body) in plain_shapes() {
        let bytes = body.to_string().into_bytes();
        let (parses, leaks) = strict_plain(&bytes);
        let lenient = parse_completion(&bytes);
        total += 1;
        strict_ok += usize::from(parses && !leaks);
        lenient_ok += usize::from(lenient.is_ok());
        let hidden = lenient
            .as_ref()
            .map(|m| !m.content.clone().unwrap_or_default().contains(THOUGHT))
            .unwrap_or(false);
        println!(
            "| {name} | {} | {} | {} | {} |",
            yes(parses),
            yes(leaks),
            yes(lenient.is_ok()),
            yes(hidden)
        );
    }
    for (name, body) in stream_shapes() {
        let (parses, leaks) = strict_stream(&body);
        let lenient = lenient_stream(body.as_bytes());
        total += 1;
        strict_ok += usize::from(parses && !leaks);
        lenient_ok += usize::from(lenient.is_ok());
        let hidden = lenient
            .as_ref()
            .map(|m| !m.content.clone().unwrap_or_default().contains(THOUGHT))
            .unwrap_or(false);
        println!(
            "| {name} | {} | {} | {} | {} |",
            yes(parses),
            yes(leaks),
            yes(lenient.is_ok()),
            yes(hidden)
        );
    }
    println!(
        "\nUsable without showing reasoning: strict {strict_ok}/{total}, lenient {lenient_ok}/{total}\n"
    );

    // Cost per response: a typical 600-character answer.
    let answer = "ずんだもちは枝豆をすりつぶして作る仙台の名物なのだ。".repeat(24);
    let plain = base(text(&answer), "stop").to_string().into_bytes();
    let strict_ns = time(31, 2000, || {
        let parsed: CreateChatCompletionResponse = serde_json::from_slice(&plain).unwrap();
        std::hint::black_box(parsed);
    });
    let lenient_ns = time(31, 2000, || {
        std::hint::black_box(parse_completion(&plain).unwrap());
    });
    let think = base(
        text(&format!("<think>{}</think>{answer}", THOUGHT.repeat(20))),
        "stop",
    )
    .to_string()
    .into_bytes();
    let think_ns = time(31, 2000, || {
        std::hint::black_box(parse_completion(&think).unwrap());
    });
    let stream = sse(&answer_chunks(&answer), false, true);
    let stream_ns = time(31, 200, || {
        std::hint::black_box(lenient_stream(stream.as_bytes()).unwrap());
    });
    println!("| reader ({profile}) | median per response | ratio to strict |");
    println!("|---|---|---|");
    println!(
        "| async-openai strict, plain ({} bytes) | {:.1} µs | 1.00 |",
        plain.len(),
        strict_ns / 1000.0
    );
    println!(
        "| lenient, plain | {:.1} µs | {:.2} |",
        lenient_ns / 1000.0,
        lenient_ns / strict_ns
    );
    println!(
        "| lenient, plain with <think> ({} bytes) | {:.1} µs | {:.2} |",
        think.len(),
        think_ns / 1000.0,
        think_ns / strict_ns
    );
    println!(
        "| lenient, SSE stream ({} chunks, {} bytes) | {:.1} µs | {:.2} |",
        answer.chars().count().div_ceil(3) + 2,
        stream.len(),
        stream_ns / 1000.0,
        stream_ns / strict_ns
    );
}
