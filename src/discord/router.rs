//! The Discord event actor: every gateway event the bot acts on (and every command that comes in
//! over the HTTP interactions endpoint) arrives here as a message. It
//! decides (validation, rate limit, draining) and then acknowledges each `/zunda` at once on a
//! task of its own, hands the question to the channel actors and delivers the answer. It never
//! waits for an answer itself, so one slow channel cannot delay another's acknowledgement.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::{error, info, info_span, warn, Instrument};
use zundamon_actors::{AskError, Channels, Question};

use super::deliver::Delivery;
use super::split::split_message;
use super::{bound_reply, quote_answer, ERROR_REPLY, MENTION_REPLY, MESSAGE_LIMIT, WAIT_REPLY};
use crate::config::{LimitsConfig, Secret};
use crate::limits::{self, QuestionCheck, RateLimiter};
use crate::metrics::Metrics;
use crate::shutdown::InFlight;

/// Interaction tokens live 15 minutes; stop retrying a delivery a little before.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60 - 30);
/// How often idle rate-limit buckets are dropped.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// A `/zunda` use, as the gateway handler received it.
#[derive(Debug)]
pub struct CommandEvent {
    pub interaction_id: u64,
    pub application_id: u64,
    /// The interaction token: a secret for 15 minutes, never logged.
    pub token: String,
    pub channel_id: u64,
    pub user_id: u64,
    pub user_name: String,
    pub question: String,
    /// When the gateway handler received the event (for the acknowledgement latency).
    pub received: Instant,
}

pub enum RouterMsg {
    /// The gateway session is ready; the bot's own user id is now known.
    Ready {
        application_id: u64,
        bot_user_id: u64,
    },
    /// A `/zunda` use from the gateway: acknowledge at once, then route the question to its
    /// channel actor.
    Command(CommandEvent),
    /// A `/zunda` use from the HTTP interactions endpoint: reply at once with the text of the
    /// immediate response message, then route the question.
    HttpCommand(CommandEvent, RpcReplyPort<String>),
    /// A guild message from a human, with the ids of the users it mentions.
    Message {
        channel_id: u64,
        message_id: u64,
        author_id: u64,
        mentioned: Vec<u64>,
    },
    /// Stop taking questions: from now on, answer them with the restarting message.
    Drain,
    /// Drop idle rate-limit buckets (sent by a timer).
    SweepLimiter,
    /// Apply new input and rate limits (a configuration reload).
    Reconfigure(LimitsConfig),
}

pub struct Router;

pub struct RouterArgs {
    pub channels: Channels,
    /// Built before the gateway connects (see [`Delivery::for_application`]).
    pub delivery: Arc<Delivery>,
    pub bot_token: Secret,
    pub limits: LimitsConfig,
    pub metrics: Arc<Metrics>,
    pub in_flight: InFlight,
}

pub struct RouterState {
    args: RouterArgs,
    bot_user_id: Option<u64>,
    limiter: RateLimiter,
    draining: bool,
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
            args,
            bot_user_id: None,
            draining: false,
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
            RouterMsg::Command(event) => on_command(state, event),
            RouterMsg::HttpCommand(event, reply) => on_http_command(state, event, reply),
            RouterMsg::Message {
                channel_id,
                message_id,
                author_id,
                mentioned,
            } => {
                let Some(bot) = state.bot_user_id else {
                    return Ok(());
                };
                if !mentioned.contains(&bot) || author_id == bot {
                    return Ok(());
                }
                if state.limiter.check(author_id, Instant::now()).is_err() {
                    return Ok(()); // a flood of mentions gets no flood of replies
                }
                let delivery = state.args.delivery.clone();
                let token = state.args.bot_token.clone();
                let guard = state.args.in_flight.start();
                let metrics = state.args.metrics.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let sent = delivery
                        .send_channel_message(
                            token.expose(),
                            channel_id,
                            MENTION_REPLY,
                            Some(message_id),
                        )
                        .await;
                    match sent {
                        Ok(()) => metrics.reply("mention"),
                        Err(err) => warn!(channel_id, "cannot reply to a mention: {err}"),
                    }
                });
            }
            RouterMsg::Drain => state.draining = true,
            RouterMsg::SweepLimiter => {
                state.limiter.sweep(Instant::now());
            }
            RouterMsg::Reconfigure(limits) => {
                let old = &state.args.limits;
                // A new rate starts everyone with a full bucket; an unchanged one keeps them.
                if (old.rate_burst, old.rate_per_minute)
                    != (limits.rate_burst, limits.rate_per_minute)
                {
                    state.limiter = RateLimiter::new(limits.rate_burst, limits.rate_per_minute);
                }
                state.args.limits = limits;
            }
        }
        Ok(())
    }
}

/// What to do with a `/zunda` use before any model is involved.
enum Screening {
    /// Reply at once with this text (`kind` labels the metric); no model call.
    Immediate { kind: &'static str, text: String },
    /// Ask the model this question (trimmed by [`limits::check_question`]).
    Ask(String),
}

fn screen(state: &RouterState, event: &CommandEvent) -> Screening {
    let immediate = |kind, text| Screening::Immediate { kind, text };
    if state.draining {
        return immediate("draining", limits::SHUTTING_DOWN_REPLY.to_owned());
    }
    match limits::check_question(&event.question, state.args.limits.max_question_chars) {
        QuestionCheck::Empty => immediate("empty", limits::EMPTY_QUESTION_REPLY.to_owned()),
        QuestionCheck::TooLong { chars, limit } => {
            immediate("too_long", limits::too_long_reply(chars, limit))
        }
        QuestionCheck::Ok(question) => match state.limiter.check(event.user_id, Instant::now()) {
            Err(wait) => immediate("rate_limited", limits::rate_limited_reply(wait)),
            Ok(()) => Screening::Ask(question),
        },
    }
}

fn span_of(event: &CommandEvent) -> tracing::Span {
    info_span!(
        "interaction",
        interaction_id = event.interaction_id,
        channel_id = event.channel_id,
        user_id = event.user_id
    )
}

/// A `/zunda` use from the gateway: the acknowledgement is a REST call of its own.
fn on_command(state: &mut RouterState, mut event: CommandEvent) {
    let metrics = state.args.metrics.clone();
    metrics.interaction_received();
    let delivery = state.delivery(event.application_id);
    let span = span_of(&event);
    let guard = state.args.in_flight.start();
    match screen(state, &event) {
        Screening::Immediate { kind, text } => {
            tokio::spawn(
                async move {
                    let _guard = guard;
                    match delivery
                        .reply_now(event.interaction_id, &event.token, &text)
                        .await
                    {
                        Ok(()) => {
                            metrics.observe_ack_latency(event.received.elapsed().as_secs_f64());
                            metrics.reply(kind);
                            info!(kind, "replied without asking the model");
                        }
                        Err(err) => error!("cannot reply to the interaction: {err}"),
                    }
                }
                .instrument(span),
            );
        }
        Screening::Ask(question) => {
            event.question = question;
            let pending = queue(&state.args.channels, &event);
            tokio::spawn(
                async move {
                    let _guard = guard;
                    // The question is queued already; if Discord refused the acknowledgement
                    // there is no one to answer, but the channel still gets its exchange.
                    if acknowledge(&delivery, &metrics, &event).await {
                        answer(delivery, pending, metrics, event).await;
                    }
                }
                .instrument(span),
            );
        }
    }
}

/// A `/zunda` use from the HTTP interactions endpoint: the acknowledgement is the HTTP response,
/// whose message text is sent back on `reply`; the answer then replaces that message.
fn on_http_command(state: &mut RouterState, mut event: CommandEvent, reply: RpcReplyPort<String>) {
    let metrics = state.args.metrics.clone();
    metrics.interaction_received();
    let delivery = state.delivery(event.application_id);
    let span = span_of(&event);
    match screen(state, &event) {
        Screening::Immediate { kind, text } => {
            metrics.reply(kind);
            let _ = reply.send(text);
        }
        Screening::Ask(question) => {
            event.question = question;
            if reply.send(WAIT_REPLY.to_owned()).is_err() {
                return; // the HTTP request is gone: Discord never saw an acknowledgement
            }
            metrics.observe_ack_latency(event.received.elapsed().as_secs_f64());
            let pending = queue(&state.args.channels, &event);
            let guard = state.args.in_flight.start();
            tokio::spawn(
                async move {
                    let _guard = guard;
                    answer(delivery, pending, metrics, event).await;
                }
                .instrument(span),
            );
        }
    }
}

/// Defers the interaction; false (and logged) when Discord did not take it.
async fn acknowledge(delivery: &Delivery, metrics: &Metrics, event: &CommandEvent) -> bool {
    // Acknowledge before anything else: Discord forgets an interaction not acknowledged in 3 s.
    if let Err(err) = delivery.defer(event.interaction_id, &event.token).await {
        error!("cannot acknowledge the interaction, dropping it: {err}");
        metrics.reply("unacknowledged");
        return false;
    }
    let ack = event.received.elapsed();
    metrics.observe_ack_latency(ack.as_secs_f64());
    info!(ack_ms = ack.as_millis() as u64, "deferred");
    true
}

/// A question on its way through its channel's queue.
type PendingAnswer = Pin<Box<dyn Future<Output = Result<String, AskError>> + Send>>;

/// Puts the question in its channel's queue at once, in the router, so questions keep the order
/// in which they reached the bot (acknowledgements finish in any order).
fn queue(channels: &Channels, event: &CommandEvent) -> PendingAnswer {
    Box::pin(channels.submit(Question {
        channel_id: event.channel_id,
        user_id: event.user_id,
        user_name: event.user_name.clone(),
        text: event.question.clone(),
    }))
}

async fn answer(
    delivery: Arc<Delivery>,
    pending: PendingAnswer,
    metrics: Arc<Metrics>,
    event: CommandEvent,
) {
    let result = pending.await;
    metrics.observe_answer(event.received.elapsed().as_secs_f64());
    let (kind, content) = match result {
        Ok(answer) => (
            "answer",
            bound_reply(&quote_answer(&event.question, &answer)),
        ),
        Err(err) => {
            match &err {
                AskError::Failed(_) => warn!("no answer: {err}"),
                _ => error!("no answer: {err}"),
            }
            ("error", ERROR_REPLY.to_owned())
        }
    };
    let parts = split_message(&content, MESSAGE_LIMIT);
    let deadline = event.received + TOKEN_LIFETIME;
    match delivery.deliver(&event.token, &parts, deadline).await {
        Ok(()) => {
            metrics.reply(kind);
            info!(
                parts = parts.len(),
                total_ms = event.received.elapsed().as_millis() as u64,
                "answer delivered"
            );
        }
        Err(err) => {
            metrics.reply("undelivered");
            error!("cannot deliver the answer: {err}");
        }
    }
}
