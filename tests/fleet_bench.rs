//! Figures for BENCHMARKS.md, not tests (they assert nothing about speed and are `#[ignore]`d):
//!
//! ```text
//! ZUNDA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test -p zundamon --test fleet_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! - one channel: 30 questions to ONE channel, POSTed back to back (each waits only for its
//!   HTTP reply), fake model answering in 50 ms: questions per second from the first POST to the
//!   last answer delivered, for one process on SQLite, one fleet instance on PostgreSQL, and three
//!   fleet instances behind a round-robin front.
//! - takeover: the channel's holder is killed (-9) while the model answers (1 s); time from the
//!   kill to the question's answer delivered by the survivor, for leases of 2 s and 5 s.

mod support;

use std::time::{Duration, Instant};

use support::fleet::Fleet;

const QUESTIONS: usize = 30;
const MODEL: Duration = Duration::from_millis(50);

async fn one_channel(label: &str, instances: usize, overrides: &[(&str, &str)]) {
    let Some(mut fleet) = Fleet::start(&format!("fleet_bench::{label}"), 0).await else {
        return;
    };
    // The whole burst waits in one channel: above the default queue limit (8) on purpose.
    fleet.overrides = [("ZUNDA_MAX_QUEUED_PER_CHANNEL", "64")]
        .iter()
        .chain(overrides)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for _ in 0..instances {
        fleet.add_instance().await;
    }
    fleet.openai.set_delay(MODEL);
    // Warm up (connections, the channel's lease) with another channel.
    let (warm, _) = fleet.ask(0, 1, "準備運動なのだ").await;
    assert!(fleet.wait_answered(&warm, Duration::from_secs(30)).await);

    let channel = 8_800;
    let started = Instant::now();
    let mut sent = Vec::new();
    for n in 0..QUESTIONS {
        let (interaction, _) = fleet
            .ask(n % instances, channel, &format!("ベンチの質問{n:02}なのだ"))
            .await;
        sent.push(interaction);
    }
    let accepted = started.elapsed();
    for interaction in &sent {
        assert!(
            fleet
                .wait_answered(interaction, Duration::from_secs(60))
                .await,
            "unanswered\n{}",
            fleet.logs()
        );
    }
    let done = started.elapsed();
    let rate = QUESTIONS as f64 / done.as_secs_f64();
    let ideal = 1.0 / MODEL.as_secs_f64();
    println!(
        "one channel | {label} | {instances} instance(s) | {QUESTIONS} accepted in {:.0} ms | all answered in {:.0} ms | {rate:.1} q/s | {:.0}% of the model's {ideal:.0} q/s",
        accepted.as_secs_f64() * 1000.0,
        done.as_secs_f64() * 1000.0,
        100.0 * rate / ideal
    );
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_one_channel_throughput() {
    // The HTTP endpoint without PostgreSQL: one process answers everything itself.
    one_channel("one process, SQLite", 1, &[("ZUNDA_DATABASE_URL", "")]).await;
    one_channel("fleet of one, PostgreSQL", 1, &[]).await;
    one_channel("fleet of three, PostgreSQL", 3, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_takeover_after_kill() {
    for lease in ["2", "5"] {
        let mut times = Vec::new();
        for round in 0..3 {
            let Some(mut fleet) = Fleet::start("fleet_bench::takeover", 0).await else {
                return;
            };
            fleet.overrides = vec![("ZUNDA_FLEET_LEASE_SECS".into(), lease.into())];
            fleet.add_instance().await;
            fleet.add_instance().await;
            let channel = 9_000 + round;
            let (first, _) = fleet.ask(0, channel, "最初なのだ").await;
            assert!(fleet.wait_answered(&first, Duration::from_secs(30)).await);
            fleet.openai.set_delay(Duration::from_secs(1));
            let (slow, _) = fleet.ask(1, channel, "落ちる質問なのだ").await;
            while fleet.model_requests_for("落ちる質問").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let holder = (0..2)
                .find(|&n| {
                    fleet.bots[n].logs().lines().any(|line| {
                        line.contains(&format!("channel_id={channel}"))
                            && line.contains("took a channel")
                    })
                })
                .unwrap();
            fleet.bots[holder].signal("KILL");
            let killed = Instant::now();
            fleet.openai.set_delay(Duration::ZERO);
            assert!(fleet.wait_answered(&slow, Duration::from_secs(60)).await);
            times.push(killed.elapsed());
            fleet.finish().await;
        }
        times.sort();
        println!(
            "takeover | lease {lease} s | kill -9 → answer delivered: min {:.2} s, median {:.2} s, max {:.2} s",
            times[0].as_secs_f64(),
            times[1].as_secs_f64(),
            times[2].as_secs_f64()
        );
    }
}
