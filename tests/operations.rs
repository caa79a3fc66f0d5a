//! Operations end to end: the built binary against the loopback fakes, driven the way an
//! operator does — `zundamon healthcheck`, `SIGHUP` after editing the config file, `/metrics`.

mod support;

use std::time::Duration;

use support::bot::{run_once, temp_dir};
use support::world::{wait_until, World};

/// A world whose bot reads `config` from a file given in `ZUNDA_CONFIG`.
async fn world_with_config(name: &str, config: &str) -> World {
    World::builder(name).config(config).start().await
}

/// What an operator does and reads: edit the config file and send SIGHUP, scrape `/metrics`.
trait Operator {
    async fn reload(&self, config: &str);
    fn reload_lines(&self) -> usize;
    async fn metric(&self, name: &str) -> f64;
    async fn wait_metric(&self, name: &str, value: f64, within: Duration) -> bool;
}

impl Operator for World {
    /// Rewrites the config file and sends SIGHUP; waits for the reload's log line.
    async fn reload(&self, config: &str) {
        let before = self.reload_lines();
        std::fs::write(self.config_file(), config).unwrap();
        self.bot.signal("HUP");
        wait_until("a reload logged", Duration::from_secs(10), || {
            self.reload_lines() != before
        })
        .await;
    }

    fn reload_lines(&self) -> usize {
        self.bot
            .logs()
            .lines()
            .filter(|line| line.contains("configuration reload"))
            .count()
    }

    async fn metric(&self, name: &str) -> f64 {
        self.bot
            .metric(name)
            .await
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    }

    /// Polls a metric until it equals `value`.
    async fn wait_metric(&self, name: &str, value: f64, within: Duration) -> bool {
        self.bot.wait_metric(name, within, |v| v == value).await
    }
}

fn healthcheck(port: u16) -> (i32, String, String) {
    let port = port.to_string();
    run_once(
        &["healthcheck", "--timeout", "2"],
        &[("PORT", &port), ("ZUNDA_BIND_ADDR", "0.0.0.0")],
    )
}

#[tokio::test]
async fn healthcheck_exits_0_against_a_running_bot_and_1_otherwise() {
    let mut world = world_with_config("healthcheck", "").await;
    let port = world.bot.port;
    let (code, out, err) = healthcheck(port);
    assert_eq!(code, 0, "stdout {out}\nstderr {err}");

    world.bot.signal("TERM");
    assert!(world.bot.wait_exit(Duration::from_secs(20)).await.is_some());
    let (code, _, err) = healthcheck(port);
    assert_eq!(code, 1, "a stopped bot is unhealthy: {err}");
    assert!(err.contains("unhealthy"), "{err}");
}

#[test]
fn healthcheck_fails_on_a_port_that_answers_something_else() {
    // A listener that closes at once, like a crashed server behind the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            drop(stream);
        }
    });
    let (code, _, err) = healthcheck(port);
    assert_eq!(code, 1, "{err}");
    // A broken config file is unhealthy too (1), never Docker's reserved 2.
    let dir = temp_dir("healthcheck-badconfig");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[http\nport = 1").unwrap();
    let (code, _, _) = run_once(&["healthcheck", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sighup_with_a_shorter_idle_timeout_evicts_and_the_next_question_is_cold() {
    let world = world_with_config("reload-idle", "[channels]\nidle_secs = 600\n").await;
    world.ask(801, "最初の質問").await;
    assert_eq!(world.metric("zundamon_channel_actors").await, 1.0);
    assert_eq!(world.metric("zundamon_cold_questions_total").await, 0.0);

    let persona = world.dir.join("persona.md");
    std::fs::write(&persona, "あなたは再読み込みされたずんだもんなのだ。").unwrap();
    world
        .reload(&format!(
            "[channels]\nidle_secs = 1\n\n[openai]\nmodel = \"reloaded-model\"\n\n[persona]\nsystem_prompt_file = \"{}\"\n",
            persona.display()
        ))
        .await;
    assert!(
        world
            .wait_metric(
                "zundamon_channel_evictions_total{reason=\"idle\"}",
                1.0,
                Duration::from_secs(10)
            )
            .await,
        "the idle channel was not evicted on the new schedule; log:\n{}",
        world.bot.logs()
    );
    assert_eq!(world.metric("zundamon_channel_actors").await, 0.0);
    assert_eq!(
        world
            .metric("zundamon_config_reloads_total{outcome=\"ok\"}")
            .await,
        1.0
    );

    // The channel comes back from the store: a cold question, its load time observed.
    world.ask(801, "二つ目の質問").await;
    assert_eq!(world.metric("zundamon_cold_questions_total").await, 1.0);
    assert_eq!(world.metric("zundamon_cold_load_seconds_count").await, 1.0);
    // The model name and the persona changed live too.
    let last = world.openai.requests().pop().unwrap();
    assert_eq!(last["model"], "reloaded-model");
    assert!(
        last["messages"][0]["content"]
            .to_string()
            .contains("再読み込みされたずんだもん"),
        "persona not reloaded: {}",
        last["messages"][0]
    );
    world.bot.assert_no_secrets_logged();
}

#[tokio::test]
async fn sighup_with_a_lower_cap_trims_at_once_and_restart_only_changes_are_reported() {
    let world = world_with_config("reload-cap", "").await;
    for channel in [811, 812, 813] {
        world.ask(channel, "こんにちは").await;
    }
    assert_eq!(world.metric("zundamon_channel_actors").await, 3.0);

    world
        .reload("[channels]\nmax_channels = 1\n\n[store]\nretention_days = 7\n")
        .await;
    assert!(
        world
            .wait_metric("zundamon_channel_actors", 1.0, Duration::from_secs(5))
            .await,
        "the cap was not applied at once"
    );
    assert_eq!(
        world
            .metric("zundamon_channel_evictions_total{reason=\"cap\"}")
            .await,
        2.0
    );
    let logs = world.bot.logs();
    assert!(
        logs.contains("store.retention_days needs a restart"),
        "restart-only change not reported:\n{logs}"
    );
    assert_eq!(world.bot.get("/healthz").await.0, 200);
    assert_eq!(
        world
            .metric("zundamon_config_reloads_total{outcome=\"ok\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_is_counted() {
    let world = world_with_config("reload-invalid", "[channels]\nidle_secs = 600\n").await;
    world.ask(821, "こんにちは").await;

    // A typo'd key next to a value that would evict at once: nothing of it may apply.
    world
        .reload("[channels]\nidle_secs = 1\nmax_channel = 0\n")
        .await;
    let logs = world.bot.logs();
    assert!(
        logs.contains("configuration reload failed") && logs.contains("max_channel"),
        "the log must say what is wrong:\n{logs}"
    );
    assert_eq!(
        world
            .metric("zundamon_config_reloads_total{outcome=\"invalid\"}")
            .await,
        1.0
    );
    // Nothing marks an eviction that does not happen: wait well past the rejected 1 s idle
    // timeout (the channel's idle check runs about once a second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        world.metric("zundamon_channel_actors").await,
        1.0,
        "the old idle timeout must stay in force"
    );

    // A persona file that cannot be read is just as invalid.
    let persona = world.dir.join("missing-persona.md");
    world
        .reload(&format!(
            "[persona]\nsystem_prompt_file = \"{}\"\n",
            persona.display()
        ))
        .await;
    assert_eq!(
        world
            .metric("zundamon_config_reloads_total{outcome=\"invalid\"}")
            .await,
        2.0
    );
    // The bot still answers with the old settings.
    world.ask(821, "まだ答えてくれる？").await;
}
