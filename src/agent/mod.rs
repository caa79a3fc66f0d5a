//! The agent that answers a question as Zundamon: it assembles the prompt (persona, the channel's
//! window, the framed question), lets the chat model call `web_search` for a bounded number of
//! rounds, and returns the final answer. It implements the actor crate's [`Answerer`], so a
//! channel actor can use it without knowing about OpenAI or DuckDuckGo.
//!
//! - [`llm`]: the chat completion client (timeouts, retries, a global request limit, the
//!   answer length limit), and [`llm::error`]: what each failure means for the next attempt;
//! - [`context`]: the model's context window as far as it can be known (overflow messages,
//!   token estimates);
//! - [`response`], [`stream`], [`reasoning`]: lenient reading of plain and streamed responses,
//!   with reasoning kept out of answers;
//! - [`check`]: `zundamon check-model`, a plain-words report on the configured server;
//! - [`search`]: the DuckDuckGo tool (parsing, caching, untrusted-data framing);
//! - [`prompt`]: the message order and the question framing;
//! - `tool_loop`: the rounds of tool calls that end in an answer.

mod ask;
pub mod attachments;
pub mod check;
pub mod context;
pub mod guard;
pub mod llm;
pub mod places;
pub mod prompt;
pub mod reasoning;
pub mod response;
pub mod search;
pub mod sources;
pub mod stream;
mod tool_loop;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use thiserror::Error;
use tracing::{info, warn};
use zundamon_actors::{AnswerError, Answerer, Exchange, Live, Progress, Question};

use crate::config::{Config, OpenAiConfig, ToolMode, DEFAULT_MODEL};
use crate::ops::metrics::Metrics;
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
    /// Whether web search may be offered where the question was asked.
    search: bool,
}

/// What this agent's server has shown it cannot do, learned from its answers and kept for
/// every later question (shared by the agent's per-place copies).
#[derive(Debug, Default)]
struct Learned {
    /// Set once the server rejected a request for carrying tools (`ZUNDA_TOOLS=auto`): this
    /// process then asks without them.
    no_tool_support: AtomicBool,
    /// Set once the server could not stream a request that offered tools (an empty body, or a
    /// refusal naming `tool_choice` or streaming): rounds that offer tools are then asked
    /// without streaming.
    no_streamed_tools: AtomicBool,
    /// The model's context length in tokens, once a server's overflow message stated it (0:
    /// unknown).
    known_context: AtomicU32,
}

/// Answers questions in Zundamon's voice with the configured chat model and web search.
pub struct ZundaAgent {
    llm: Arc<ChatClient>,
    search: Arc<WebSearch>,
    settings: AgentSettings,
    clock: Clock,
    metrics: Arc<Metrics>,
    learned: Arc<Learned>,
    /// Tokens the server reported for this agent's requests (a per-question copy counts one
    /// answer's cost).
    spent: AtomicU64,
    /// A per-question copy's attachments: images (`data:` URLs) shown with the question, and
    /// the fenced text of its files, read after it.
    images: Vec<String>,
    files: String,
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
        let search = Arc::new(WebSearch::new(&config.search, metrics.clone())?);
        Self::for_model(
            config,
            &config.openai,
            DEFAULT_MODEL,
            search,
            metrics,
            clock,
        )
    }

    /// The agent answering with model `name` (`openai`: its client settings), sharing `search`.
    pub fn for_model(
        config: &Config,
        openai: &OpenAiConfig,
        name: &str,
        search: Arc<WebSearch>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Self, AgentError> {
        Ok(Self {
            llm: Arc::new(ChatClient::named(openai, name, metrics.clone())?),
            search,
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
                search: true,
            },
            clock,
            metrics,
            learned: Arc::new(Learned::default()),
            spent: AtomicU64::new(0),
            images: Vec::new(),
            files: String::new(),
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
        let result = async {
            let turn = tokio::time::timeout_at(
                deadline,
                self.run_turn(question, history, deadline, progress),
            )
            .await
            .unwrap_or(Err(AgentError::Timeout(budget.as_secs())))?;
            let answer = sources::strip_sources(&turn.answer).to_owned();
            // The rewrite is bounded by the same deadline, and running out of time keeps the
            // answer the user was already reading.
            let answer = tokio::time::timeout_at(
                deadline,
                self.guard_voice(answer.clone(), &turn, deadline, progress),
            )
            .await
            .unwrap_or_else(|_| {
                warn!("no time left to rewrite the answer in Zundamon's voice: keeping it");
                answer
            });
            let answer = if turn.cut {
                self.metrics.answer_cut();
                warn!(
                    channel_id = question.channel_id,
                    chars = answer.chars().count(),
                    max_tokens = ?turn.fitted.allowance,
                    "the answer was cut at the token limit (ZUNDA_MAX_ANSWER_TOKENS or the model's context): delivered with a note"
                );
                format!("{answer}\n\n{}", crate::voice::ANSWER_CUT_NOTE)
            } else {
                answer
            };
            let line = sources::sources_line(&turn.urls, &answer);
            Ok(sources::with_sources(&answer, line.as_deref()))
        }
        .await;
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
    /// The persona guard: an answer without Zundamon's voice is rewritten once. The answer stays
    /// on screen while that runs, with a status line after it; the rewrite is skipped when it
    /// would not fit the model's context; a failed, cut or still voiceless rewrite keeps the
    /// original (logged).
    async fn guard_voice(
        &self,
        answer: String,
        turn: &tool_loop::Turn,
        deadline: tokio::time::Instant,
        progress: Option<&Progress>,
    ) -> String {
        let settings = &self.settings;
        if !settings.persona_guard || guard::has_voice(&answer) {
            return answer;
        }
        let mut request = guard::rewrite_request(
            &settings.model,
            settings.temperature,
            &settings.persona,
            &answer,
        );
        let allowance = guard::rewrite_allowance(&answer, self.llm.max_answer_tokens());
        #[allow(deprecated)] // the client sends it under the name the server takes
        {
            request.max_tokens = Some(allowance);
        }
        let needs = context::estimate_messages(&request.messages) + allowance;
        let known = self.learned.known_context.load(Ordering::Relaxed);
        let room = if known > 0 {
            known
        } else {
            // Unknown context: no larger than the request that just fitted.
            turn.fitted.prompt + turn.fitted.allowance.unwrap_or(allowance)
        };
        if needs > room {
            info!(
                needs,
                room,
                known_context = known,
                "the answer lacks Zundamon's voice, but a rewrite would not fit the model's context: keeping it"
            );
            return answer;
        }
        if let Some(progress) = progress {
            progress.send_replace(Live::Text(format!(
                "{answer}\n\n{}",
                crate::voice::REWRITING_STATUS
            )));
        }
        match self.llm.complete(&request, deadline).await {
            Ok(message) => {
                self.count(&message);
                self.metrics.persona_rewrite();
                let rewritten = message.content.unwrap_or_default();
                if message.finish_reason.is_length() {
                    warn!("the rewrite was cut at its token limit: keeping the original");
                    answer
                } else if guard::has_voice(&rewritten) {
                    info!("the answer lacked Zundamon's voice: rewritten");
                    rewritten
                } else {
                    warn!("the rewrite still lacks Zundamon's voice: keeping the original");
                    answer
                }
            }
            Err(err) => {
                if let Some(context) = err.overflow_numbers().and_then(|n| n.context) {
                    self.learned.known_context.store(context, Ordering::Relaxed);
                }
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
        // Neither the sources line nor the note that the answer was cut: the model should not
        // learn to write them itself.
        let answer = sources::strip_sources(answer);
        answer
            .strip_suffix(crate::voice::ANSWER_CUT_NOTE)
            .map_or(answer, str::trim_end)
            .to_owned()
    }
}
