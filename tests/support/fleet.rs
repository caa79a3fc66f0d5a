//! A fleet of built bot processes in HTTP-interactions mode on one PostgreSQL schema, and a
//! signing client that POSTs `/zunda` to a chosen instance as Discord would.

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde_json::Value;

use super::bot::{bot_env, temp_dir, Bot};
use super::fake_discord::{interaction_payload, FakeDiscord, RecordedRequest, SentInteraction};
use super::fake_openai::{last_user_text, FakeOpenAi};
use super::fake_search::FakeSearch;
use super::http_load::{public_key_hex, signed, signing_key, unix_now};
use super::pg::PgSchema;
use super::world::{Fakes, USER};

pub struct Fleet {
    pub discord: FakeDiscord,
    pub openai: FakeOpenAi,
    pub search: FakeSearch,
    pub key: SigningKey,
    pub pg: PgSchema,
    pub dir: PathBuf,
    pub bots: Vec<Bot>,
    /// Environment given to instances started from now on, after the fleet's own.
    pub overrides: Vec<(String, String)>,
}

impl Fleet {
    pub async fn start(test: &str, instances: usize) -> Option<Fleet> {
        let pg = PgSchema::new(test).await?;
        let Fakes {
            discord,
            openai,
            search,
        } = Fakes::start().await;
        let key = signing_key();
        let dir = temp_dir("fleet");
        let mut fleet = Fleet {
            discord,
            openai,
            search,
            key,
            pg,
            dir,
            bots: Vec::new(),
            overrides: Vec::new(),
        };
        for _ in 0..instances {
            fleet.add_instance().await;
        }
        Some(fleet)
    }

    pub async fn add_instance(&mut self) {
        let env = self.instance_env(self.bots.len());
        self.bots.push(Bot::start(env).await);
    }

    /// Kills instance `n` (-9) and starts a new process in its place, with the same settings.
    #[allow(dead_code)]
    pub async fn restart(&mut self, n: usize) {
        self.bots[n].kill_9().await;
        let env = self.instance_env(n);
        self.bots[n] = Bot::start(env).await;
    }

    /// The environment of instance `n`.
    fn instance_env(&self, n: usize) -> Vec<(String, String)> {
        let public = public_key_hex(&self.key);
        let host = format!("instance{n}");
        let mut extra = vec![
            ("DISCORD_PUBLIC_KEY", public.as_str()),
            ("ZUNDA_DATABASE_URL", self.pg.url.as_str()),
            ("ZUNDA_FLEET_LEASE_SECS", "2"),
            ("HOSTNAME", host.as_str()),
        ];
        for (key, value) in &self.overrides {
            extra.retain(|(k, _)| k != key);
            extra.push((key.as_str(), value.as_str()));
        }
        bot_env(
            &self.discord,
            &self.openai,
            &self.search,
            &self.dir.join(format!("sqlite-{n}.db")),
            &extra,
        )
    }

    /// Signs and POSTs `/zunda question` in `channel` to instance `to`; the HTTP reply's content.
    pub async fn ask(&self, to: usize, channel: u64, question: &str) -> (SentInteraction, String) {
        let sent = self.discord.register_acknowledged_interaction(channel);
        let payload = interaction_payload(sent.id, &sent.token, channel, USER, "ずんだ", question);
        let reply = self.post(to, &payload).await;
        (
            sent,
            reply["data"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// Like [`ask`](Self::ask), but `None` when the instance does not answer 200 (a load
    /// balancer would try another).
    #[allow(dead_code)]
    pub async fn try_ask(
        &self,
        to: usize,
        channel: u64,
        question: &str,
    ) -> Option<(SentInteraction, String)> {
        let sent = self.discord.register_acknowledged_interaction(channel);
        let payload = interaction_payload(sent.id, &sent.token, channel, USER, "ずんだ", question);
        let (status, reply) = self.signed_post(to, &payload).await;
        if status != 200 {
            return None;
        }
        let reply: Value = serde_json::from_str(&reply).ok()?;
        let content = reply["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Some((sent, content))
    }

    /// Posts a signed interaction to instance `to`; its HTTP response (200 expected).
    pub async fn post(&self, to: usize, payload: &Value) -> Value {
        let (status, reply) = self.signed_post(to, payload).await;
        assert_eq!(status, 200, "{reply}");
        serde_json::from_str(&reply).unwrap()
    }

    async fn signed_post(&self, to: usize, payload: &Value) -> (u16, String) {
        let body = payload.to_string();
        let headers = signed(&self.key, unix_now(), &body);
        self.bots[to].post("/interactions", &headers, body).await
    }

    /// The edits of `sent`'s original message (its answer).
    pub fn answers(&self, sent: &SentInteraction) -> Vec<RecordedRequest> {
        self.discord
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.contains(&sent.token))
            .collect()
    }

    pub async fn wait_answered(&self, sent: &SentInteraction, timeout: Duration) -> bool {
        let token = sent.token.clone();
        let got = self
            .discord
            .wait_for_requests(
                |r| r.method == "PATCH" && r.path.contains(&token),
                1,
                timeout,
            )
            .await;
        !got.is_empty()
    }

    /// The model requests whose question contains `text`.
    pub fn model_requests_for(&self, text: &str) -> Vec<Value> {
        self.openai
            .requests()
            .into_iter()
            .filter(|body| last_user_text(body).unwrap_or_default().contains(text))
            .collect()
    }

    pub fn logs(&self) -> String {
        self.bots
            .iter()
            .enumerate()
            .map(|(n, bot)| format!("--- instance {n}\n{}", bot.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn finish(self) {
        for bot in &self.bots {
            bot.assert_no_secrets_logged();
        }
        let Fleet { pg, dir, bots, .. } = self;
        drop(bots);
        let _ = std::fs::remove_dir_all(&dir);
        pg.drop_schema().await;
    }
}
