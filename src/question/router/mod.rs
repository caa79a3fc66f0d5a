//! The Discord event actor: every gateway event the bot acts on (and every command that comes in
//! over the HTTP interactions endpoint) arrives here as a message, in gateway order. It decides
//! (validation, rate limit, queue limits, draining), fixes each question's place in its channel's
//! queue at once, and leaves the rest of the question's life ([`super::lifecycle`]: record,
//! acknowledge, answer, deliver) to a task of its own. It never waits for an answer itself, so one
//! slow channel cannot delay another's acknowledgement.
//!
//! This file holds the actor and its state; the handling of each message lives beside it:
//! [`screening`] (the checks before any model call, and the immediate replies), [`command`]
//! (`/zunda` intake), [`resume`] (questions left by a stopped process), [`mention`] (mentions of
//! the bot) and [`control`] (the channel memory commands). The messages are in [`events`].

mod command;
mod control;
mod events;
mod mention;
mod resume;
mod screening;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::info_span;
use zundamon_actors::Channels;

use super::admission::Admission;
use super::lifecycle::{Active, Lifecycle};
use crate::config::{LimitsConfig, Secret};
use crate::discord::deliver::Delivery;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::InFlight;
use crate::question::limits::RateLimiter;
use crate::store::FleetPending;
use crate::store::Store;
use command::on_command;
use control::on_control;
pub use events::{CommandEvent, ControlEvent, ControlKind, ControlReply, RouterMsg};
use mention::on_message;
use resume::on_resume;

/// How often idle rate-limit buckets are dropped.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

pub struct Router;

pub struct RouterArgs {
    pub channels: Channels,
    /// Built before the gateway connects (see [`Delivery::for_application`]).
    pub delivery: Arc<Delivery>,
    pub bot_token: Secret,
    pub limits: LimitsConfig,
    pub metrics: Arc<Metrics>,
    pub in_flight: InFlight,
    pub store: Arc<dyn Store>,
    /// The longest an answer may take (the model's whole budget): a question must start this
    /// long before its token expires.
    pub answer_budget: Duration,
    /// The pace of a streamed answer's edits; `None` shows answers only when complete.
    pub stream_every: Option<Duration>,
    /// HTTP fleet mode: questions from the HTTP endpoint are recorded here (for the instance
    /// holding the channel's lease, which gets them as [`RouterMsg::Resume`]) instead of being
    /// answered by this instance; resumed questions are removed from here once delivered.
    pub fleet: Option<Arc<FleetPending>>,
    /// The access lists, place settings and token budgets.
    pub policy: Arc<crate::question::policy::Policy>,
}

pub struct RouterState {
    args: RouterArgs,
    bot_user_id: Option<u64>,
    limiter: RateLimiter,
    admission: Admission,
    active: Active,
    draining: bool,
    /// This actor, to hand a question back to itself once its place is known.
    myself: ActorRef<RouterMsg>,
}

impl RouterState {
    /// The delivery client for `application_id` (known from READY, or from the interaction).
    fn delivery(&mut self, application_id: u64) -> Arc<Delivery> {
        let delivery = &mut self.args.delivery;
        if delivery.application_id() != application_id {
            *delivery = Arc::new(delivery.for_application(application_id));
        }
        delivery.clone()
    }

    fn lifecycle(&mut self, application_id: u64) -> Lifecycle {
        let store: Arc<dyn Store> = self.args.store.clone();
        Lifecycle {
            delivery: self.delivery(application_id),
            // In a fleet, the questions this instance answers are the fleet's.
            store: match &self.args.fleet {
                Some(fleet) => fleet.clone(),
                None => store.into_pending(),
            },
            metrics: self.args.metrics.clone(),
            channels: self.args.channels.clone(),
        }
    }
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RouterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(LIMITER_SWEEP, || RouterMsg::SweepLimiter);
        Ok(RouterState {
            limiter: RateLimiter::new(args.limits.rate_burst, args.limits.rate_per_minute),
            admission: Admission::new(args.limits.max_queued_per_channel, args.limits.max_pending),
            args,
            bot_user_id: None,
            active: Active::default(),
            draining: false,
            myself,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Ready {
                application_id,
                bot_user_id,
            } => {
                state.delivery(application_id);
                state.bot_user_id = Some(bot_user_id);
            }
            RouterMsg::Command(event) => on_command(state, event, None),
            RouterMsg::HttpCommand(event, reply) => on_command(state, event, Some(reply)),
            RouterMsg::Message {
                channel_id,
                message_id,
                author_id,
                mentioned,
            } => on_message(state, channel_id, message_id, author_id, &mentioned),
            RouterMsg::Resume(questions) => on_resume(state, questions),
            RouterMsg::Control(event) => on_control(state, event, None),
            RouterMsg::HttpControl(event, reply) => on_control(state, event, Some(reply)),
            RouterMsg::Drain(done) => {
                state.draining = true;
                let _ = done.send(());
            }
            RouterMsg::SweepLimiter => {
                state.limiter.sweep(Instant::now());
            }
            RouterMsg::Restream(every) => state.args.stream_every = every,
            RouterMsg::Reconfigure(limits) => {
                let old = &state.args.limits;
                // A new rate starts everyone with a full bucket; an unchanged one keeps them.
                if (old.rate_burst, old.rate_per_minute)
                    != (limits.rate_burst, limits.rate_per_minute)
                {
                    state.limiter = RateLimiter::new(limits.rate_burst, limits.rate_per_minute);
                }
                state
                    .admission
                    .set_limits(limits.max_queued_per_channel, limits.max_pending);
                state.args.limits = limits;
            }
        }
        Ok(())
    }
}

fn span_of(interaction_id: u64, channel_id: u64, user_id: u64) -> tracing::Span {
    info_span!("interaction", interaction_id, channel_id, user_id)
}
