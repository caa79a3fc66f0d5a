//! The public HTTP port under slow clients: the built `zundamon` binary (with
//! `DISCORD_PUBLIC_KEY`, against the loopback fakes of `tests/support`) while hundreds of
//! connections trickle their headers one byte a second or hold a request body open.
//!
//! A well-behaved client meanwhile sends, every 100 ms, each on a new connection: `GET /`,
//! `GET /healthz` and a signed PING to `POST /interactions`; and every 500 ms a signed `/zunda`
//! command. Printed per scenario: latency p50/p95/p99/max of the probes and of the commands,
//! failed requests, the most connections held (`zundamon_http_connections`, and the sockets the
//! process holds from /proc/PID/fd — listeners and upstream connections included — both sampled
//! every 100 ms), connections shed at the cap (`zundamon_http_connections_shed_total`), the longest a
//! trickling connection stayed open, and the bot's resident memory before, at peak and after.
//!
//! Scenarios (each a fresh bot, 10 s of load after 2 s of ramp-up):
//! - **quiet**: no slow clients (the baseline);
//! - **slow 500**: 400 header tricklers + 100 body holders, each replaced 1 s after the server
//!   ends it, default limits (cap 256, header timeout 10 s, body 5 s, idle 5 s);
//! - **slow 500, cap 1024**: the same with the cap above the load (only the timeouts act);
//! - **storm 500**: like slow 500, but every ended connection is replaced at once.
//!
//! Run with `cargo bench --bench http_port --profile dev` (debug build, like the tests) or
//! `cargo bench --bench http_port` (release). Pass a scenario name fragment after `--` to run
//! only matching ones (e.g. `-- storm`). Prints tables, never asserts speed (STYLE.md rule 10).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::bench::{runtime, Chosen};
use support::fake_discord::interaction_payload;
use support::http_load::{
    fresh_client, open_sockets, percentile, public_key_hex, rss_kib, signed, signing_key, unix_now,
    SlowClients, PING,
};
use support::world::World;

const RAMP: Duration = Duration::from_secs(2);
const LOAD: Duration = Duration::from_secs(10);
const USER: u64 = 5_000_000_000_000_000_001;

struct Scenario {
    name: &'static str,
    tricklers: usize,
    holders: usize,
    reconnect: Duration,
    env: &'static [(&'static str, &'static str)],
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "quiet",
        tricklers: 0,
        holders: 0,
        reconnect: Duration::from_secs(1),
        env: &[],
    },
    Scenario {
        name: "slow 500",
        tricklers: 400,
        holders: 100,
        reconnect: Duration::from_secs(1),
        env: &[],
    },
    Scenario {
        name: "slow 500, cap 1024",
        tricklers: 400,
        holders: 100,
        reconnect: Duration::from_secs(1),
        env: &[("ZUNDA_HTTP_MAX_CONNECTIONS", "1024")],
    },
    Scenario {
        name: "storm 500",
        tricklers: 400,
        holders: 100,
        reconnect: Duration::ZERO,
        env: &[],
    },
];

fn main() {
    let chosen = Chosen::from_args();
    let runtime = runtime();
    println!(
        "| scenario | probes | probe p50 | p95 | p99 | max | failed | commands | command p50 | max | failed | held max | sockets max | evicted | refused | longest trickle | RSS before → peak → after | sockets after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for scenario in SCENARIOS.iter().filter(|s| chosen.matches(s.name)) {
        runtime.block_on(run(scenario));
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.split(' ').next() == Some(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn run(scenario: &Scenario) {
    let key = signing_key();
    let world = World::builder("bench-http")
        .env("DISCORD_PUBLIC_KEY", &public_key_hex(&key))
        .env("ZUNDA_RATE_BURST", "100000")
        .env("RUST_LOG", "warn,zundamon::app=info")
        .envs(scenario.env)
        .start()
        .await;
    let (discord, bot) = (&world.discord, &world.bot);
    let addr = SocketAddr::from(([127, 0, 0, 1], bot.port));
    let client = fresh_client();
    let rss_before = rss_kib(bot.pid()).unwrap_or(0);

    let load = SlowClients::start(
        addr,
        scenario.tricklers,
        scenario.holders,
        Duration::from_secs(1),
        scenario.reconnect,
    );
    tokio::time::sleep(RAMP).await;

    // The scraper samples the gauge and memory on its own, so a slow probe does not hide a peak.
    let sampler = tokio::spawn({
        let client = client.clone();
        let pid = bot.pid();
        async move {
            let (mut held, mut rss, mut sockets) = (0f64, 0u64, 0usize);
            let until = Instant::now() + LOAD;
            while Instant::now() < until {
                if let Ok(response) = client.get(format!("http://{addr}/metrics")).send().await {
                    if let Ok(text) = response.text().await {
                        held = held.max(metric(&text, "zundamon_http_connections"));
                    }
                }
                rss = rss.max(rss_kib(pid).unwrap_or(0));
                sockets = sockets.max(open_sockets(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (held, rss, sockets)
        }
    });

    let (mut probes, mut commands) = (Vec::new(), Vec::new());
    let (mut probe_failures, mut command_failures) = (0usize, 0usize);
    let until = Instant::now() + LOAD;
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        for path in ["/", "/healthz"] {
            let started = Instant::now();
            match client.get(format!("http://{addr}{path}")).send().await {
                Ok(response) if response.status().is_success() => probes.push(started.elapsed()),
                _ => probe_failures += 1,
            }
        }
        let started = Instant::now();
        let mut request = client
            .post(format!("http://{addr}/interactions"))
            .body(PING);
        for (name, value) in signed(&key, unix_now(), PING) {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => probes.push(started.elapsed()),
            _ => probe_failures += 1,
        }
        if round % 5 == 0 {
            let sent = discord.register_acknowledged_interaction(2000 + round);
            let payload = interaction_payload(
                sent.id,
                &sent.token,
                2000 + round,
                USER,
                "bench",
                "混雑の中の質問なのだ",
            )
            .to_string();
            let mut request = client
                .post(format!("http://{addr}/interactions"))
                .body(payload.clone());
            for (name, value) in signed(&key, unix_now(), &payload) {
                request = request.header(name, value);
            }
            let started = Instant::now();
            match request.send().await {
                Ok(response) if response.status().is_success() => commands.push(started.elapsed()),
                _ => command_failures += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (held, rss_peak, sockets) = sampler.await.unwrap();
    let report = load.stop().await;
    tokio::time::sleep(Duration::from_secs(6)).await; // past the idle timeout
    let rss_after = rss_kib(bot.pid()).unwrap_or(0);
    let sockets_after = open_sockets(bot.pid()).unwrap_or(0);
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evicted = metric(
        &text,
        "zundamon_http_connections_shed_total{reason=\"evicted\"}",
    );
    let refused = metric(
        &text,
        "zundamon_http_connections_shed_total{reason=\"refused\"}",
    );
    let longest = report.longest_trickle_ms.load(Ordering::Relaxed);
    println!(
        "| {} | {} | {} | {} | {} | {} | {probe_failures} | {} | {} | {} | {command_failures} | {held} | {sockets} | {evicted} | {refused} | {} | {:.1} → {:.1} → {:.1} MiB | {sockets_after} |",
        scenario.name,
        probes.len(),
        ms(percentile(&mut probes, 50.0)),
        ms(percentile(&mut probes, 95.0)),
        ms(percentile(&mut probes, 99.0)),
        ms(percentile(&mut probes, 100.0)),
        commands.len(),
        ms(percentile(&mut commands, 50.0)),
        ms(percentile(&mut commands, 100.0)),
        if longest == 0 { "—".to_owned() } else { format!("{:.1} s", longest as f64 / 1000.0) },
        rss_before as f64 / 1024.0,
        rss_peak.max(rss_before) as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
}
