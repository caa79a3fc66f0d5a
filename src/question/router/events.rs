//! The messages of the event actor: a `/zunda` use ([`CommandEvent`]), a channel memory command
//! ([`ControlEvent`], [`ControlKind`], and its HTTP response [`ControlReply`]), and every message
//! the actor takes ([`RouterMsg`]).

use std::time::{Duration, SystemTime};

use ractor::RpcReplyPort;
use tokio::time::Instant;

use crate::config::{LimitsConfig, Secret};
use crate::store::PendingQuestion;

/// A `/zunda` use, as the gateway handler (or the HTTP endpoint) received it.
#[derive(Debug)]
pub struct CommandEvent {
    pub interaction_id: u64,
    pub application_id: u64,
    /// The interaction token: a secret for 15 minutes, never logged (`Debug` shows `[redacted]`).
    pub token: Secret,
    pub channel_id: u64,
    pub guild_id: Option<u64>,
    pub user_id: u64,
    /// The member's roles (`None` outside a guild).
    pub roles: Option<Vec<u64>>,
    pub user_name: String,
    pub question: String,
    /// The files attached with `image:` and `file:`.
    pub attachments: Vec<zundamon_actors::Attachment>,
    /// An attachment option named a file the interaction's `resolved` does not describe.
    pub missing_attachment: bool,
    /// Where it was asked, most specific first (filled in by the event actor).
    pub places: Vec<u64>,
    /// Discord was already asked where its channel sits (at most once per question).
    pub looked_up: bool,
    /// When the event arrived (for the acknowledgement latency).
    pub received: Instant,
    /// The same moment on the wall clock (recorded with a pending question).
    pub received_at: SystemTime,
}

impl CommandEvent {
    /// The pending-table row of this question, asked as `question` (checked and trimmed).
    pub(super) fn into_pending(self, question: String) -> PendingQuestion {
        PendingQuestion {
            interaction_id: self.interaction_id,
            application_id: self.application_id,
            token: self.token,
            channel_id: self.channel_id,
            guild_id: self.guild_id,
            user_id: self.user_id,
            user_name: self.user_name,
            question,
            received_at: self.received_at,
            accepted: crate::store::acceptance_stamp(),
            delivered_parts: 0,
            follow_ups: Vec::new(),
            fence: 0,
            attachments: self.attachments,
            places: self.places,
        }
    }
}

/// Which channel memory command was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlKind {
    /// `/zunda-reset`: forget the channel's window.
    Reset,
    /// `/zunda-memory`: show (ephemerally) what the channel remembers.
    Memory,
    /// `/zunda-model model:<name>`: choose the channel's (or thread's) model.
    Model(String),
}

/// A use of a channel memory command.
#[derive(Debug)]
pub struct ControlEvent {
    pub kind: ControlKind,
    pub interaction_id: u64,
    pub application_id: u64,
    /// The interaction token (a secret).
    pub token: Secret,
    pub channel_id: u64,
    pub guild_id: Option<u64>,
    pub user_id: u64,
    /// The member's roles (`None` outside a guild).
    pub roles: Option<Vec<u64>>,
    /// The invoking member's permissions in the channel, as Discord computed them.
    pub permissions: Option<u64>,
    pub received: Instant,
}

/// The HTTP response to a channel memory command received on `POST /interactions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    /// A deferral (the text follows as an edit of the original response).
    Defer { ephemeral: bool },
    /// The reply itself.
    Message { text: String, ephemeral: bool },
}

pub enum RouterMsg {
    /// The gateway session is ready; the bot's own user id is now known.
    Ready {
        application_id: u64,
        bot_user_id: u64,
    },
    /// A `/zunda` use from the gateway: record, acknowledge, then answer.
    Command(CommandEvent),
    /// A `/zunda` use from the HTTP interactions endpoint: reply with the immediate response
    /// message (the acknowledgement, or a refusal), then answer.
    HttpCommand(CommandEvent, RpcReplyPort<ControlReply>),
    /// A channel memory command (`/zunda-reset`, `/zunda-memory`).
    Control(ControlEvent),
    /// The same from the HTTP interactions endpoint: reply with the HTTP response's content.
    HttpControl(ControlEvent, RpcReplyPort<ControlReply>),
    /// A guild message from a human, with the ids of the users it mentions.
    Message {
        channel_id: u64,
        message_id: u64,
        author_id: u64,
        mentioned: Vec<u64>,
    },
    /// Answer these recorded and already acknowledged questions (left by a process that
    /// stopped), in this order, delivering each to its original message and forgetting it once
    /// delivered. Questions already in hand are ignored; expired ones are dropped.
    Resume(Vec<PendingQuestion>),
    /// Stop taking questions (from now on they get the restarting reply); replies once every
    /// message sent before it has been handled.
    Drain(RpcReplyPort<()>),
    /// Drop idle rate-limit buckets (sent by a timer).
    SweepLimiter,
    /// Apply new input and rate limits (a configuration reload).
    Reconfigure(LimitsConfig),
    /// Apply new streaming settings (a configuration reload): the pace of the answers accepted
    /// from now on, or `None` to stop streaming them.
    Restream(Option<Duration>),
}
