//! Benchmarks of the actor system alone, in real time (no paused clock), through its public API:
//!
//! - **routing**: 100,000 questions across 1,000 channels with an answerer that answers at once:
//!   throughput and the latency of `Channels::ask` (one client per channel, all at once; then one
//!   client asking one question at a time, for the unloaded latency);
//! - **concurrency**: 1,000 channels asked at once with an answerer that sleeps 50 ms: total time
//!   against one answer time (50 ms) and against the serial time (1,000 × 50 ms);
//! - **churn**: 100,000 distinct channels asked once each, with the cap at 10,000 and at 100,000:
//!   throughput, live actors at the end, evictions, and the process's peak RSS (`VmHWM` of
//!   `/proc/self/status`). Each cap runs in a child process of its own, so each peak is its own.
//!   The store discards everything here, so the memory measured is the actors'.
//!
//! Run with `cargo bench -p zundamon-actors --bench actors` (release build). Pass `routing`,
//! `concurrency` or `churn` after `--` to run only those parts. It prints tables, never asserts
//! speed (STYLE.md rule 10); it does fail if a question goes unanswered or the cap is exceeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zundamon_actors::{
    AnswerError, Answerer, ChannelId, ChannelSettings, Channels, ConversationStore, Exchange,
    MemoryStore, Question, StoreError, SupervisorArgs,
};

const ROUTING_CHANNELS: u64 = 1_000;
const ROUTING_PER_CHANNEL: usize = 100;
const UNLOADED_ASKS: u64 = 10_000;
const CONCURRENT_CHANNELS: u64 = 1_000;
const SLOW_ANSWER: Duration = Duration::from_millis(50);
const CHURN_CHANNELS: u64 = 100_000;
/// Clients asking at once during churn: enough to keep the supervisor busy, few enough that
/// almost every actor is idle (evictable) when the cap is reached.
const CHURN_CLIENTS: u64 = 64;
const CHURN_CAPS: [usize; 2] = [10_000, 100_000];
const CHILD_FLAG: &str = "--churn-child";

/// Answers at once: what is left is the cost of routing, spawning and the store.
struct InstantAnswer;

#[async_trait]
impl Answerer for InstantAnswer {
    async fn answer(&self, _: &Question, _: &[Exchange]) -> Result<String, AnswerError> {
        Ok("なのだ".to_owned())
    }
}

/// Answers after a fixed sleep, like a model that takes its time.
struct SlowAnswer(Duration);

#[async_trait]
impl Answerer for SlowAnswer {
    async fn answer(&self, _: &Question, _: &[Exchange]) -> Result<String, AnswerError> {
        tokio::time::sleep(self.0).await;
        Ok("なのだ".to_owned())
    }
}

/// Keeps nothing, so the churn benchmark measures the actors' memory, not the windows'.
struct NullStore;

#[async_trait]
impl ConversationStore for NullStore {
    async fn load(&self, _: ChannelId, _: usize) -> Result<Vec<Exchange>, StoreError> {
        Ok(Vec::new())
    }

    async fn append(&self, _: ChannelId, _: &[Exchange], _: usize) -> Result<(), StoreError> {
        Ok(())
    }

    async fn clear(&self, _: ChannelId) -> Result<(), StoreError> {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == CHILD_FLAG) {
        let cap = args
            .get(at + 1)
            .and_then(|cap| cap.parse().ok())
            .expect("--churn-child takes the channel cap");
        runtime().block_on(churn_child(cap));
        return;
    }
    // `cargo bench` passes `--bench`; any other word selects parts.
    let selected: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let wanted = |part: &str| selected.is_empty() || selected.contains(&part);

    println!(
        "zundamon-actors benchmarks: {} worker threads, real time",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let runtime = runtime();
    if wanted("routing") {
        runtime.block_on(routing());
    }
    if wanted("concurrency") {
        runtime.block_on(concurrency());
    }
    drop(runtime);
    if wanted("churn") {
        churn();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

fn question(channel_id: ChannelId, n: usize) -> Question {
    Question {
        channel_id,
        user_id: channel_id,
        user_name: "bench".to_owned(),
        text: format!("質問{n}"),
        places: Vec::new(),
        attachments: Vec::new(),
    }
}

async fn start(settings: ChannelSettings, answerer: Arc<dyn Answerer>) -> Channels {
    Channels::start(SupervisorArgs::new(
        settings,
        answerer,
        Arc::new(MemoryStore::new()),
    ))
    .await
    .expect("the supervisor starts")
}

fn settings(max_channels: usize) -> ChannelSettings {
    ChannelSettings {
        window_exchanges: 5,
        // Long enough that nothing is evicted for idleness during a run.
        idle: Duration::from_secs(600),
        max_channels,
    }
}

/// One client per channel, each asking its questions one after the other: returns every ask's
/// latency.
async fn ask_from_clients(
    channels: &Channels,
    clients: impl Iterator<Item = Vec<ChannelId>>,
) -> Vec<Duration> {
    let tasks: Vec<_> = clients
        .map(|plan| {
            let channels = channels.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(plan.len());
                for (n, channel) in plan.into_iter().enumerate() {
                    let asked = Instant::now();
                    channels
                        .ask(question(channel, n))
                        .await
                        .expect("every question is answered");
                    latencies.push(asked.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all
}

async fn routing() {
    let channels = start(settings(10_000), Arc::new(InstantAnswer)).await;
    let total = ROUTING_CHANNELS as usize * ROUTING_PER_CHANNEL;

    let started = Instant::now();
    let loaded = ask_from_clients(
        &channels,
        (0..ROUTING_CHANNELS).map(|c| vec![c; ROUTING_PER_CHANNEL]),
    )
    .await;
    let loaded_time = started.elapsed();

    let started = Instant::now();
    let unloaded = ask_from_clients(
        &channels,
        std::iter::once((0..UNLOADED_ASKS).map(|n| n % ROUTING_CHANNELS).collect()),
    )
    .await;
    let unloaded_time = started.elapsed();
    let stats = channels.stats();
    channels.stop().await;

    println!();
    println!("routing: instant answerer, window 5, in-memory store");
    println!(
        "  {:<44} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "run", "q/s", "p50", "p99", "max", "total"
    );
    let row = |name: &str, latencies: Vec<Duration>, time: Duration| {
        let (p, max) = percentiles(latencies);
        println!(
            "  {:<44} {:>10.0} {:>9} {:>9} {:>9} {:>9}",
            name,
            p.count as f64 / time.as_secs_f64(),
            fmt(p.p50),
            fmt(p.p99),
            fmt(max),
            fmt(time),
        );
    };
    row(
        &format!("{total} asks, {ROUTING_CHANNELS} clients at once (1/channel)"),
        loaded,
        loaded_time,
    );
    row(
        &format!("{UNLOADED_ASKS} asks, 1 client, one at a time"),
        unloaded,
        unloaded_time,
    );
    println!(
        "  answered {}, failed {}, actors spawned {}, live {}",
        stats.answered, stats.failed, stats.spawned, stats.live_channels
    );
}

async fn concurrency() {
    let channels = start(settings(10_000), Arc::new(SlowAnswer(SLOW_ANSWER))).await;
    println!();
    println!(
        "concurrency: {CONCURRENT_CHANNELS} channels asked at once, answerer sleeps {}",
        fmt(SLOW_ANSWER)
    );
    println!(
        "  {:<26} {:>9} {:>13} {:>14} {:>9} {:>9} {:>9}",
        "run", "total", "÷ one answer", "÷ serial time", "p50", "p99", "max"
    );
    let serial = SLOW_ANSWER * CONCURRENT_CHANNELS as u32;
    for run in ["cold (actors spawned)", "warm (actors alive)"] {
        let started = Instant::now();
        let latencies =
            ask_from_clients(&channels, (0..CONCURRENT_CHANNELS).map(|c| vec![c])).await;
        let total = started.elapsed();
        let (p, max) = percentiles(latencies);
        println!(
            "  {:<26} {:>9} {:>12.2}× {:>13.4}× {:>9} {:>9} {:>9}",
            run,
            fmt(total),
            total.as_secs_f64() / SLOW_ANSWER.as_secs_f64(),
            total.as_secs_f64() / serial.as_secs_f64(),
            fmt(p.p50),
            fmt(p.p99),
            fmt(max),
        );
    }
    channels.stop().await;
}

/// Runs each churn configuration in a fresh child process so each peak RSS is its own.
fn churn() {
    println!();
    println!(
        "churn: {CHURN_CHANNELS} distinct channels asked once each by {CHURN_CLIENTS} clients, \
         instant answerer, store that keeps nothing; one process per cap"
    );
    println!(
        "  {:>8} {:>8} {:>9} {:>8} {:>10} {:>9} {:>12} {:>12} {:>11} {:>9}",
        "cap",
        "time",
        "q/s",
        "live",
        "evictions",
        "spawned",
        "VmHWM before",
        "VmHWM after",
        "VmRSS after",
        "p99 ask"
    );
    let exe = std::env::current_exe().expect("the benchmark's own path");
    for cap in CHURN_CAPS {
        let status = std::process::Command::new(&exe)
            .args([CHILD_FLAG, &cap.to_string()])
            .status()
            .expect("run the churn child");
        assert!(status.success(), "churn with cap {cap} failed: {status}");
    }
}

async fn churn_child(cap: usize) {
    let channels = Channels::start(SupervisorArgs::new(
        settings(cap),
        Arc::new(InstantAnswer),
        Arc::new(NullStore),
    ))
    .await
    .expect("the supervisor starts");
    let before = memory();

    let started = Instant::now();
    let per_client = CHURN_CHANNELS / CHURN_CLIENTS;
    let plans = (0..CHURN_CLIENTS).map(|client| {
        let first = client * per_client;
        let last = if client + 1 == CHURN_CLIENTS {
            CHURN_CHANNELS
        } else {
            first + per_client
        };
        (first..last).collect::<Vec<_>>()
    });
    let latencies = ask_from_clients(&channels, plans).await;
    let time = started.elapsed();
    let stats = channels.stats();
    let after = memory();
    let (p, _) = percentiles(latencies);
    assert_eq!(p.count as u64, CHURN_CHANNELS);
    assert!(
        stats.live_channels <= cap,
        "{} live channel actors with a cap of {cap}",
        stats.live_channels
    );
    println!(
        "  {:>8} {:>8} {:>9.0} {:>8} {:>10} {:>9} {:>9} MiB {:>8} MiB {:>7} MiB {:>9}",
        cap,
        fmt(time),
        CHURN_CHANNELS as f64 / time.as_secs_f64(),
        stats.live_channels,
        stats.evictions,
        stats.spawned,
        before.hwm_kib / 1024,
        after.hwm_kib / 1024,
        after.rss_kib / 1024,
        fmt(p.p99),
    );
    channels.stop().await;
}

struct Memory {
    hwm_kib: u64,
    rss_kib: u64,
}

/// Peak and current resident set size of this process.
fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        hwm_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
    }
}

struct Percentiles {
    count: usize,
    p50: Duration,
    p99: Duration,
}

/// p50 and p99 (nearest rank) and the maximum.
fn percentiles(mut samples: Vec<Duration>) -> (Percentiles, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    let p = Percentiles {
        count: samples.len(),
        p50: at(0.50),
        p99: at(0.99),
    };
    (p, *samples.last().expect("at least one sample"))
}

/// A duration with a unit that keeps it short: µs, ms or s.
fn fmt(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0}µs")
    } else if micros < 1_000_000.0 {
        format!("{:.1}ms", micros / 1e3)
    } else {
        format!("{:.2}s", micros / 1e6)
    }
}
