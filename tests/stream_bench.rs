//! Benchmark (ignored by `cargo test`; run it explicitly): how soon a streamed answer becomes
//! visible, and how many edits it takes, for a 1500-character answer the fake model writes over
//! about 6 seconds, with streaming on (default pace) and off.
//!
//! `cargo test --test stream_bench -- --ignored --nocapture`

mod support;

use std::time::{Duration, Instant};

use support::fake_openai::Step;
use support::world::{World, USER};

const QUESTION: &str = "千五百文字で答えて";

struct Run {
    first_text: Duration,
    done: Duration,
    edits: usize,
}

async fn run(world: &World, channel: u64) -> Run {
    // 1500 characters; the fake sends three per event, 12 ms apart: 500 events, about 6 s.
    let answer: String = "ずんだ餅は枝豆をつぶした緑の餡のお餅なのだ。"
        .chars()
        .cycle()
        .take(1500)
        .collect();
    world
        .openai
        .script(QUESTION, vec![Step::Answer(answer.clone())]);
    let started = Instant::now();
    let sent = world
        .discord
        .send_interaction(channel, USER, "user", QUESTION)
        .await;
    let token = sent.token.clone();
    let full = zundamon::discord::quote_answer(QUESTION, &answer);
    let mut first_text = None;
    loop {
        let edits: Vec<_> = world
            .discord
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/webhooks/") && r.path.contains(&token))
            .filter(|r| r.method != "GET" && r.status < 300)
            .collect();
        if first_text.is_none() {
            // Answer text, not a status line: something after the question's quote.
            let quote = format!("> {QUESTION}\n");
            if let Some(edit) = edits.iter().find(|r| {
                let text = r.body["content"].as_str().unwrap_or_default();
                text.strip_prefix(&quote)
                    .is_some_and(|rest| rest.starts_with('ず'))
            }) {
                first_text = Some(edit.at.duration_since(started));
            }
        }
        if world.discord.shown(&token).concat() == full {
            return Run {
                first_text: first_text.unwrap_or_default(),
                done: started.elapsed(),
                edits: edits.len(),
            };
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn time_to_first_text_and_edits_per_streamed_answer() {
    for (label, stream) in [
        ("streaming (1000 ms pace)", "true"),
        ("not streaming", "false"),
    ] {
        let world = World::start("stream-bench", &[("ZUNDA_STREAM", stream)]).await;
        // The same model either way: a streamed answer's events 12 ms apart, or the whole
        // answer after the time it takes to write it.
        if stream == "true" {
            world.openai.set_stream_gap(Duration::from_millis(12));
        } else {
            world.openai.set_delay(Duration::from_millis(500 * 12));
        }
        for round in 0..3u64 {
            let run = run(&world, 900 + round).await;
            println!(
                "{label:26} round {round}: first answer text after {:>6.0} ms, complete after {:>6.0} ms, {:>2} edits",
                run.first_text.as_secs_f64() * 1000.0,
                run.done.as_secs_f64() * 1000.0,
                run.edits
            );
        }
    }
}
