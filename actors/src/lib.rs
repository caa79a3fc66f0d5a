//! The actor system behind Zundamon.
//!
//! A [`ChannelSupervisor`] routes each question to the actor of its Discord channel, spawning it on
//! first use and evicting it when idle. A [`ChannelActor`] owns one channel's conversation
//! [`Window`] and answers one question at a time, in arrival order, through an injected
//! [`Answerer`]. Windows are loaded from and saved to a [`ConversationStore`], so they survive
//! eviction and restarts. Nothing here knows about Discord or OpenAI: those are the binary's edges.

mod answerer;
mod channel;
mod stats;
mod store;
mod supervisor;
mod ticket;
mod window;

pub use answerer::{AnswerError, Answerer, AskError, Attachment, AttachmentKind, Question};
pub use channel::{ChannelActor, ChannelArgs, ChannelMsg};
pub use stats::{EvictReason, LoadTimesSnapshot, Stats, StatsSnapshot, COLD_LOAD_BUCKETS};
pub use store::{ConversationStore, MemoryStore, StoreError};
pub use supervisor::{
    ChannelSettings, ChannelSupervisor, Channels, MemoryReport, SupervisorArgs, SupervisorMsg,
};
pub use ticket::{gate, Gate, GateKeeper, Live, Progress, Started, Ticket};
pub use window::{Exchange, Window};

/// A Discord channel id (a snowflake).
pub type ChannelId = u64;
