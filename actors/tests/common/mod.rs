//! What the actor-level test suites share: a scripted answerer, a question, settings, and a
//! started supervisor.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use zundamon_actors::{
    AnswerError, Answerer, ChannelSettings, Channels, ConversationStore, Exchange, Question,
    SupervisorArgs,
};

/// Answers "A:{question}" after `delay`, recording the history it was given; panics on "panic",
/// fails on "fail".
#[derive(Default)]
pub struct Scripted {
    delay: Duration,
    seen: Mutex<Vec<(String, Vec<String>)>>,
}

impl Scripted {
    pub fn sleeping(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }

    /// Every question asked, with the window's questions it came with.
    pub fn seen(&self) -> Vec<(String, Vec<String>)> {
        self.seen.lock().unwrap().clone()
    }

    /// The window's questions of the last question asked.
    pub fn last_history(&self) -> Vec<String> {
        self.seen.lock().unwrap().last().unwrap().1.clone()
    }
}

#[async_trait]
impl Answerer for Scripted {
    async fn answer(&self, q: &Question, history: &[Exchange]) -> Result<String, AnswerError> {
        self.seen.lock().unwrap().push((
            q.text.clone(),
            history.iter().map(|e| e.question.clone()).collect(),
        ));
        tokio::time::sleep(self.delay).await;
        match q.text.as_str() {
            "panic" => panic!("scripted panic"),
            "fail" => Err(AnswerError::new("scripted failure")),
            text => Ok(format!("A:{text}")),
        }
    }
}

pub fn question(channel: u64, text: &str) -> Question {
    Question {
        channel_id: channel,
        user_id: 7,
        user_name: "tester".into(),
        text: text.into(),
        places: Vec::new(),
        attachments: Vec::new(),
    }
}

pub fn settings(idle_secs: u64, max_channels: usize) -> ChannelSettings {
    ChannelSettings {
        window_exchanges: 5,
        idle: Duration::from_secs(idle_secs),
        max_channels,
    }
}

pub async fn start(
    settings: ChannelSettings,
    answerer: Arc<dyn Answerer>,
    store: Arc<dyn ConversationStore>,
) -> Channels {
    Channels::start(SupervisorArgs::new(settings, answerer, store))
        .await
        .expect("supervisor starts")
}
