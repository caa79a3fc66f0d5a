//! What eviction costs and what the bot weighs at rest, in real time:
//!
//! - **channels**: the actor system with the real SQLite store (`zundamon::store::SqliteStore`) and
//!   an answerer that answers at once with a 600-character answer. 10,000 channels each have 5
//!   stored exchanges (60-character questions, 600-character answers, Japanese text); each
//!   channel is asked once (every question is cold: the window is loaded from SQLite), then once
//!   more (warm). Prints the resident memory per live channel (RSS growth ÷ live channels), the
//!   cold and warm question latency (p50/p99/max, one question at a time, so no queueing), the
//!   mean store load time from the `cold_load` histogram, and the RSS after every channel was
//!   evicted.
//! - **footprint**: the built `zundamon` binary against the loopback fakes of `tests/support`:
//!   resident memory right after the gateway session is ready, a breakdown of it from
//!   `/proc/<pid>/smaps` (the binary's own pages, shared libraries, heap and anonymous mappings —
//!   allocator arenas and thread stacks), the thread count, and the peak (`VmHWM`) after 100
//!   channels ask at once (fake model: 1 s per answer). Runs three times with the defaults, then
//!   once per variant of the environment (`MALLOC_ARENA_MAX`, `TOKIO_WORKER_THREADS`) to see what
//!   each knob changes.
//!
//! Run with `cargo bench --bench eviction_cost` (release build); pass `channels` or `footprint`
//! after `--` for one part. `ZUNDA_BENCH_BINARY=path` makes `footprint` run another build of the
//! bot (e.g. `target/release/zundamon` while the bench itself is a debug build). It prints tables and never asserts speed (STYLE.md rule 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use support::bench::{cpus, runtime, Chosen};
use support::bot::temp_dir;
use support::world::World;
use zundamon::ops::actor_metrics::parse_kib;
use zundamon::store::SqliteStore;
use zundamon_actors::{
    AnswerError, Answerer, ChannelSettings, Channels, ConversationStore, Exchange, Question,
    SupervisorArgs,
};

const CHANNELS: u64 = 10_000;
const WINDOW: usize = 5;
const QUESTION_CHARS: usize = 60;
const ANSWER_CHARS: usize = 600;
const FOOTPRINT_BURST: u64 = 100;
const FOOTPRINT_MODEL_DELAY: Duration = Duration::from_secs(1);

fn japanese(chars: usize, seed: u64) -> String {
    let base: Vec<char> = "ずんだもんは東北地方の妖精なのだ。枝豆の力で今日も元気に答えるのだ！"
        .chars()
        .collect();
    (0..chars)
        .map(|i| base[(i + seed as usize) % base.len()])
        .collect()
}

/// Answers at once with a 600-character answer: what remains is routing, the store and memory.
struct InstantAnswer(String);

#[async_trait]
impl Answerer for InstantAnswer {
    async fn answer(&self, _: &Question, _: &[Exchange]) -> Result<String, AnswerError> {
        Ok(self.0.clone())
    }
}

fn question(channel: u64) -> Question {
    Question {
        channel_id: channel,
        user_id: 7,
        user_name: "bench".into(),
        text: japanese(QUESTION_CHARS, channel),
        places: Vec::new(),
        attachments: Vec::new(),
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_kib(&status, "VmRSS:").unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn fmt(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.2} ms", micros / 1000.0)
    }
}

async fn ask_each(channels: &Channels) -> Vec<Duration> {
    let mut took = Vec::with_capacity(CHANNELS as usize);
    for channel in 0..CHANNELS {
        let started = Instant::now();
        channels.ask(question(channel)).await.expect("answered");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

async fn channels_part() {
    let dir = temp_dir("bench-eviction");
    let store =
        Arc::new(SqliteStore::open(&dir.join("zundamon.db"), Duration::from_secs(86_400)).unwrap());
    let fill = Instant::now();
    for channel in 0..CHANNELS {
        let exchanges: Vec<Exchange> = (0..WINDOW as u64)
            .map(|i| {
                Exchange::new(
                    japanese(QUESTION_CHARS, channel + i),
                    japanese(ANSWER_CHARS, channel * 7 + i),
                )
            })
            .collect();
        store.append(channel, &exchanges, WINDOW).await.unwrap();
    }
    println!(
        "\nchannels: {CHANNELS} channels × {WINDOW} stored exchanges ({QUESTION_CHARS}+{ANSWER_CHARS} chars) written in {:.1} s",
        fill.elapsed().as_secs_f64()
    );
    let settings = ChannelSettings {
        window_exchanges: WINDOW,
        idle: Duration::from_secs(3600),
        max_channels: CHANNELS as usize * 2,
    };
    let answer = Arc::new(InstantAnswer(japanese(ANSWER_CHARS, 1)));
    let channels = Channels::start(SupervisorArgs::new(settings, answer, store.clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();

    let cold = ask_each(&channels).await;
    let stats = channels.stats();
    let after_cold = rss_kib();
    let warm = ask_each(&channels).await;
    let after_warm = rss_kib();
    assert_eq!(
        stats.cold_questions, CHANNELS,
        "every first question is cold"
    );

    let live = channels.stats().live_channels as u64;
    println!("| phase | RSS | live channels |");
    println!("|---|---|---|");
    println!(
        "| supervisor started, store filled | {:.1} MiB | 0 |",
        before as f64 / 1024.0
    );
    println!(
        "| after one cold question each | {:.1} MiB | {live} |",
        after_cold as f64 / 1024.0
    );
    println!(
        "| after one warm question each | {:.1} MiB | {live} |",
        after_warm as f64 / 1024.0
    );
    println!(
        "memory per live channel (window of {WINDOW} held): {:.1} KiB",
        (after_warm.saturating_sub(before)) as f64 / live as f64
    );
    println!();
    println!("| question | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (name, took) in [
        ("cold (window loaded from SQLite)", &cold),
        ("warm (actor alive)", &warm),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            fmt(percentile(took, 0.5)),
            fmt(percentile(took, 0.99)),
            fmt(*took.last().unwrap())
        );
    }
    let mean_load =
        Duration::from_secs_f64(stats.cold_load.sum_secs() / stats.cold_load.count() as f64);
    println!(
        "cold load (zundamon_cold_load_seconds): {} loads, mean {}; cold − warm at p50: {}",
        stats.cold_load.count(),
        fmt(mean_load),
        fmt(percentile(&cold, 0.5).saturating_sub(percentile(&warm, 0.5)))
    );

    channels.reconfigure(ChannelSettings {
        idle: Duration::from_millis(1),
        ..settings
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while channels.stats().live_channels > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "after evicting every channel: {} live, RSS {:.1} MiB (freed memory stays with the allocator)",
        channels.stats().live_channels,
        rss_kib() as f64 / 1024.0
    );
    channels.stop().await;
    let _ = store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Resident KiB of a process by kind of mapping, from `/proc/<pid>/smaps`.
fn breakdown(pid: u32) -> BTreeMap<&'static str, u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut kind = "anonymous";
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = line.split_whitespace().nth(5).unwrap_or_default();
            kind = if path.is_empty() {
                "anonymous (allocator arenas, thread stacks)"
            } else if path == exe {
                "the binary's own pages"
            } else if path == "[heap]" {
                "[heap] (main arena)"
            } else if path == "[stack]" {
                "[stack] (main thread)"
            } else if path.contains(".so") {
                "shared libraries"
            } else {
                "other"
            };
        } else if let Some(rest) = line.strip_prefix("Rss:") {
            let kib: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *out.entry(kind).or_insert(0) += kib;
        }
    }
    out
}

fn status_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

async fn footprint_part() {
    println!(
        "\nfootprint: the built binary against the fakes; RSS at READY, then {FOOTPRINT_BURST} channels ask at once (model {} s)",
        FOOTPRINT_MODEL_DELAY.as_secs()
    );
    // The defaults run three times: the binary's resident pages vary by a few hundred KiB from
    // one start to the next (which pages the kernel maps around each fault).
    let variants: [(&str, &[(&str, &str)]); 6] = [
        ("defaults", &[]),
        ("defaults, again", &[]),
        ("defaults, third run", &[]),
        ("MALLOC_ARENA_MAX=2", &[("MALLOC_ARENA_MAX", "2")]),
        ("TOKIO_WORKER_THREADS=1", &[("TOKIO_WORKER_THREADS", "1")]),
        (
            "both",
            &[("MALLOC_ARENA_MAX", "2"), ("TOKIO_WORKER_THREADS", "1")],
        ),
    ];
    println!("| variant | RSS at READY | threads | binary | libs | heap | anonymous | peak (VmHWM) after {FOOTPRINT_BURST} at once | all answered in |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // The binary under test: this build's, or another one (e.g. a release build when the bench
    // itself is built in debug) given in ZUNDA_BENCH_BINARY.
    println!("binary: {}", support::bot::bench_binary().display());
    let mut details = Vec::new();
    for (name, extra) in variants {
        let world = World::builder("bench-footprint")
            .bench_binary()
            .env("RUST_LOG", "warn,zundamon::app=info")
            .envs(extra)
            .start()
            .await;
        world.openai.set_delay(FOOTPRINT_MODEL_DELAY);
        let (discord, bot) = (&world.discord, &world.bot);
        // Settled at READY: no event marks the end of start-up's allocations.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = bot.pid();
        let status = status_of(pid);
        let rss = parse_kib(&status, "VmRSS:").unwrap_or(0);
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default();
        let parts = breakdown(pid);
        let get = |key: &str| {
            parts
                .iter()
                .filter(|(k, _)| k.starts_with(key))
                .map(|(_, v)| *v)
                .sum::<u64>()
        };

        let started = Instant::now();
        let mut sent = Vec::new();
        for channel in 0..FOOTPRINT_BURST {
            sent.push(
                discord
                    .send_interaction(
                        9_000 + channel,
                        5_000_000_000_000_000_001 + channel,
                        "bench",
                        "こんにちは",
                    )
                    .await,
            );
        }
        let edits = discord
            .wait_for_requests(
                |r| r.method == "PATCH" && r.path.contains("@original"),
                FOOTPRINT_BURST as usize,
                Duration::from_secs(60),
            )
            .await;
        let done = started.elapsed();
        let peak = parse_kib(&status_of(pid), "VmHWM:").unwrap_or(0);
        println!(
            "| {name} | {:.1} MiB | {threads} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} MiB | {:.2} s ({} of {FOOTPRINT_BURST}) |",
            rss as f64 / 1024.0,
            get("the binary") as f64 / 1024.0,
            get("shared") as f64 / 1024.0,
            get("[heap]") as f64 / 1024.0,
            get("anonymous") as f64 / 1024.0,
            peak as f64 / 1024.0,
            done.as_secs_f64(),
            edits.len(),
        );
        details.push((name, parts));
    }
    println!("\nbreakdown at READY (KiB):");
    for (name, parts) in details {
        println!("  {name}: {parts:?}");
    }
}

fn main() {
    let chosen = Chosen::from_args();
    let runtime = runtime();
    println!("zundamon eviction cost and footprint, {} CPUs", cpus());
    if chosen.wants("channels") {
        runtime.block_on(channels_part());
    }
    if chosen.wants("footprint") {
        runtime.block_on(footprint_part());
    }
}
