//! End-to-end latency of the built `zundamon` binary against the loopback fakes of `tests/support`
//! (fake Discord gateway + REST, fake OpenAI-compatible server, fake search page), in real time:
//!
//! - **burst**: N channels (50, then 200) send `/zunda` at once while the fake model takes 2 s per
//!   answer. Prints the acknowledgement latency (the fake Discord's arrival time of the interaction
//!   callback minus when the interaction was put on the gateway) at p50/p95/p99/max against
//!   Discord's 3 s deadline, the time until every answer was delivered (the `@original` edit), and
//!   that time divided by one answer time (2 s) and by the serial time (N × 2 s). Each N runs with
//!   the default cap on model requests in flight (`max_concurrent_requests`, 32) and with the cap
//!   raised to 256, because that cap, not the actors, decides how many answers are computed at once.
//! - **one channel**: 20 questions to ONE channel with a 100 ms model, sent at once and then 1 to
//!   50 ms apart: total time against the serial time (20 × 100 ms, or the sending time plus one
//!   answer when that is longer), and whether the model was asked, and the answers delivered, in
//!   the order the questions were sent (if not, how many are out of place). Each spacing runs
//!   twice: `cold`, the first question right after the bot's gateway session is ready, and `warm`,
//!   after one question in another channel has been answered (the bot's start-up work is over).
//!   Last, `slow ack`: warm, but Discord answers the first question's acknowledgement only after
//!   500 ms, as over a slow network (a few spacings only).
//!
//! Run with `cargo bench --bench e2e_latency` (release build of the bot and the bench). Pass `burst`
//! or `order` after `--` to run only that part. `ZUNDA_BENCH_BINARY=path` runs another build of
//! the bot (e.g. a release binary, from a debug build of the bench: `--profile dev`). Every scenario starts a fresh bot process. It
//! prints tables, never asserts speed (STYLE.md rule 10); it fails only if an answer never arrives.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::bench::{cpus, runtime, Chosen};
use support::fake_discord::{RecordedRequest, SentInteraction, ACK_WINDOW};
use support::fake_openai::last_user_text;
use support::world::World;

const BURST_MODEL_DELAY: Duration = Duration::from_secs(2);
const BURST_SIZES: [usize; 2] = [50, 200];
/// `None`: the configured default (32 model requests in flight).
const LLM_CAPS: [Option<&str>; 2] = [None, Some("256")];
const ORDER_QUESTIONS: usize = 20;
const ORDER_MODEL_DELAY: Duration = Duration::from_millis(100);
/// Time between two questions to the one channel: at once, then spaced like fast typists.
const ORDER_GAPS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(30),
    Duration::from_millis(50),
];
/// The spacings that also run with a slow first acknowledgement.
const SLOW_ACK_GAPS: [Duration; 2] = [Duration::from_millis(5), Duration::from_millis(50)];
/// How late the fake Discord answers the first acknowledgement in a `slow ack` run.
const SLOW_ACK: Duration = Duration::from_millis(500);
/// The channel of the warm-up question of a `warm` or `slow ack` run.
const WARMUP_CHANNEL: u64 = 1_999;
const FIRST_USER: u64 = 5_000_000_000_000_000_001;
/// How long to wait for every answer before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(180);

/// The bot's state when the questions to the one channel start.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// Right after its gateway session is ready.
    Cold,
    /// After one question in another channel has been answered.
    Warm,
    /// Warm, and the first question's acknowledgement is answered only after `SLOW_ACK`.
    SlowAck,
}

/// Every question is admitted: the benchmark is about latency, not the rate limit or the queue
/// limits; answers are delivered whole, as the figures were first taken.
const BENCH_ENV: [(&str, &str); 5] = [
    ("ZUNDA_RATE_BURST", "100000"),
    ("ZUNDA_MAX_QUEUED_PER_CHANNEL", "1000"),
    ("ZUNDA_MAX_PENDING", "10000"),
    ("ZUNDA_STREAM", "false"),
    ("RUST_LOG", "info"),
];

/// A fresh world running the binary under test (see `ZUNDA_BENCH_BINARY`).
async fn bench_world(name: &str, extra: &[(&str, &str)]) -> World {
    World::builder(name)
        .bench_binary()
        .envs(&BENCH_ENV)
        .envs(extra)
        .start()
        .await
}

/// What the benchmark reads of a world.
trait Timings {
    async fn answers(&self, sent: &[SentInteraction]) -> Vec<RecordedRequest>;
    fn acks(&self, sent: &[SentInteraction]) -> (Vec<Duration>, usize);
}

impl Timings for World {
    /// Waits for the first successful `@original` edit of each interaction; returns them in the
    /// order of `sent`.
    async fn answers(&self, sent: &[SentInteraction]) -> Vec<RecordedRequest> {
        let of_sent =
            |r: &RecordedRequest| is_answer(r) && sent.iter().any(|i| r.path.contains(&i.token));
        let edits = self
            .discord
            .wait_for_requests(of_sent, sent.len(), ANSWER_TIMEOUT)
            .await;
        sent.iter()
            .map(|interaction| {
                edits
                    .iter()
                    .find(|r| r.path.contains(&interaction.token))
                    .cloned()
                    .unwrap_or_else(|| {
                        panic!(
                            "no answer for interaction {} within {ANSWER_TIMEOUT:?}; bot log tail:\n{}",
                            interaction.id,
                            tail(&self.bot.logs(), 40)
                        )
                    })
            })
            .collect()
    }

    /// The acknowledgement latency of each interaction, and how many callbacks Discord refused
    /// (too late or otherwise invalid). A missing callback counts as refused, with no latency.
    fn acks(&self, sent: &[SentInteraction]) -> (Vec<Duration>, usize) {
        let requests = self.discord.requests();
        let mut latencies = Vec::new();
        let mut refused = 0;
        for interaction in sent {
            let path = format!("/interactions/{}/", interaction.id);
            match requests.iter().find(|r| r.is("POST", &path)) {
                Some(callback) => {
                    latencies.push(callback.at.duration_since(interaction.sent_at));
                    if callback.status >= 300 {
                        refused += 1;
                    }
                }
                None => refused += 1,
            }
        }
        (latencies, refused)
    }
}

fn is_answer(r: &RecordedRequest) -> bool {
    r.method == "PATCH" && r.path.ends_with("/messages/@original") && r.status < 300
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn main() {
    let chosen = Chosen::from_args();
    let runtime = runtime();
    println!(
        "zundamon end-to-end benchmarks: built binary against loopback fakes, {} CPUs",
        cpus()
    );
    if chosen.wants("burst") {
        runtime.block_on(bursts());
    }
    if chosen.wants("order") {
        runtime.block_on(one_channel());
    }
}

async fn bursts() {
    println!();
    println!(
        "burst: N channels send /zunda at once, fake model answers in {}; ack = callback arrival − dispatch",
        fmt(BURST_MODEL_DELAY)
    );
    println!(
        "  {:>4} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>5} | {:>8} {:>8} {:>8} {:>11}",
        "N",
        "llm cap",
        "ack p50",
        "ack p95",
        "ack p99",
        "ack max",
        ">3s",
        "answer99",
        "all done",
        "÷ 1 ans",
        "÷ serial"
    );
    for n in BURST_SIZES {
        for cap in LLM_CAPS {
            burst(n, cap).await;
        }
    }
}

async fn burst(n: usize, llm_cap: Option<&str>) {
    let mut extra = Vec::new();
    if let Some(cap) = llm_cap {
        extra.push(("ZUNDA_MAX_CONCURRENT_LLM", cap));
    }
    let world = bench_world(&format!("bench-burst-{n}"), &extra).await;
    world.openai.set_delay(BURST_MODEL_DELAY);

    let started = Instant::now();
    let mut sent = Vec::with_capacity(n);
    for c in 0..n as u64 {
        let question = format!("質問{c}");
        sent.push(
            world
                .discord
                .send_interaction(1_000 + c, FIRST_USER + c, "user", &question)
                .await,
        );
    }
    let answers = world.answers(&sent).await;
    let (acks, refused) = world.acks(&sent);
    let late = acks.iter().filter(|ack| **ack > ACK_WINDOW).count() + refused;
    let all_done = answers
        .iter()
        .map(|r| r.at.duration_since(started))
        .max()
        .unwrap_or_default();
    let answer_latencies: Vec<Duration> = answers
        .iter()
        .zip(&sent)
        .map(|(r, s)| r.at.duration_since(s.sent_at))
        .collect();
    let ack = Percentiles::of(acks);
    let answer = Percentiles::of(answer_latencies);
    let serial = BURST_MODEL_DELAY * n as u32;
    println!(
        "  {:>4} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>5} | {:>8} {:>8} {:>7.2}× {:>10.3}×",
        n,
        llm_cap.unwrap_or("32 (def)"),
        fmt(ack.p50),
        fmt(ack.p95),
        fmt(ack.p99),
        fmt(ack.max),
        late,
        fmt(answer.p99),
        fmt(all_done),
        all_done.as_secs_f64() / BURST_MODEL_DELAY.as_secs_f64(),
        all_done.as_secs_f64() / serial.as_secs_f64(),
    );
}

async fn one_channel() {
    println!();
    println!(
        "one channel: {ORDER_QUESTIONS} questions to ONE channel, `gap` apart, fake model answers in {}",
        fmt(ORDER_MODEL_DELAY)
    );
    println!(
        "  order: `in order`, or `out / moved`: out = fewest questions to take out for the \
         others to be in order, moved = places holding another question than sent"
    );
    println!(
        "  {:>8} {:>5} | {:>7} {:>8} | {:>7} {:>7} | {:>11} {:>14}  delivered sequence",
        "start", "gap", "total", "÷ serial", "ack p99", "refused", "model order", "delivery order"
    );
    for start in [Start::Cold, Start::Warm] {
        for gap in ORDER_GAPS {
            one_channel_run(gap, start).await;
        }
    }
    for gap in SLOW_ACK_GAPS {
        one_channel_run(gap, Start::SlowAck).await;
    }
}

async fn one_channel_run(gap: Duration, start: Start) {
    let world = bench_world("bench-order", &[]).await;
    world.openai.set_delay(ORDER_MODEL_DELAY);
    let channel = 2_000;
    if start != Start::Cold {
        let warmup = world
            .discord
            .send_interaction(WARMUP_CHANNEL, FIRST_USER + 1, "warmup", "warm-up")
            .await;
        world.answers(&[warmup]).await;
    }
    if start == Start::SlowAck {
        world.discord.delay_next("POST", "/callback", SLOW_ACK);
    }

    let started = Instant::now();
    let mut sent = Vec::with_capacity(ORDER_QUESTIONS);
    for q in 0..ORDER_QUESTIONS {
        if q > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let question = format!("順番{q}");
        sent.push(
            world
                .discord
                .send_interaction(channel, FIRST_USER, "user", &question)
                .await,
        );
    }
    let answers = world.answers(&sent).await;
    let total = answers
        .iter()
        .map(|r| r.at.duration_since(started))
        .max()
        .unwrap_or_default();
    let (acks, refused) = world.acks(&sent);
    let ack = Percentiles::of(acks);

    // The order in which the model was asked, and the order in which answers reached Discord.
    let asked: Vec<usize> = world
        .openai
        .requests()
        .iter()
        .filter_map(|body| question_number(&last_user_text(body)?))
        .collect();
    let mut by_arrival: Vec<(Instant, usize)> =
        answers.iter().enumerate().map(|(q, r)| (r.at, q)).collect();
    by_arrival.sort();
    let delivered: Vec<usize> = by_arrival.into_iter().map(|(_, q)| q).collect();
    let expected: Vec<usize> = (0..ORDER_QUESTIONS).collect();
    // The least the answers can take: one model call after another (and after the last question).
    let serial = (ORDER_MODEL_DELAY * ORDER_QUESTIONS as u32)
        .max(gap * (ORDER_QUESTIONS as u32 - 1) + ORDER_MODEL_DELAY);
    println!(
        "  {:>8} {:>5} | {:>7} {:>7.2}× | {:>7} {:>7} | {:>11} {:>14}  {:?}",
        match start {
            Start::Cold => "cold",
            Start::Warm => "warm",
            Start::SlowAck => "slow ack",
        },
        fmt(gap),
        fmt(total),
        total.as_secs_f64() / serial.as_secs_f64(),
        fmt(ack.p99),
        refused,
        in_order(&asked, &expected),
        in_order(&delivered, &expected),
        delivered
    );
}

/// `順番{n}` at the end of a framed question.
fn question_number(framed: &str) -> Option<usize> {
    framed.rsplit("順番").next()?.trim().parse().ok()
}

/// `in order`, or `out / moved`. `out` is the fewest questions that, taken out, leave the others
/// in order (length minus the longest increasing run, not necessarily contiguous): one question
/// overtaking all the others counts 1. `moved` counts the places that hold another question than
/// sent: that same overtaking counts 20.
fn in_order(seen: &[usize], expected: &[usize]) -> String {
    if seen == expected {
        return "in order".to_owned();
    }
    let moved = seen.iter().zip(expected).filter(|(a, b)| a != b).count();
    // Patience sorting: tails[k] is the smallest last element of an increasing run of length k+1.
    let mut tails: Vec<usize> = Vec::new();
    for &q in seen {
        match tails.binary_search(&q) {
            Ok(_) => {}
            Err(at) if at == tails.len() => tails.push(q),
            Err(at) => tails[at] = q,
        }
    }
    format!("{} / {moved}", seen.len() - tails.len())
}

struct Percentiles {
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles; all zero without samples.
    fn of(mut samples: Vec<Duration>) -> Percentiles {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// A duration with a unit that keeps it short: ms below a second, else s.
fn fmt(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1_000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1e3)
    }
}
