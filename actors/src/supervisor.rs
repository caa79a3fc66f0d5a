//! The channel supervisor: routes each question to its channel's actor, spawning it on first use,
//! and evicts idle actors (idle timeout, and a cap on live actors). It owns no conversation state.
//!
//! All routing goes through the supervisor's mailbox, so routing and eviction never race: an actor
//! is evicted only when every question routed to it has been answered, and it leaves the routing
//! table in the same step, so a question arriving afterwards goes to a fresh actor (which loads
//! the window from the store) instead of being lost in a stopping one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::channel::{ChannelArgs, ChannelShared};
use crate::{
    Answerer, AskError, ChannelActor, ChannelId, ChannelMsg, ConversationStore, EvictReason,
    Exchange, Question, Stats, StatsSnapshot, StoreError, Ticket,
};

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

struct Route {
    actor: ActorRef<ChannelMsg>,
    shared: Arc<ChannelShared>,
    /// Questions sent to the actor; it is idle when it has completed as many.
    routed: u64,
    last_routed: Instant,
}

impl Route {
    fn is_idle(&self) -> bool {
        self.routed == self.shared.completed() && !self.shared.has_unsaved()
    }

    fn last_active(&self) -> Instant {
        self.last_routed.max(self.shared.idle_since())
    }
}

pub struct SupervisorState {
    args: SupervisorArgs,
    routes: HashMap<ChannelId, Route>,
    by_actor: HashMap<ActorId, ChannelId>,
    sweeper: Option<JoinHandle<()>>,
    warned_over_cap: bool,
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

impl SupervisorState {
    /// Sends `message` (a question or a reset) to the channel's actor, spawning it if needed.
    async fn route(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        channel: ChannelId,
        mut message: ChannelMsg,
    ) {
        let is_question = matches!(message, ChannelMsg::Ask(..));
        // Two attempts: an actor that died on its own (not evicted) is replaced once.
        for _ in 0..2 {
            if !self.routes.contains_key(&channel) {
                if let Err(err) = self.spawn(myself, channel).await {
                    error!(channel_id = channel, "cannot spawn a channel actor: {err}");
                    break;
                }
            }
            let route = self.routes.get_mut(&channel).expect("route exists");
            route.routed += 1;
            route.last_routed = Instant::now();
            if is_question {
                self.args.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            match route.actor.send_message(message) {
                Ok(()) => return,
                Err(MessagingErr::SendErr(returned)) => {
                    message = returned;
                    route.routed -= 1;
                    if is_question {
                        self.args.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                    let id = route.actor.get_id();
                    self.forget(id, Some("its mailbox was closed".into()));
                }
                Err(err) => {
                    error!(channel_id = channel, "cannot route a question: {err}");
                    if is_question {
                        self.args.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
        let why = "no channel actor could be started";
        match message {
            ChannelMsg::Ask(_, _, reply) => {
                let _ = reply.send(Err(AskError::Unavailable(why.into())));
            }
            ChannelMsg::Reset(reply) => {
                let _ = reply.send(Err(StoreError(why.into())));
            }
            _ => {}
        }
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        channel: ChannelId,
    ) -> Result<(), SpawnErr> {
        if self.routes.len() >= self.args.settings.max_channels {
            self.make_room();
        }
        let shared = Arc::new(ChannelShared::new());
        let args = ChannelArgs {
            channel_id: channel,
            window_exchanges: self.args.settings.window_exchanges,
            live_window: self.args.window_exchanges.clone(),
            answerer: self.args.answerer.clone(),
            store: self.args.store.clone(),
            shared: shared.clone(),
            stats: self.args.stats.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, ChannelActor, args, myself.get_cell()).await?;
        self.by_actor.insert(actor.get_id(), channel);
        self.routes.insert(
            channel,
            Route {
                actor,
                shared,
                routed: 0,
                last_routed: Instant::now(),
            },
        );
        self.args.stats.spawned.fetch_add(1, Ordering::Relaxed);
        self.publish_live();
        Ok(())
    }

    /// Evicts the least recently used idle actors to stay within the cap: one scan frees a small
    /// batch (1 % of the cap), so a flood of new channels does not pay a full scan each. When
    /// every actor is busy the cap is exceeded for a while rather than a question turned away.
    fn make_room(&mut self) {
        let batch = (self.args.settings.max_channels / 100).max(1);
        let mut idle: Vec<(Instant, ChannelId)> = self
            .routes
            .iter()
            .filter(|(_, route)| route.is_idle())
            .map(|(channel, route)| (route.last_active(), *channel))
            .collect();
        if idle.is_empty() {
            if !self.warned_over_cap {
                self.warned_over_cap = true;
                warn!(
                    live = self.routes.len(),
                    cap = self.args.settings.max_channels,
                    "every channel actor is busy: exceeding the channel cap until one is idle"
                );
            }
            return;
        }
        self.warned_over_cap = false;
        if idle.len() > batch {
            idle.select_nth_unstable(batch - 1);
            idle.truncate(batch);
        }
        for (_, channel) in idle {
            self.evict(channel, EvictReason::Cap);
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let idle = self.args.settings.idle;
        let expired: Vec<ChannelId> = self
            .routes
            .iter()
            .filter(|(_, route)| route.is_idle() && now.duration_since(route.last_active()) >= idle)
            .map(|(channel, _)| *channel)
            .collect();
        for channel in expired {
            self.evict(channel, EvictReason::Idle);
        }
        // Over the cap after a burst of busy actors: shrink back as they become idle.
        while self.routes.len() > self.args.settings.max_channels {
            let before = self.routes.len();
            self.make_room();
            if self.routes.len() == before {
                break;
            }
        }
    }

    fn reconfigure(&mut self, myself: &ActorRef<SupervisorMsg>, settings: ChannelSettings) {
        let old = std::mem::replace(&mut self.args.settings, settings);
        self.args
            .window_exchanges
            .store(settings.window_exchanges, Ordering::Release);
        if settings.sweep_every() != old.sweep_every() {
            if let Some(sweeper) = self.sweeper.take() {
                sweeper.abort();
            }
            self.sweeper =
                Some(myself.send_interval(settings.sweep_every(), || SupervisorMsg::Sweep));
        }
        let live_before = self.routes.len();
        self.trim_to_cap();
        self.sweep();
        info!(
            idle_secs = settings.idle.as_secs_f64(),
            max_channels = settings.max_channels,
            window_exchanges = settings.window_exchanges,
            evicted = live_before - self.routes.len(),
            "channel settings changed"
        );
    }

    /// Evicts exactly as many least recently used idle actors as the cap is exceeded by (fewer
    /// when not enough are idle: the rest go as they become idle, at the next sweeps).
    fn trim_to_cap(&mut self) {
        let excess = self
            .routes
            .len()
            .saturating_sub(self.args.settings.max_channels);
        if excess == 0 {
            return;
        }
        let mut idle: Vec<(Instant, ChannelId)> = self
            .routes
            .iter()
            .filter(|(_, route)| route.is_idle())
            .map(|(channel, route)| (route.last_active(), *channel))
            .collect();
        idle.sort_unstable();
        for (_, channel) in idle.into_iter().take(excess) {
            self.evict(channel, EvictReason::Cap);
        }
    }

    fn evict(&mut self, channel: ChannelId, why: EvictReason) {
        if let Some(route) = self.routes.remove(&channel) {
            self.by_actor.remove(&route.actor.get_id());
            route.actor.stop(Some(why.label().into()));
            self.args.stats.evicted(why);
            debug!(
                channel_id = channel,
                reason = why.label(),
                "evicted channel actor"
            );
            self.publish_live();
        }
    }

    fn discard(&mut self, channel: ChannelId) {
        if let Some(route) = self.routes.remove(&channel) {
            self.by_actor.remove(&route.actor.get_id());
            // Questions still queued are dropped with it; their askers get an error.
            let lost = route.routed.saturating_sub(route.shared.completed());
            self.args
                .stats
                .in_flight
                .fetch_sub(lost as usize, Ordering::Relaxed);
            route.actor.stop(Some("discarded".into()));
            info!(
                channel_id = channel,
                dropped_questions = lost,
                "channel actor discarded: its questions belong to another process now"
            );
            self.publish_live();
        }
    }

    /// Drops the route of an actor that ended without being evicted (crash or closed mailbox).
    fn forget(&mut self, actor: ActorId, failure: Option<String>) {
        let Some(channel) = self.by_actor.remove(&actor) else {
            return; // evicted: already gone from the table
        };
        if let Some(route) = self.routes.remove(&channel) {
            // Questions still queued in its mailbox were dropped with it; their askers got an
            // error when their reply ports closed.
            let lost = route.routed.saturating_sub(route.shared.completed());
            self.args
                .stats
                .in_flight
                .fetch_sub(lost as usize, Ordering::Relaxed);
            error!(
                channel_id = channel,
                lost_questions = lost,
                "channel actor ended unexpectedly ({}); the next question starts a new one with the stored window",
                failure.as_deref().unwrap_or("stopped")
            );
        }
        self.publish_live();
    }

    fn publish_live(&self) {
        self.args
            .stats
            .live_channels
            .store(self.routes.len(), Ordering::Relaxed);
    }
}

/// A handle to the running actor system: what the rest of the bot talks to.
#[derive(Clone)]
pub struct Channels {
    supervisor: ActorRef<SupervisorMsg>,
    stats: Arc<Stats>,
}

impl Channels {
    /// Starts the supervisor (channel actors start on demand).
    pub async fn start(args: SupervisorArgs) -> Result<Self, SpawnErr> {
        let stats = args.stats.clone();
        let (supervisor, _) = Actor::spawn(None, ChannelSupervisor, args).await?;
        Ok(Self { supervisor, stats })
    }

    /// Asks a question in its channel and waits for the answer. Questions of one channel are
    /// answered one at a time in the order they were asked.
    pub async fn ask(&self, question: Question) -> Result<String, AskError> {
        self.submit(question).await
    }

    /// Queues the question in its channel *now* (its place in the channel's order is fixed when
    /// this returns) and gives back a future of the answer, so a caller can do other work, such
    /// as acknowledging the interaction, without losing its turn.
    pub fn submit(
        &self,
        question: Question,
    ) -> impl std::future::Future<Output = Result<String, AskError>> + Send + 'static {
        self.submit_with(question, Ticket::default())
    }

    /// Like [`submit`](Self::submit), with the question's [`Ticket`]: its id, its deadline and
    /// the gate that holds it until the front end says go.
    pub fn submit_with(
        &self,
        question: Question,
        ticket: Ticket,
    ) -> impl std::future::Future<Output = Result<String, AskError>> + Send + 'static {
        let (reply, answer) = ractor::concurrency::oneshot();
        let queued = self
            .supervisor
            .cast(SupervisorMsg::Ask(question, ticket, reply.into()));
        async move {
            if let Err(err) = queued {
                return Err(AskError::Unavailable(format!(
                    "the channel supervisor is not running: {err}"
                )));
            }
            answer.await.unwrap_or_else(|_| {
                Err(AskError::Unavailable(
                    "the channel actor stopped before replying".into(),
                ))
            })
        }
    }

    /// Forgets the channel's window in memory and in the store, after the questions already
    /// queued in the channel are answered; returns how many exchanges were forgotten.
    pub async fn reset(&self, channel: ChannelId) -> Result<usize, StoreError> {
        match self
            .supervisor
            .call(|reply| SupervisorMsg::Reset(channel, reply), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(StoreError("the channel supervisor is not running".into())),
        }
    }

    /// What the channel remembers, without waiting for its queue.
    pub async fn memory(&self, channel: ChannelId) -> Option<MemoryReport> {
        self.supervisor
            .call(|reply| SupervisorMsg::Memory(channel, reply), None)
            .await
            .ok()?
            .success_or(())
            .ok()
    }

    /// The window of a channel whose actor is alive (`None` otherwise), oldest first.
    pub async fn window(&self, channel: ChannelId) -> Option<Vec<Exchange>> {
        let actor = self
            .supervisor
            .call(|reply| SupervisorMsg::Lookup(channel, reply), None)
            .await
            .ok()?
            .success_or(())
            .ok()??;
        actor
            .call(ChannelMsg::Snapshot, None)
            .await
            .ok()?
            .success_or(())
            .ok()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops `channel`'s actor and forgets its in-memory window (see [`SupervisorMsg::Discard`]).
    pub fn discard(&self, channel: ChannelId) {
        if let Err(err) = self.supervisor.cast(SupervisorMsg::Discard(channel)) {
            warn!("cannot discard a channel actor: {err}");
        }
    }

    /// Applies new settings while running (see [`SupervisorMsg::Reconfigure`]).
    pub fn reconfigure(&self, settings: ChannelSettings) {
        if let Err(err) = self.supervisor.cast(SupervisorMsg::Reconfigure(settings)) {
            warn!("cannot apply new channel settings: {err}");
        }
    }

    /// Stops the supervisor and every channel actor.
    pub async fn stop(&self) {
        let _ = self
            .supervisor
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(1)))
            .await;
    }
}
