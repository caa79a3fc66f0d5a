//! The edge through which a channel actor gets its answers: the binary injects the real agent,
//! tests inject scripted fakes.

use async_trait::async_trait;
use thiserror::Error;

use crate::{ChannelId, Exchange, Progress};

/// A question asked in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub channel_id: ChannelId,
    /// The asking user's id (for rate limits and logs).
    pub user_id: u64,
    /// The name the answer addresses the user by.
    pub user_name: String,
    /// The question text, as typed.
    pub text: String,
    /// Where it was asked, most specific first: the channel (or thread), its parent channel, the
    /// category, the guild. The answerer may pick its settings by them; empty when unknown.
    pub places: Vec<u64>,
    /// Files the user attached, as described to the bot (the answerer fetches them). `text`
    /// names each with a placeholder, so the window keeps the placeholder, never the content.
    pub attachments: Vec<Attachment>,
}

/// What a file attached to a question is taken as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    /// An image for a vision model.
    Image,
    /// A text file read into the prompt.
    Text,
}

/// A file attached to a question, as its sender describes it: where to fetch it, what it claims
/// to be and how large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub filename: String,
    pub url: String,
    /// The declared content type (may be empty).
    pub content_type: String,
    /// The declared size in bytes.
    pub size: u64,
}

/// Why an answer could not be produced (an upstream failed, timed out, …). The front end shows the
/// user Zundamon's error message; `reason` is for the operator's log and never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct AnswerError {
    pub reason: String,
    /// What to tell the user instead of the generic error message, when the failure is theirs
    /// to fix (an attachment that cannot be read, say).
    pub reply: Option<String>,
}

impl AnswerError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            reply: None,
        }
    }

    /// An error the user is told about with `reply`.
    pub fn with_reply(reason: impl Into<String>, reply: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            reply: Some(reply.into()),
        }
    }
}

/// Why a question got no answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AskError {
    /// The answerer returned an error.
    #[error("answer failed: {0}")]
    Failed(#[from] AnswerError),
    /// The answerer panicked; the channel keeps working.
    #[error("the answerer panicked: {0}")]
    Panicked(String),
    /// The question was withdrawn before the model was asked (nobody would see the answer: the
    /// acknowledgement was refused, or the token expired while it waited).
    #[error("withdrawn before the model was asked: {0}")]
    Withdrawn(String),
    /// The question's deadline (its interaction token's life) passed before the model was asked:
    /// nobody could see an answer any more.
    #[error("withdrawn before the model was asked: {0}")]
    Expired(String),
    /// The channel actor or the supervisor was gone before replying (crash or shutdown).
    #[error("the channel actor is unavailable: {0}")]
    Unavailable(String),
}

/// Produces an answer to a question given the channel's earlier exchanges (oldest first).
#[async_trait]
pub trait Answerer: Send + Sync + 'static {
    async fn answer(
        &self,
        question: &Question,
        history: &[Exchange],
    ) -> Result<String, AnswerError>;

    /// Like [`answer`](Self::answer), showing the work on `progress` as it goes (a status line
    /// while searching, the text as it streams). By default nothing is shown until the end.
    async fn answer_live(
        &self,
        question: &Question,
        history: &[Exchange],
        progress: &Progress,
    ) -> Result<String, AnswerError> {
        let _ = progress;
        self.answer(question, history).await
    }

    /// The part of `answer` the channel remembers; by default all of it. An answerer that
    /// decorates its answers for the reader (a sources line, say) leaves the decoration out.
    fn remembered(&self, answer: &str) -> String {
        answer.to_owned()
    }
}
