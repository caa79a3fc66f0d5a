//! A world for end-to-end tests and benchmarks: the loopback fakes, a directory for the
//! database and config files, and the built bot running against them; with helpers to start
//! more processes on the same fakes and to read what users saw.
//!
//! ```ignore
//! let world = World::start("name", &[("ZUNDA_STREAM", "false")]).await;
//! let world = World::builder("name").database(&pg.url).config(TOML).start().await;
//! let second = world.second_process("second.db", &[]).await;
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bot::{bench_binary, bot_env, temp_dir, Bot};
use super::fake_discord::{FakeDiscord, RecordedRequest, SentInteraction};
use super::fake_openai::FakeOpenAi;
use super::fake_search::FakeSearch;

pub const USER: u64 = 5_000_000_000_000_000_001;

/// How long a bot may take from its start to a ready gateway session.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The three loopback upstreams a bot process runs against.
pub struct Fakes {
    pub discord: FakeDiscord,
    pub openai: FakeOpenAi,
    pub search: FakeSearch,
}

impl Fakes {
    pub async fn start() -> Fakes {
        Fakes {
            discord: FakeDiscord::start().await,
            openai: FakeOpenAi::start().await,
            search: FakeSearch::start().await,
        }
    }
}

pub struct World {
    pub discord: FakeDiscord,
    pub openai: FakeOpenAi,
    pub search: FakeSearch,
    pub dir: PathBuf,
    pub bot: Bot,
    /// The world's own settings: every process it starts gets them, before its own.
    settings: Vec<(String, String)>,
    binary: PathBuf,
}

/// How a [`World`] starts: see [`World::builder`].
pub struct WorldBuilder {
    name: String,
    settings: Vec<(String, String)>,
    config: Option<String>,
    binary: PathBuf,
    fakes: Option<Fakes>,
}

impl WorldBuilder {
    /// Sets (or overrides) one environment variable of the world's processes.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.settings.retain(|(k, _)| k != key);
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn envs(self, vars: &[(&str, &str)]) -> Self {
        vars.iter().fold(self, |builder, (k, v)| builder.env(k, v))
    }

    /// Keeps conversations and pending questions in PostgreSQL at `url` instead of SQLite.
    pub fn database(self, url: &str) -> Self {
        self.env("ZUNDA_DATABASE_URL", url)
    }

    /// Writes `toml` to the world's `zundamon.toml` and points `ZUNDA_CONFIG` at it.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Runs the binary benchmarks run (`ZUNDA_BENCH_BINARY`, or this build's).
    pub fn bench_binary(mut self) -> Self {
        self.binary = bench_binary();
        self
    }

    /// Runs the bot against `fakes` already set up (e.g. told to delay a request the bot makes
    /// as it starts).
    pub fn fakes(mut self, fakes: Fakes) -> Self {
        self.fakes = Some(fakes);
        self
    }

    /// Starts the fakes and the bot, and waits until its gateway session is ready.
    pub async fn start(self) -> World {
        let world = self.start_connecting().await;
        world.wait_ready(&world.bot).await;
        world
    }

    /// Starts the fakes and the bot; returns once its health server answers, before its gateway
    /// session is ready.
    pub async fn start_connecting(self) -> World {
        let fakes = match self.fakes {
            Some(fakes) => fakes,
            None => Fakes::start().await,
        };
        let Fakes {
            discord,
            openai,
            search,
        } = fakes;
        let dir = temp_dir(&self.name);
        let mut settings = self.settings;
        if let Some(toml) = &self.config {
            let file = dir.join("zundamon.toml");
            std::fs::write(&file, toml).unwrap();
            settings.insert(0, ("ZUNDA_CONFIG".into(), file.display().to_string()));
        }
        let env = layered(
            &discord,
            &openai,
            &search,
            &dir.join("zundamon.db"),
            &settings,
            &[],
        );
        let bot = Bot::start_binary(&self.binary, env).await;
        World {
            discord,
            openai,
            search,
            dir,
            bot,
            settings,
            binary: self.binary,
        }
    }
}

/// The fakes' environment for a process on `db`, then `settings`, then `extra`.
fn layered(
    discord: &FakeDiscord,
    openai: &FakeOpenAi,
    search: &FakeSearch,
    db: &Path,
    settings: &[(String, String)],
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut vars: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (key, value) in extra {
        vars.retain(|(k, _)| k != key);
        vars.push((key, value));
    }
    bot_env(discord, openai, search, db, &vars)
}

impl World {
    /// A world whose bot gets `extra` on top of the test defaults.
    pub async fn start(name: &str, extra: &[(&str, &str)]) -> World {
        Self::builder(name).envs(extra).start().await
    }

    pub fn builder(name: &str) -> WorldBuilder {
        WorldBuilder {
            name: name.to_owned(),
            settings: Vec::new(),
            config: None,
            binary: PathBuf::from(env!("CARGO_BIN_EXE_zundamon")),
            fakes: None,
        }
    }

    /// The environment of a process of this world on the SQLite file `db` (in the world's
    /// directory), with `extra` over the world's settings.
    pub fn env(&self, db: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        layered(
            &self.discord,
            &self.openai,
            &self.search,
            &self.dir.join(db),
            &self.settings,
            extra,
        )
    }

    /// Starts another process on the same fakes (and the same PostgreSQL, if any), with its
    /// SQLite file `db`; returns once its health server answers.
    pub async fn second_process(&self, db: &str, extra: &[(&str, &str)]) -> Bot {
        Bot::start_binary(&self.binary, self.env(db, extra)).await
    }

    /// Replaces the world's bot (after it exited or was killed) by a new process on the same
    /// database and settings, with `extra` over them; waits until its session is ready.
    pub async fn restart(&mut self, extra: &[(&str, &str)]) {
        self.bot = self.second_process("zundamon.db", extra).await;
        self.wait_ready(&self.bot).await;
    }

    async fn wait_ready(&self, bot: &Bot) {
        assert!(
            self.discord.wait_ready(READY_TIMEOUT).await,
            "the bot never identified; log:\n{}",
            bot.logs()
        );
    }

    /// The config file given in `ZUNDA_CONFIG` (see [`WorldBuilder::config`]).
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("zundamon.toml")
    }

    /// The successful edits and follow-ups of an interaction (not the callback).
    pub fn deliveries(&self, sent: &SentInteraction) -> Vec<RecordedRequest> {
        self.discord
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(&sent.token) && r.path.contains("/webhooks/"))
            .filter(|r| r.method != "GET" && r.status < 300)
            .collect()
    }

    pub async fn wait_delivered(
        &self,
        sent: &SentInteraction,
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.deliveries(sent);
            if !got.is_empty() || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The messages of one interaction: the callback, then edits and follow-ups (successful
    /// ones); waits for `parts` of them.
    pub async fn replies(&self, sent: &SentInteraction, parts: usize) -> Vec<RecordedRequest> {
        let token = sent.token.clone();
        let got = self
            .discord
            .wait_for_requests(
                |r| r.path.contains(&token) && r.method != "POST" || is_follow_up(r, &token),
                parts,
                Duration::from_secs(30),
            )
            .await;
        assert!(
            got.len() >= parts,
            "expected {parts} messages for the interaction, got {got:#?}\nbot log:\n{}",
            self.bot.logs()
        );
        got
    }

    /// Asks in `channel` and returns the content of the first message that answers (the first
    /// edit of a streamed answer; see [`ask`](Self::ask) for the final one).
    pub async fn first_answer(&self, channel: u64, question: &str) -> String {
        let sent = self
            .discord
            .send_interaction(channel, USER, "ずんだユーザー", question)
            .await;
        let edits = self.replies(&sent, 1).await;
        content(&edits[0])
    }

    /// The model requests whose framed question (last user message) contains `text`.
    pub fn model_requests_for(&self, text: &str) -> Vec<Value> {
        self.openai
            .requests()
            .into_iter()
            .filter(|body| {
                super::fake_openai::last_user_text(body)
                    .unwrap_or_default()
                    .contains(text)
            })
            .collect()
    }

    /// The interaction callback of `sent`, if the bot sent one.
    pub fn callback(&self, sent: &SentInteraction) -> Option<RecordedRequest> {
        self.discord
            .requests()
            .into_iter()
            .find(|r| r.is("POST", &format!("/interactions/{}/", sent.id)))
    }

    /// The callbacks Discord took (2xx) for an interaction.
    pub fn taken_callbacks(&self, sent: &SentInteraction) -> Vec<RecordedRequest> {
        taken_callbacks(&self.discord, sent)
    }

    /// The answers stored in the bot's SQLite file, oldest first (the window is written after
    /// delivery).
    pub fn stored_answers(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.db()).expect("open the bot's database");
        let mut statement = conn
            .prepare("SELECT answer FROM exchanges ORDER BY id")
            .unwrap();
        let answers = statement
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        answers
    }

    /// Waits up to `timeout` for a callback Discord took (2xx) for `sent`; the first one.
    pub async fn wait_taken_callback(
        &self,
        sent: &SentInteraction,
        timeout: Duration,
    ) -> RecordedRequest {
        let mut found = None;
        wait_until("a callback", timeout, || {
            found = self.taken_callbacks(sent).into_iter().next();
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    /// The bot's SQLite database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("zundamon.db")
    }

    /// Waits until the bot logged the final delivery of `sent` (a streamed answer is edited
    /// several times before): its answer, or the error reply.
    pub async fn wait_final(&self, sent: &SentInteraction) {
        self.bot.wait_final(sent.id).await;
    }

    /// Sends `question` in `channel` and waits until the model is asked it (to act while the
    /// answer is being written).
    pub async fn send_until_asked(&self, channel: u64, question: &str) -> SentInteraction {
        let sent = self
            .discord
            .send_interaction(channel, USER, "ずんだユーザー", question)
            .await;
        wait_until("the model to be asked", Duration::from_secs(10), || {
            !self.model_requests_for(question).is_empty()
        })
        .await;
        sent
    }

    /// Asks in `channel` and returns what the interaction's messages finally show.
    pub async fn ask(&self, channel: u64, question: &str) -> String {
        let sent = self
            .discord
            .send_interaction(channel, USER, "ずんだユーザー", question)
            .await;
        self.wait_final(&sent).await;
        self.discord.shown(&sent.token).concat()
    }

    /// The questions the model was asked, in the order it was asked them.
    pub fn asked(&self) -> Vec<String> {
        self.openai.requests().iter().map(asked_question).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn is_follow_up(r: &RecordedRequest, token: &str) -> bool {
    r.method == "POST" && r.path.ends_with(token) && r.path.contains("/webhooks/")
}

/// The callbacks Discord took (2xx) for an interaction.
pub fn taken_callbacks(discord: &FakeDiscord, sent: &SentInteraction) -> Vec<RecordedRequest> {
    discord
        .requests()
        .into_iter()
        .filter(|r| r.is("POST", &format!("/interactions/{}/", sent.id)) && r.status < 300)
        .collect()
}

/// Polls `done` until it holds; fails the test naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The question of a model request (the last paragraph of its last user message).
pub fn asked_question(body: &Value) -> String {
    let framed = super::fake_openai::last_user_text(body).unwrap_or_default();
    framed.rsplit("\n\n").next().unwrap_or_default().to_owned()
}

pub fn content(request: &RecordedRequest) -> String {
    request.body["content"]
        .as_str()
        .or_else(|| request.body["data"]["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}
