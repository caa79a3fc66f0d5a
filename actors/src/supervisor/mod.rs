//! The channel supervisor: routes each question to its channel's actor, spawning it on first use,
//! and evicts idle actors (idle timeout, and a cap on live actors). It owns no conversation state.
//!
//! All routing goes through the supervisor's mailbox, so routing and eviction never race: an actor
//! is evicted only when every question routed to it has been answered, and it leaves the routing
//! table in the same step, so a question arriving afterwards goes to a fresh actor (which loads
//! the window from the store) instead of being lost in a stopping one.
//!
//! This module owns the settings, the arguments and the messages, and the actor's message
//! handling; the routing table and eviction live in [`table`], and the [`Channels`] handle (what
//! the rest of the bot talks to) in [`channels`].

mod channels;
mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::{
    Answerer, AskError, ChannelId, ChannelMsg, ConversationStore, Question, Stats, StoreError,
    Ticket,
};

pub use channels::Channels;
pub use table::SupervisorState;

/// What a channel remembers, as `/zunda-memory` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    /// The window's length if the channel's actor is alive (and has loaded it); `None` when the
    /// window is only in the store.
    pub in_memory: Option<usize>,
    /// How long an idle channel's window stays in memory.
    pub idle: Duration,
    /// Exchanges remembered per channel.
    pub window_exchanges: usize,
}

/// Tunables of the actor system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSettings {
    /// Exchanges remembered per channel (K).
    pub window_exchanges: usize,
    /// How long a channel actor may sit idle before it is evicted.
    pub idle: Duration,
    /// Most channel actors alive at once; the least recently used idle one makes room.
    pub max_channels: usize,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            window_exchanges: 5,
            idle: Duration::from_secs(600),
            max_channels: 10_000,
        }
    }
}

impl ChannelSettings {
    /// How often idle actors are looked for: often enough that an actor outlives its idle
    /// timeout by at most a quarter of it.
    fn sweep_every(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30))
    }
}

pub struct ChannelSupervisor;

pub struct SupervisorArgs {
    pub settings: ChannelSettings,
    pub answerer: Arc<dyn Answerer>,
    pub store: Arc<dyn ConversationStore>,
    stats: Arc<Stats>,
    /// The window size (K) every channel actor follows; changed by [`SupervisorMsg::Reconfigure`].
    window_exchanges: Arc<AtomicUsize>,
}

impl SupervisorArgs {
    pub fn new(
        settings: ChannelSettings,
        answerer: Arc<dyn Answerer>,
        store: Arc<dyn ConversationStore>,
    ) -> Self {
        Self {
            window_exchanges: Arc::new(AtomicUsize::new(settings.window_exchanges)),
            settings,
            answerer,
            store,
            stats: Arc::default(),
        }
    }
}

pub enum SupervisorMsg {
    /// Route a question to its channel's actor, spawning the actor on first use; the channel
    /// actor replies on the port.
    Ask(Question, Ticket, RpcReplyPort<Result<String, AskError>>),
    /// Reply with the actor of a channel, if one is alive.
    Lookup(ChannelId, RpcReplyPort<Option<ActorRef<ChannelMsg>>>),
    /// Forget a channel's window (memory and store) once the questions queued before are
    /// answered; the channel actor replies on the port.
    Reset(ChannelId, RpcReplyPort<Result<usize, StoreError>>),
    /// Reply with what the channel remembers now without waiting for its queue: the window's
    /// length if its actor is alive and loaded, and the idle timeout and window size in force.
    Memory(ChannelId, RpcReplyPort<MemoryReport>),
    /// Stop a channel's actor now, busy or not, and forget its in-memory window: another process
    /// took the channel's questions over, so what this actor remembers may be stale. The next
    /// question starts a new actor with the stored window.
    Discard(ChannelId),
    /// Evict the actors idle for longer than the idle timeout (sent by a timer).
    Sweep,
    /// Apply new settings now: the sweep follows the new idle timeout, a lower cap evicts the
    /// least recently used idle actors at once (busy ones are never cut off), and a new window
    /// size applies to each channel's next question.
    Reconfigure(ChannelSettings),
}

impl Actor for ChannelSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let sweeper = myself.send_interval(args.settings.sweep_every(), || SupervisorMsg::Sweep);
        Ok(SupervisorState {
            args,
            routes: HashMap::new(),
            by_actor: HashMap::new(),
            sweeper: Some(sweeper),
            warned_over_cap: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Ask(question, ticket, reply) => {
                let channel = question.channel_id;
                state
                    .route(&myself, channel, ChannelMsg::Ask(question, ticket, reply))
                    .await
            }
            SupervisorMsg::Reset(channel, reply) => {
                state
                    .route(&myself, channel, ChannelMsg::Reset(reply))
                    .await
            }
            SupervisorMsg::Memory(channel, reply) => {
                let settings = &state.args.settings;
                let _ = reply.send(MemoryReport {
                    in_memory: state
                        .routes
                        .get(&channel)
                        .and_then(|route| route.shared.remembered()),
                    idle: settings.idle,
                    window_exchanges: settings.window_exchanges,
                });
            }
            SupervisorMsg::Lookup(channel, reply) => {
                let _ = reply.send(state.routes.get(&channel).map(|r| r.actor.clone()));
            }
            SupervisorMsg::Discard(channel) => state.discard(channel),
            SupervisorMsg::Sweep => state.sweep(),
            SupervisorMsg::Reconfigure(settings) => state.reconfigure(&myself, settings),
        }
        Ok(())
    }

    /// Overridden because ractor's default stops the supervisor whenever a child ends, and
    /// channel actors end all the time (eviction).
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => state.forget(cell.get_id(), None),
            SupervisionEvent::ActorFailed(cell, err) => {
                state.forget(cell.get_id(), Some(err.to_string()))
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(sweeper) = state.sweeper.take() {
            sweeper.abort();
        }
        for (_, route) in state.routes.drain() {
            route.actor.stop(Some("supervisor stopped".into()));
        }
        state.args.stats.live_channels.store(0, Ordering::Relaxed);
        Ok(())
    }
}
