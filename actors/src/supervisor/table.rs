//! The supervisor's routing table: which actor serves each channel, spawning actors on first
//! use, and evicting them (idle sweep, the cap on live actors, discards and failures).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorRef, MessagingErr, SpawnErr};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::channel::{ChannelArgs, ChannelShared};
use crate::{AskError, ChannelActor, ChannelId, ChannelMsg, EvictReason, StoreError};

use super::{ChannelSettings, SupervisorArgs, SupervisorMsg};

pub(super) struct Route {
    pub(super) actor: ActorRef<ChannelMsg>,
    pub(super) shared: Arc<ChannelShared>,
    /// Questions sent to the actor; it is idle when it has completed as many.
    pub(super) routed: u64,
    pub(super) last_routed: Instant,
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
    pub(super) args: SupervisorArgs,
    pub(super) routes: HashMap<ChannelId, Route>,
    pub(super) by_actor: HashMap<ActorId, ChannelId>,
    pub(super) sweeper: Option<JoinHandle<()>>,
    pub(super) warned_over_cap: bool,
}

impl SupervisorState {
    /// Sends `message` (a question or a reset) to the channel's actor, spawning it if needed.
    pub(super) async fn route(
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

    pub(super) fn sweep(&mut self) {
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

    pub(super) fn reconfigure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        settings: ChannelSettings,
    ) {
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

    pub(super) fn discard(&mut self, channel: ChannelId) {
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
    pub(super) fn forget(&mut self, actor: ActorId, failure: Option<String>) {
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
