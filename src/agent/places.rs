//! Answering by place: the settings of each question (model, persona addendum, web search) are
//! resolved from where it was asked — the `[[places]]` entries and the `/zunda-model` choice in
//! force there — and the agent of that model answers with them. What each answer cost is
//! reported to the [`Ledger`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tracing::warn;
use zundamon_actors::{AnswerError, Answerer, AttachmentKind, Exchange, Progress, Question};

use super::attachments::{fenced_files, Fetcher, Loaded};
use super::search::WebSearch;
use super::{AgentError, Clock, ZundaAgent};
use crate::config::admin::resolve_place;
use crate::config::{Config, PlaceConfig, PlaceSettings, DEFAULT_MODEL};
use crate::ops::metrics::Metrics;
use crate::voice;

/// What the agent needs from the rest of the bot: the `/zunda-model` choices, and a place to
/// count what each user's questions cost.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// The `/zunda-model` choice in force for a question asked in `places` (most specific
    /// first): the index of the place it was made at, and the model name.
    async fn model_choice(&self, places: &[u64]) -> Option<(usize, String)>;
    /// `user_id`'s question cost `tokens` with model `model`.
    async fn spent(&self, user_id: u64, model: &str, tokens: u64);
}

/// One agent per configured model, answering each question with its place's settings.
pub struct PlacedAgent {
    agents: BTreeMap<String, ZundaAgent>,
    /// Whether each model takes images.
    vision: BTreeMap<String, bool>,
    places: Vec<PlaceConfig>,
    ledger: Option<Arc<dyn Ledger>>,
    fetcher: Fetcher,
}

impl std::fmt::Debug for PlacedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacedAgent")
            .field("models", &self.agents.keys().collect::<Vec<_>>())
            .field("places", &self.places.len())
            .finish_non_exhaustive()
    }
}

impl PlacedAgent {
    /// The agents of `config`'s models (one web search, shared).
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        clock: Clock,
        ledger: Option<Arc<dyn Ledger>>,
    ) -> Result<Self, AgentError> {
        let search = Arc::new(WebSearch::new(&config.search, metrics.clone())?);
        let mut agents = BTreeMap::new();
        let mut vision = BTreeMap::new();
        for name in config.model_names() {
            vision.insert(name.clone(), config.model_vision(&name));
            let Some(openai) = config.model_openai(&name) else {
                continue;
            };
            let agent = ZundaAgent::for_model(
                config,
                &openai,
                &name,
                search.clone(),
                metrics.clone(),
                clock.clone(),
            )?;
            agents.insert(name, agent);
        }
        let fetcher = Fetcher::new(config.limits.max_image_bytes, config.limits.max_file_chars)
            .map_err(|err| AgentError::Llm(crate::agent::llm::LlmError::Setup(err)))?;
        Ok(Self {
            agents,
            vision,
            places: config.places.clone(),
            ledger,
            fetcher,
        })
    }

    /// The settings of a question asked in `places`.
    pub async fn settings(&self, places: &[u64]) -> PlaceSettings {
        let choice = match &self.ledger {
            Some(ledger) => ledger.model_choice(places).await,
            None => None,
        };
        let known = |name: &str| self.agents.contains_key(name);
        let mut settings = resolve_place(
            &self.places,
            &known,
            places,
            choice.as_ref().map(|(at, name)| (*at, name.as_str())),
        );
        settings.vision = self.vision.get(&settings.model).copied().unwrap_or(false);
        if let (Some((_, name)), false) = (&choice, settings.chosen) {
            warn!(model = %name, "the /zunda-model choice names a model no longer configured: using the place's model");
        }
        settings
    }

    /// The agent of `model` (the default one if it is gone).
    fn agent(&self, model: &str) -> &ZundaAgent {
        self.agents
            .get(model)
            .or_else(|| self.agents.get(DEFAULT_MODEL))
            .expect("the default model always has an agent")
    }

    async fn answer_placed(
        &self,
        question: &Question,
        history: &[Exchange],
        progress: Option<&Progress>,
    ) -> Result<String, AnswerError> {
        let settings = self.settings(&question.places).await;
        let (images, files, cut) = self.load_attachments(question, &settings).await?;
        let agent = self
            .agent(&settings.model)
            .placed(settings.persona.as_deref(), settings.search)
            .with_attachments(images.clone(), files);
        let answer = agent
            .answer_with_progress(question, history, progress)
            .await;
        let spent = agent.spent();
        if let (Some(ledger), true) = (&self.ledger, spent > 0) {
            ledger.spent(question.user_id, &settings.model, spent).await;
        }
        match answer {
            Ok(answer) => Ok(match cut {
                Some(chars) => format!("{answer}\n\n{}", voice::file_cut_note(chars)),
                None => answer,
            }),
            Err(AgentError::Llm(err)) if !images.is_empty() && err.rejects_images() => {
                warn!(
                    model = %settings.model,
                    error = %err,
                    "the model server refused the image: set vision = false for this model ([models.NAME] vision, or ZUNDA_VISION for the default one)"
                );
                Err(AnswerError::with_reply(
                    err.to_string(),
                    voice::NO_VISION_REPLY,
                ))
            }
            Err(err) => Err(AnswerError::new(err.to_string())),
        }
    }

    /// Fetches the question's attachments: the images' `data:` URLs, the files' fenced text,
    /// and the character limit a file was cut at, if one was.
    async fn load_attachments(
        &self,
        question: &Question,
        settings: &PlaceSettings,
    ) -> Result<(Vec<String>, String, Option<usize>), AnswerError> {
        let (mut images, mut files, mut cut) = (Vec::new(), Vec::new(), None);
        for attachment in &question.attachments {
            if attachment.kind == AttachmentKind::Image && !settings.vision {
                return Err(AnswerError::with_reply(
                    format!("model {} does not take images", settings.model),
                    voice::NO_VISION_REPLY,
                ));
            }
            match self.fetcher.load(attachment).await? {
                Loaded::Image { data_url } => images.push(data_url),
                Loaded::Text {
                    filename,
                    text,
                    cut: was_cut,
                } => {
                    if was_cut {
                        cut = Some(self.fetcher.max_file_chars);
                    }
                    files.push((filename, text));
                }
            }
        }
        Ok((images, fenced_files(&files), cut))
    }

    /// The part of an answer the channel remembers.
    pub fn remembered(&self, answer: &str) -> String {
        self.agent(DEFAULT_MODEL).remembered(answer)
    }
}

#[async_trait]
impl Answerer for PlacedAgent {
    async fn answer(
        &self,
        question: &Question,
        history: &[Exchange],
    ) -> Result<String, AnswerError> {
        self.answer_placed(question, history, None).await
    }

    async fn answer_live(
        &self,
        question: &Question,
        history: &[Exchange],
        progress: &Progress,
    ) -> Result<String, AnswerError> {
        self.answer_placed(question, history, Some(progress)).await
    }

    fn remembered(&self, answer: &str) -> String {
        PlacedAgent::remembered(self, answer)
    }
}

/// The per-question copy of an agent.
impl ZundaAgent {
    /// A copy for one question asked where `persona` is added to the persona prompt and web
    /// search is offered only if `search`; what it learns of the server is shared, its token
    /// count is its own.
    pub fn placed(&self, persona: Option<&str>, search: bool) -> Self {
        let mut settings = self.settings.clone();
        if let Some(addendum) = persona {
            settings.persona = format!("{}\n\n{addendum}", settings.persona.trim_end());
        }
        settings.search = search;
        Self {
            llm: self.llm.clone(),
            search: self.search.clone(),
            settings,
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            learned: self.learned.clone(),
            spent: AtomicU64::new(0),
            images: Vec::new(),
            files: String::new(),
        }
    }

    /// This copy shows the model `images` with the question and reads it `files` (fenced text)
    /// after it.
    pub fn with_attachments(mut self, images: Vec<String>, files: String) -> Self {
        self.images = images;
        self.files = files;
        self
    }

    /// Tokens the server reported for this agent's requests so far.
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    /// Counts what a response cost.
    pub(super) fn count(&self, message: &super::response::AssistantMessage) {
        if let Some(usage) = message.usage {
            self.spent.fetch_add(
                usage.prompt_tokens + usage.completion_tokens,
                Ordering::Relaxed,
            );
        }
    }
}
