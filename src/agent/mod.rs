//! The agent that answers a question as Zundamon: it assembles the prompt (persona, the channel's
//! window, the framed question), lets the chat model call `web_search` for a bounded number of
//! rounds, and returns the final answer. It implements the actor crate's [`Answerer`], so a
//! channel actor can use it without knowing about OpenAI or DuckDuckGo.
//!
//! - [`llm`]: the chat completion client (timeouts, retries, a global request limit);
//! - [`response`], [`stream`], [`reasoning`]: lenient reading of plain and streamed responses,
//!   with reasoning kept out of answers;
//! - [`check`]: `zundamon check-model`, a plain-words report on the configured server;
//! - [`search`]: the DuckDuckGo tool (parsing, caching, untrusted-data framing);
//! - [`prompt`]: the message order and the question framing;
//! - `tool_loop`: the rounds of tool calls that end in an answer.

pub mod check;
pub mod guard;
pub mod llm;
pub mod prompt;
pub mod reasoning;
pub mod response;
pub mod search;
pub mod sources;
pub mod stream;
mod tool_loop;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use thiserror::Error;
use tracing::{info, warn};
use zundamon_actors::{AnswerError, Answerer, Exchange, Live, Progress, Question};

use crate::config::{Config, ToolMode};
use crate::metrics::Metrics;
use llm::{ChatClient, LlmError};
use search::{SearchError, WebSearch};

/// The current time, injectable so tests can pin the time the model is told.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Why the agent could not be built or could not answer. Texts are for operators' logs; they name
/// the failing upstream and never contain the API key.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("timed out after {0}s (ZUNDA_ANSWER_TIMEOUT_SECS)")]
    Timeout(u64),
    #[error("the chat model returned an empty answer")]
    EmptyAnswer,
}

/// The settings of one answer, copied out of [`Config`] at construction.
#[derive(Debug, Clone)]
struct AgentSettings {
    model: String,
    temperature: f32,
    max_tool_rounds: u32,
    answer_timeout: Duration,
    persona: String,
    closing_reminder: String,
    time_zone: Tz,
    tool_mode: ToolMode,
    persona_guard: bool,
}

/// Answers questions in Zundamon's voice with the configured chat model and web search.
pub struct ZundaAgent {
    llm: ChatClient,
    search: WebSearch,
    settings: AgentSettings,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Set once the server rejected a request for carrying tools (`ZUNDA_TOOLS=auto`): this
    /// process then asks without them.
    no_tool_support: AtomicBool,
}

impl std::fmt::Debug for ZundaAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZundaAgent")
            .field("llm", &self.llm)
            .field("search", &self.search)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ZundaAgent {
    /// The agent of `config`, telling the model the wall-clock time.
    ///
    /// A rustls crypto provider must be installed first (`main` installs ring's).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, AgentError> {
        Self::with_clock(config, metrics, Arc::new(Utc::now))
    }

    /// Like [`ZundaAgent::new`], with the time taken from `clock`.
    pub fn with_clock(
        config: &Config,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Self, AgentError> {
        let openai = &config.openai;
        Ok(Self {
            llm: ChatClient::new(openai, metrics.clone())?,
            search: WebSearch::new(&config.search, metrics.clone())?,
            settings: AgentSettings {
                model: openai.model.clone(),
                temperature: openai.temperature,
                max_tool_rounds: openai.max_tool_rounds,
                answer_timeout: Duration::from_secs(openai.answer_timeout_secs.max(1)),
                persona: config.persona.system_prompt.clone(),
                closing_reminder: config.persona.closing_reminder.clone(),
                time_zone: config.persona.tz(),
                tool_mode: openai.tool_mode(),
                persona_guard: config.persona.guard,
            },
            clock,
            metrics,
            no_tool_support: AtomicBool::new(false),
        })
    }

    /// Answers `question` given the channel's earlier exchanges (oldest first), within the
    /// configured answer timeout.
    pub async fn answer_question(
        &self,
        question: &Question,
        history: &[Exchange],
    ) -> Result<String, AgentError> {
        self.answer_with_progress(question, history, None).await
    }

    /// Like [`answer_question`](Self::answer_question), showing the work on `progress`: the
    /// search status and the text as the model streams it. The answer ends with a 「参考」 line
    /// when search results were used.
    pub async fn answer_with_progress(
        &self,
        question: &Question,
        history: &[Exchange],
        progress: Option<&Progress>,
    ) -> Result<String, AgentError> {
        let started = std::time::Instant::now();
        let budget = self.settings.answer_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let answering = async {
            let turn = self.run_turn(question, history, deadline, progress).await?;
            let answer = sources::strip_sources(&turn.answer).to_owned();
            let answer = self.guard_voice(answer, deadline, progress).await;
            let line = sources::sources_line(&turn.urls, &answer);
            Ok(sources::with_sources(&answer, line.as_deref()))
        };
        let result = tokio::time::timeout(budget, answering)
            .await
            .unwrap_or(Err(AgentError::Timeout(budget.as_secs())));
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(_) => info!(
                channel_id = question.channel_id,
                user_id = question.user_id,
                elapsed_ms,
                "answered"
            ),
            Err(err) => warn!(
                channel_id = question.channel_id,
                user_id = question.user_id,
                elapsed_ms,
                error = %err,
                "no answer"
            ),
        }
        result
    }
}

impl ZundaAgent {
    /// The persona guard: an answer without Zundamon's voice is rewritten once. A failed or
    /// still voiceless rewrite keeps the original (logged).
    async fn guard_voice(
        &self,
        answer: String,
        deadline: tokio::time::Instant,
        progress: Option<&Progress>,
    ) -> String {
        let settings = &self.settings;
        if !settings.persona_guard || guard::has_voice(&answer) {
            return answer;
        }
        if let Some(progress) = progress {
            progress.send_replace(Live::Status(crate::voice::REWRITING_STATUS.to_owned()));
        }
        let request = guard::rewrite_request(
            &settings.model,
            settings.temperature,
            &settings.persona,
            &answer,
        );
        match self.llm.complete(&request, deadline).await {
            Ok(message) => {
                let rewritten = message.content.unwrap_or_default();
                self.metrics.persona_rewrite();
                if guard::has_voice(&rewritten) {
                    info!("the answer lacked Zundamon's voice: rewritten");
                    rewritten
                } else {
                    warn!("the rewrite still lacks Zundamon's voice: keeping the original");
                    answer
                }
            }
            Err(err) => {
                warn!(error = %err, "cannot rewrite the answer in Zundamon's voice: keeping it");
                answer
            }
        }
    }
}

#[async_trait]
impl Answerer for ZundaAgent {
    async fn answer(
        &self,
        question: &Question,
        history: &[Exchange],
    ) -> Result<String, AnswerError> {
        self.answer_question(question, history)
            .await
            .map_err(|err| AnswerError::new(err.to_string()))
    }

    async fn answer_live(
        &self,
        question: &Question,
        history: &[Exchange],
        progress: &Progress,
    ) -> Result<String, AnswerError> {
        self.answer_with_progress(question, history, Some(progress))
            .await
            .map_err(|err| AnswerError::new(err.to_string()))
    }

    fn remembered(&self, answer: &str) -> String {
        sources::strip_sources(answer).to_owned()
    }
}
