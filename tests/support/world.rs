//! A world for end-to-end tests: the loopback fakes, a database directory, and the built bot
//! running against them; with helpers to read what users saw.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bot::{bot_env, temp_dir, Bot};
use super::fake_discord::{FakeDiscord, RecordedRequest, SentInteraction};
use super::fake_openai::FakeOpenAi;
use super::fake_search::FakeSearch;

pub const USER: u64 = 5_000_000_000_000_000_001;

pub struct World {
    pub discord: FakeDiscord,
    pub openai: FakeOpenAi,
    pub search: FakeSearch,
    pub dir: PathBuf,
    pub bot: Bot,
}

impl World {
    pub async fn start(name: &str, extra: &[(&str, &str)]) -> World {
        let discord = FakeDiscord::start().await;
        let openai = FakeOpenAi::start().await;
        let search = FakeSearch::start().await;
        let dir = temp_dir(name);
        let bot = Bot::start(bot_env(
            &discord,
            &openai,
            &search,
            &dir.join("zundamon.db"),
            extra,
        ))
        .await;
        assert!(
            discord.wait_ready(Duration::from_secs(20)).await,
            "the bot never identified; log:\n{}",
            bot.logs()
        );
        World {
            discord,
            openai,
            search,
            dir,
            bot,
        }
    }

    pub fn env(&self, db: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        bot_env(
            &self.discord,
            &self.openai,
            &self.search,
            &self.dir.join(db),
            extra,
        )
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

    /// The bot's SQLite database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("zundamon.db")
    }

    /// Waits until the bot logged the final delivery of `sent` (a streamed answer is edited
    /// several times before): its answer, or the error reply.
    pub async fn wait_final(&self, sent: &SentInteraction) {
        let marker = format!("interaction_id={}", sent.id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.bot.logs().lines().any(|line| {
            line.contains(&marker)
                && (line.contains("answer delivered") || line.contains("error reply delivered"))
        }) {
            assert!(
                Instant::now() < deadline,
                "not delivered; log:\n{}",
                self.bot.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
