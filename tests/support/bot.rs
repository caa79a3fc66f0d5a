//! Runs the built `zundamon` binary as a child process against the loopback fakes, the way an
//! operator runs it: configuration from the environment, health server on an OS-assigned port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fake_discord::{FakeDiscord, GUILD_ID};
use super::fake_openai::FakeOpenAi;
use super::fake_search::FakeSearch;

/// Secrets given to the bot; tests assert they never reach its logs.
pub const BOT_TOKEN: &str = "test-bot-token-MUST-NOT-LEAK";
pub const API_KEY: &str = "sk-test-key-MUST-NOT-LEAK";

pub struct Bot {
    child: Child,
    pub port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

/// A fresh directory for one test's database.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "zundamon-e2e-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The environment of a bot wired to the fakes; `extra` overrides or adds variables.
pub fn bot_env(
    discord: &FakeDiscord,
    openai: &FakeOpenAi,
    search: &FakeSearch,
    db: &Path,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("DISCORD_BOT_TOKEN".into(), BOT_TOKEN.into()),
        ("DISCORD_GUILD_ID".into(), GUILD_ID.to_string()),
        ("DISCORD_API_BASE".into(), discord.base_url()),
        ("OPENAI_API_KEY".into(), API_KEY.into()),
        ("OPENAI_BASE_URL".into(), openai.base_url()),
        ("SEARCH_BASE_URL".into(), search.base_url()),
        ("ZUNDA_DB_PATH".into(), db.display().to_string()),
        ("ZUNDA_BIND_ADDR".into(), "127.0.0.1".into()),
        ("PORT".into(), "0".into()),
        ("ZUNDA_RATE_BURST".into(), "1000".into()),
        ("ZUNDA_LLM_MAX_RETRIES".into(), "1".into()),
        ("RUST_LOG".into(), "info,zundamon=debug".into()),
    ];
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }
    env
}

/// The binary benchmarks run: `ZUNDA_BENCH_BINARY`, or this build's `zundamon`.
#[allow(dead_code)]
pub fn bench_binary() -> std::path::PathBuf {
    std::env::var_os("ZUNDA_BENCH_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_zundamon").into())
}

impl Bot {
    /// Starts the bot and waits until its health server answers.
    pub async fn start(env: Vec<(String, String)>) -> Bot {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_zundamon")), env).await
    }

    /// For benchmarks: starts the binary named by `ZUNDA_BENCH_BINARY` (e.g. a release build run
    /// from a debug build of the bench), or this build's.
    #[allow(dead_code)]
    pub async fn start_bench(env: Vec<(String, String)>) -> Bot {
        Self::start_binary(&bench_binary(), env).await
    }

    /// Like [`Bot::start`], running the binary at `binary` (e.g. a release build).
    pub async fn start_binary(binary: &Path, env: Vec<(String, String)>) -> Bot {
        let mut child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the zundamon binary");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("health server listening on http://").nth(1) {
                        // `127.0.0.1:PORT`, then the end of the line or of a JSON string.
                        let port = rest.split(':').nth(1).and_then(|p| {
                            let digits: String =
                                p.chars().take_while(char::is_ascii_digit).collect();
                            digits.parse().ok()
                        });
                        let _ = port_tx.send(port.unwrap_or(0u16));
                    }
                    logs.lock().unwrap().push(line);
                }
            }
        });
        // Poll rather than block: the fakes run on this test's (single-threaded) runtime.
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            match port_rx.try_recv() {
                Ok(port) => break Ok(port),
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => break Err(()),
            }
        };
        let port = match port {
            Ok(port) => port,
            Err(()) => {
                let _ = child.kill();
                panic!(
                    "the bot did not start; its log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Bot {
            child,
            port,
            logs,
            http: {
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::new()
            },
        }
    }

    /// GET a path of the health server: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .await
            .unwrap_or_else(|err| panic!("health server answers: {err}"))
    }

    /// Like [`get`](Self::get), but an error when the server does not answer within 5 s.
    pub async fn try_get(&self, path: &str) -> Result<(u16, String), reqwest::Error> {
        let response = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// POST `body` to a path of the HTTP server with `headers`: (status, body).
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        // A connection failure is status 0 (callers assert on the status).
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return (0, format!("no answer: {err}")),
        };
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Polls `path` until it answers `status`; returns whether it did within `timeout`.
    pub async fn wait_status(&self, path: &str, status: u16, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.get(path).await.0 == status {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The value of a metric line starting with `name` in `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        metric_in(&body, name)
    }

    /// Polls `/metrics` until the metric `name` satisfies `done`; returns whether it did within
    /// `timeout`.
    pub async fn wait_metric(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(f64) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            // A process just woken (SIGCONT) or busy may miss a scrape: not yet, not a failure.
            if let Ok((_, body)) = self.try_get("/metrics").await {
                if metric_in(&body, name).is_some_and(&done) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits until this process logged the final delivery of interaction `id` (a streamed answer
    /// is edited several times before): its answer, or the error reply. Nothing more is sent for
    /// it after that line.
    pub async fn wait_final(&self, id: u64) {
        let marker = format!("interaction_id={id}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.logs().lines().any(|line| {
            line.contains(&marker)
                && (line.contains("answer delivered") || line.contains("error reply delivered"))
        }) {
            assert!(
                Instant::now() < deadline,
                "not delivered; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The bot's process id (e.g. to read its resident memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Kills the process with SIGKILL (no drain, nothing flushed) and waits until it is gone.
    #[allow(dead_code)]
    pub async fn kill_9(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(5))
            .await
            .expect("the process did not die after SIGKILL");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Asserts that no secret ever appeared in the bot's log.
    pub fn assert_no_secrets_logged(&self) {
        let logs = self.logs();
        assert!(!logs.contains(BOT_TOKEN), "bot token leaked into logs");
        assert!(!logs.contains(API_KEY), "API key leaked into logs");
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the metric line `name` in a `/metrics` text.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.split(' ').next() == Some(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls the `/metrics` of `bots` until each of `totals` (a metric line's name and a value)
/// sums to its value over them; returns whether they did within `timeout`.
pub async fn wait_totals(bots: &[&Bot], totals: &[(&str, f64)], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let mut reached = true;
        for (name, want) in totals {
            let mut sum = 0.0;
            for bot in bots {
                sum += bot.metric(name).await.unwrap_or(0.0);
            }
            reached &= sum == *want;
        }
        if reached {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the binary to completion with `args` and `env`: (exit code, stdout, stderr).
pub fn run_once(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_zundamon"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the zundamon binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`run_once`] on a blocking thread, so that fakes on the test's runtime can answer it.
pub async fn run_once_blocking(args: &[&str], env: Vec<(String, String)>) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_once(&args, &env)
    })
    .await
    .unwrap()
}
