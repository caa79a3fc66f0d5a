//! End-to-end: every accepted question is answered exactly once, in its channel's order, whatever
//! happens to the process or the network. The built `zundamon` binary runs against the loopback
//! fakes; assertions are on what users see (Discord REST calls) and on the model requests.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bot::{bot_env, temp_dir, Bot};
use support::fake_discord::{FakeDiscord, RecordedRequest, SentInteraction};
use support::fake_openai::FakeOpenAi;
use support::fake_search::FakeSearch;

const USER: u64 = 5_000_000_000_000_000_001;

struct World {
    discord: FakeDiscord,
    openai: FakeOpenAi,
    search: FakeSearch,
    dir: PathBuf,
    bot: Bot,
}

impl World {
    async fn start(name: &str, extra: &[(&str, &str)]) -> World {
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

    fn env(&self, db: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        bot_env(
            &self.discord,
            &self.openai,
            &self.search,
            &self.dir.join(db),
            extra,
        )
    }

    /// The successful edits and follow-ups of an interaction (not the callback).
    fn deliveries(&self, sent: &SentInteraction) -> Vec<RecordedRequest> {
        self.discord
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(&sent.token) && r.path.contains("/webhooks/"))
            .filter(|r| r.method != "GET" && r.status < 300)
            .collect()
    }

    async fn wait_delivered(
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

    /// The questions the model was asked, in the order it was asked them.
    fn asked(&self) -> Vec<String> {
        self.openai.requests().iter().map(asked_question).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The question of a model request (the last paragraph of its last user message).
fn asked_question(body: &Value) -> String {
    let framed = support::fake_openai::last_user_text(body).unwrap_or_default();
    framed.rsplit("\n\n").next().unwrap_or_default().to_owned()
}

fn content(request: &RecordedRequest) -> String {
    request.body["content"]
        .as_str()
        .or_else(|| request.body["data"]["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn questions_dispatched_in_one_gateway_write_are_asked_in_dispatch_order() {
    let world = World::start("order-burst", &[]).await;
    for round in 0..20u64 {
        let channel = 7_000 + round;
        let questions: Vec<String> = (1..=5).map(|n| format!("r{round}-q{n}")).collect();
        let refs: Vec<&str> = questions.iter().map(String::as_str).collect();
        let sent = world
            .discord
            .send_interactions_at_once(channel, USER, &refs)
            .await;
        for interaction in &sent {
            let delivered = world
                .wait_delivered(interaction, Duration::from_secs(30))
                .await;
            assert!(
                !delivered.is_empty(),
                "round {round}: no answer; log:\n{}",
                world.bot.logs()
            );
        }
        let asked: Vec<String> = world
            .asked()
            .into_iter()
            .filter(|q| q.starts_with(&format!("r{round}-")))
            .collect();
        assert_eq!(
            asked, questions,
            "round {round}: asked out of dispatch order"
        );
    }
}
