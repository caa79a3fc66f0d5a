//! The Discord event actor: every gateway event the bot acts on (and every command that comes in
//! over the HTTP interactions endpoint) arrives here as a message, in gateway order. It decides
//! (validation, rate limit, queue limits, draining), fixes each question's place in its channel's
//! queue at once, and leaves the rest of the question's life ([`super::lifecycle`]: record,
//! acknowledge, answer, deliver) to a task of its own. It never waits for an answer itself, so one
//! slow channel cannot delay another's acknowledgement.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, info_span, warn, Instrument};
use zundamon_actors::{gate, Channels, Live, Question, Ticket};

use super::admission::Admission;
use super::lifecycle::{Active, Job, Lifecycle, TOKEN_LIFETIME};
use crate::config::{LimitsConfig, Secret};
use crate::discord::deliver::Delivery;
use crate::discord::live;
use crate::discord::{ERROR_REPLY, MENTION_REPLY, WAIT_REPLY};
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::InFlight;
use crate::question::limits::{self, QuestionCheck, RateLimiter, BUSY_REPLY};
use crate::store::FleetPending;
use crate::store::{PendingQuestion, Store};
use crate::voice;

/// How long an HTTP fleet instance may take to record a question before it replies with the
/// error message (Discord waits 3 s for the HTTP reply).
const FLEET_RECORD_TIMEOUT: Duration = Duration::from_secs(2);
/// How often idle rate-limit buckets are dropped.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

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
    pub user_name: String,
    pub question: String,
    /// When the event arrived (for the acknowledgement latency).
    pub received: Instant,
    /// The same moment on the wall clock (recorded with a pending question).
    pub received_at: SystemTime,
}

impl CommandEvent {
    /// The pending-table row of this question, asked as `question` (checked and trimmed).
    fn into_pending(self, question: String) -> PendingQuestion {
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
        }
    }
}

/// Which channel memory command was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// `/zunda-reset`: forget the channel's window.
    Reset,
    /// `/zunda-memory`: show (ephemerally) what the channel remembers.
    Memory,
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
    pub user_id: u64,
    /// The invoking member's permissions in the channel, as Discord computed them.
    pub permissions: Option<u64>,
    pub received: Instant,
}

/// Discord's ADMINISTRATOR and MANAGE_MESSAGES permission bits.
const ADMINISTRATOR: u64 = 1 << 3;
const MANAGE_MESSAGES: u64 = 1 << 13;

/// Whether a member with `permissions` may use `/zunda-reset`. Discord hides the command from
/// members without Manage Messages by default; it is checked again here, so a permission
/// override in the server settings cannot hand it to everyone by mistake.
fn reset_allowed(permissions: Option<u64>) -> bool {
    permissions.is_some_and(|bits| bits & (ADMINISTRATOR | MANAGE_MESSAGES) != 0)
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
    /// A `/zunda` use from the HTTP interactions endpoint: reply with the text of the immediate
    /// response message (the acknowledgement), then answer.
    HttpCommand(CommandEvent, RpcReplyPort<String>),
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
}

pub struct RouterState {
    args: RouterArgs,
    bot_user_id: Option<u64>,
    limiter: RateLimiter,
    admission: Admission,
    active: Active,
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

/// What to do with a `/zunda` use before any model is involved.
enum Screening {
    /// Reply at once with this text (`kind` labels the metric); no model call.
    Immediate { kind: &'static str, text: String },
    /// Ask the model this question (trimmed by [`limits::check_question`]).
    Ask(String),
}

fn screen(state: &RouterState, event: &CommandEvent, draining: bool) -> Screening {
    let immediate = |kind, text| Screening::Immediate { kind, text };
    if draining {
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

fn span_of(interaction_id: u64, channel_id: u64, user_id: u64) -> tracing::Span {
    info_span!("interaction", interaction_id, channel_id, user_id)
}

/// A `/zunda` use. From the gateway (`http_reply` is `None`) the acknowledgement is a REST call;
/// from the HTTP endpoint it is the text sent back on `http_reply`.
fn on_command(
    state: &mut RouterState,
    event: CommandEvent,
    http_reply: Option<RpcReplyPort<String>>,
) {
    let metrics = state.args.metrics.clone();
    metrics.interaction_received();
    let span = span_of(event.interaction_id, event.channel_id, event.user_id);
    if http_reply.as_ref().is_some_and(RpcReplyPort::is_closed) {
        // The endpoint already answered "busy" (its 3 s budget ran out): nothing to do, and no
        // rate-limit token or queue place to spend.
        span.in_scope(|| warn!("the HTTP request gave up before the question was taken"));
        return;
    }
    let lifecycle = state.lifecycle(event.application_id);
    // A fleet instance that is draining still records questions: another instance answers them
    // (the load balancer may send some until it sees this instance is no longer ready).
    let fleet = state.args.fleet.clone().filter(|_| http_reply.is_some());
    let draining = state.draining && fleet.is_none();
    let question = match screen(state, &event, draining) {
        Screening::Ask(question) => question,
        Screening::Immediate { kind, text } => {
            reply_now(state, event, http_reply, kind, text, span);
            return;
        }
    };
    let http_reply = match (fleet, http_reply) {
        (Some(fleet), Some(reply)) => {
            let guard = state.args.in_flight.start();
            let limits = (
                state.args.limits.max_queued_per_channel,
                state.args.limits.max_pending,
            );
            let recording = record_for_fleet(fleet, event, question, reply, limits, metrics, guard);
            state.args.in_flight.spawn(recording.instrument(span));
            return;
        }
        (_, http_reply) => http_reply,
    };
    // (A fleet instance only records: the holder of the channel claims the question when it
    // resumes it.)
    let Some(active) = state.active.claim(event.interaction_id) else {
        // A replay of an interaction already in hand (e.g. events re-sent after a RESUME).
        span.in_scope(|| info!("ignoring an interaction already being answered"));
        if let Some(reply) = http_reply {
            let _ = reply.send(WAIT_REPLY.to_owned());
        }
        return;
    };
    let deliver_by = event.received + TOKEN_LIFETIME;
    let start_by = deliver_by
        .checked_sub(state.args.answer_budget)
        .unwrap_or(event.received);
    let permit = match state.admission.admit(
        event.channel_id,
        start_by.saturating_duration_since(Instant::now()),
    ) {
        Ok(permit) => permit,
        Err(refusal) => {
            span.in_scope(|| warn!(why = refusal.label(), "queue full: answering busy"));
            reply_now(
                state,
                event,
                http_reply,
                refusal.label(),
                BUSY_REPLY.to_owned(),
                span,
            );
            return;
        }
    };

    // The question's place in its channel is fixed here, before anything can reorder it.
    let (keeper, gate) = gate();
    let started = zundamon_actors::Started::default();
    let mut ticket = Ticket::new(Some(event.interaction_id), Some(start_by))
        .gated(gate)
        .timed(started.clone());
    let live = state.args.stream_every.map(|every| {
        let (progress, states) = watch::channel(Live::Waiting);
        ticket.progress = Some(progress);
        (states, every)
    });
    let answer = Box::pin(state.args.channels.submit_with(
        Question {
            channel_id: event.channel_id,
            user_id: event.user_id,
            user_name: event.user_name.clone(),
            text: question.clone(),
        },
        ticket,
    ));
    let received = event.received;
    let mut job = Job {
        question: event.into_pending(question),
        received,
        deliver_by,
        answer,
        started,
        permit: Some(permit),
        fence: None,
        keep_row: false,
        live: None,
        active,
        in_flight: state.args.in_flight.start(),
    };
    let tasks = state.args.in_flight.clone();
    tasks.spawn(
        async move {
            // A refused acknowledgement withdraws the question through its gate; `finish` then
            // sees it skipped by the channel.
            let (recorded, acknowledged) = match http_reply {
                // Recorded together with the deferral, so a slow store never pushes the
                // acknowledgement past Discord's 3 s.
                None => {
                    tokio::join!(
                        lifecycle.record(&job.question),
                        lifecycle.acknowledge(&job.question, job.received)
                    )
                }
                // The HTTP response is the acknowledgement: record first (within its budget).
                Some(reply) => {
                    let recorded = lifecycle.record(&job.question).await;
                    (recorded, acknowledge_http(&lifecycle, job.received, reply))
                }
            };
            let acknowledged = lifecycle
                .settle(&mut job, recorded, acknowledged, keeper)
                .await;
            if let (true, Some((states, every))) = (acknowledged, live) {
                job.live = Some(live::View::start(
                    lifecycle.delivery.clone(),
                    job.question.token.clone(),
                    job.question.question.clone(),
                    states,
                    every,
                    job.deliver_by,
                    Some(lifecycle.follow_up_log(job.question.interaction_id, job.fence)),
                ));
            }
            lifecycle.finish(job).await;
        }
        .instrument(span),
    );
}

/// HTTP fleet mode: the question is recorded in the shared pending table (the instance holding
/// the channel's lease answers it), then acknowledged with the HTTP response.
async fn record_for_fleet(
    fleet: Arc<FleetPending>,
    event: CommandEvent,
    question: String,
    reply: RpcReplyPort<String>,
    (max_queued, max_pending): (usize, usize),
    metrics: Arc<Metrics>,
    _guard: crate::ops::shutdown::InFlightGuard,
) {
    let received = event.received;
    let pending = event.into_pending(question);
    // Recorded before the acknowledgement: an accepted question is never lost. Bounded: Discord
    // drops a reply that comes after 3 s. The queue limits hold across the fleet: the store
    // counts the channel's (and the fleet's) questions in the same statement.
    let recorded = tokio::time::timeout(
        FLEET_RECORD_TIMEOUT,
        fleet.record_within(&pending, max_queued, max_pending),
    )
    .await;
    let text = match recorded {
        Ok(Ok(true)) => WAIT_REPLY,
        Ok(Ok(false)) => {
            warn!("queue full in the fleet: answering busy");
            metrics.reply("busy_channel");
            let _ = reply.send(BUSY_REPLY.to_owned());
            return;
        }
        Ok(Err(err)) => {
            error!("cannot record the question for the fleet: {err}");
            ERROR_REPLY
        }
        Err(_) => {
            error!("recording the question for the fleet took too long");
            ERROR_REPLY
        }
    };
    if reply.send(text.to_owned()).is_ok() && text == WAIT_REPLY {
        metrics.observe_ack_latency(received.elapsed().as_secs_f64());
        info!("recorded for the channel's fleet instance");
    }
}

/// The HTTP response is the acknowledgement: the endpoint sends it if it is still waiting.
fn acknowledge_http(
    lifecycle: &Lifecycle,
    received: Instant,
    reply: RpcReplyPort<String>,
) -> Result<(), &'static str> {
    if reply.send(WAIT_REPLY.to_owned()).is_err() {
        // The endpoint gave up waiting (its 3 s budget): Discord never saw an acknowledgement.
        warn!("the HTTP request was gone before the acknowledgement: withdrawing the question");
        return Err("ack_failed");
    }
    lifecycle
        .metrics
        .observe_ack_latency(received.elapsed().as_secs_f64());
    Ok(())
}

/// Answers at once without the model (bad question, rate limit, busy, draining).
fn reply_now(
    state: &mut RouterState,
    event: CommandEvent,
    http_reply: Option<RpcReplyPort<String>>,
    kind: &'static str,
    text: String,
    span: tracing::Span,
) {
    let metrics = state.args.metrics.clone();
    if let Some(reply) = http_reply {
        metrics.reply(kind);
        let _ = reply.send(text);
        return;
    }
    let delivery = state.delivery(event.application_id);
    let guard = state.args.in_flight.start();
    state.args.in_flight.spawn(
        async move {
            let _guard = guard;
            match delivery
                .reply_now(event.interaction_id, event.token.expose(), &text)
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

/// Questions left by a process that stopped: each goes to the back of its channel's queue (in
/// the order given, which is the order they were accepted), with an open gate: they were
/// acknowledged already.
fn on_resume(state: &mut RouterState, questions: Vec<PendingQuestion>) {
    if state.draining && state.args.fleet.is_some() {
        // Leaving the fleet: another instance (or the next process) takes them.
        return;
    }
    let metrics = state.args.metrics.clone();
    for question in questions {
        let span = span_of(
            question.interaction_id,
            question.channel_id,
            question.user_id,
        );
        let lifecycle = state.lifecycle(question.application_id);
        let Some(active) = state.active.claim(question.interaction_id) else {
            continue;
        };
        let age = question.age();
        let Some(left) = TOKEN_LIFETIME.checked_sub(age) else {
            span.in_scope(|| {
                warn!(
                    age_secs = age.as_secs(),
                    "a pending question's token has expired: dropping it unanswered"
                )
            });
            metrics.resumed("expired");
            let fence = Some(question.fence);
            state.args.in_flight.spawn(
                async move {
                    lifecycle.forget(&question, fence).await;
                }
                .instrument(span),
            );
            continue;
        };
        let now = Instant::now();
        let deliver_by = now + left;
        let start_by = deliver_by
            .checked_sub(state.args.answer_budget)
            .unwrap_or(now);
        // Resumed questions keep the queue limits too (the busy reply replaces 「ちょっと待ってね。」).
        let permit = match state
            .admission
            .admit(question.channel_id, start_by.saturating_duration_since(now))
        {
            Ok(permit) => permit,
            Err(refusal) => {
                span.in_scope(|| warn!(why = refusal.label(), "queue full: answering busy"));
                let guard = state.args.in_flight.start();
                let refused = refuse_resumed(lifecycle, question, refusal.label(), guard);
                state.args.in_flight.spawn(refused.instrument(span));
                continue;
            }
        };
        metrics.resumed("resumed");
        let started = zundamon_actors::Started::default();
        let answer = Box::pin(state.args.channels.submit_with(
            Question {
                channel_id: question.channel_id,
                user_id: question.user_id,
                user_name: question.user_name.clone(),
                text: question.question.clone(),
            },
            Ticket::new(Some(question.interaction_id), Some(start_by)).timed(started.clone()),
        ));
        span.in_scope(|| info!(age_secs = age.as_secs(), "resuming a pending question"));
        let job = Job {
            fence: Some(question.fence),
            question,
            received: now,
            deliver_by,
            answer,
            started,
            permit: Some(permit),
            keep_row: false,
            live: None,
            active,
            in_flight: state.args.in_flight.start(),
        };
        state
            .args
            .in_flight
            .spawn(async move { lifecycle.finish(job).await }.instrument(span));
    }
}

/// A resumed question refused by the queue limits: its deferred reply becomes the busy reply, and
/// the question is finished (if this process still holds it).
async fn refuse_resumed(
    lifecycle: Lifecycle,
    question: PendingQuestion,
    kind: &'static str,
    _guard: crate::ops::shutdown::InFlightGuard,
) {
    let fence = Some(question.fence);
    if !lifecycle
        .store
        .holds(question.interaction_id, question.fence)
        .await
        .unwrap_or(false)
    {
        return;
    }
    let deliver_by = Instant::now() + TOKEN_LIFETIME.saturating_sub(question.age());
    match lifecycle
        .delivery
        .edit_original(question.token.expose(), BUSY_REPLY, deliver_by)
        .await
    {
        Ok(()) => lifecycle.metrics.reply(kind),
        Err(err) => warn!("cannot deliver the busy reply: {err}"),
    }
    lifecycle.forget(&question, fence).await;
}

fn on_message(
    state: &mut RouterState,
    channel_id: u64,
    message_id: u64,
    author_id: u64,
    mentioned: &[u64],
) {
    let Some(bot) = state.bot_user_id else {
        return;
    };
    if !mentioned.contains(&bot) || author_id == bot {
        return;
    }
    if state.limiter.check(author_id, Instant::now()).is_err() {
        return; // a flood of mentions gets no flood of replies
    }
    let delivery = state.args.delivery.clone();
    let token = state.args.bot_token.clone();
    let guard = state.args.in_flight.start();
    let metrics = state.args.metrics.clone();
    state.args.in_flight.spawn(async move {
        let _guard = guard;
        // The nonce makes Discord post the reply once, even if another process of the bot got
        // the same message, or a retry follows a reply whose answer was lost.
        let sent = delivery
            .send_channel_message(
                token.expose(),
                channel_id,
                MENTION_REPLY,
                Some(message_id),
                Some(message_id),
            )
            .await;
        match sent {
            Ok(()) => metrics.reply("mention"),
            Err(err) => warn!(channel_id, "cannot reply to a mention: {err}"),
        }
    });
}

/// `/zunda-reset` and `/zunda-memory`.
fn on_control(
    state: &mut RouterState,
    event: ControlEvent,
    http: Option<RpcReplyPort<ControlReply>>,
) {
    let span = span_of(event.interaction_id, event.channel_id, event.user_id);
    let delivery = state.delivery(event.application_id);
    let channels = state.args.channels.clone();
    let store = state.args.store.clone();
    let metrics = state.args.metrics.clone();
    let guard = state.args.in_flight.start();
    // In the HTTP fleet the channel's window lives in whichever instance holds the channel.
    let in_fleet = http.is_some() && state.args.fleet.is_some();
    tokio::spawn(
        async move {
            let _guard = guard;
            let token = event.token.expose();
            let id = event.interaction_id;
            let deliver_by = event.received + TOKEN_LIFETIME;
            let over_http = http.is_some();
            let mut http = http;
            let mut respond =
                |reply: ControlReply| acknowledge_control(&delivery, http.take(), id, token, reply);
            let sent: Result<(), String> = async {
                match event.kind {
                    ControlKind::Reset if !reset_allowed(event.permissions) => {
                        metrics.reply("reset_forbidden");
                        respond(ControlReply::Message {
                            text: voice::RESET_FORBIDDEN_REPLY.to_owned(),
                            ephemeral: true,
                        })
                        .await
                    }
                    ControlKind::Reset if in_fleet => {
                        metrics.reply("reset_unavailable");
                        respond(ControlReply::Message {
                            text: voice::RESET_UNAVAILABLE_REPLY.to_owned(),
                            ephemeral: true,
                        })
                        .await
                    }
                    ControlKind::Reset => {
                        respond(ControlReply::Defer { ephemeral: false }).await?;
                        // Queued behind the questions already in the channel: a question in
                        // flight is answered (and remembered) first, then forgotten.
                        let text = match channels.reset(event.channel_id).await {
                            Ok(forgotten) => {
                                metrics.reply("reset");
                                voice::reset_reply(forgotten)
                            }
                            Err(err) => {
                                error!("cannot reset the channel's memory: {err}");
                                voice::RESET_FAILED_REPLY.to_owned()
                            }
                        };
                        delivery
                            .edit_original(token, &text, deliver_by)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    // Over HTTP the store may be slower than the response can wait: defer (only
                    // to the asker), then edit in the text.
                    ControlKind::Memory if over_http => {
                        respond(ControlReply::Defer { ephemeral: true }).await?;
                        let text = memory_text(&channels, store.as_ref(), event.channel_id).await;
                        metrics.reply("memory");
                        delivery
                            .edit_original(token, &text, deliver_by)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    ControlKind::Memory => {
                        let text = memory_text(&channels, store.as_ref(), event.channel_id).await;
                        metrics.reply("memory");
                        respond(ControlReply::Message {
                            text,
                            ephemeral: true,
                        })
                        .await
                    }
                }
            }
            .await;
            if let Err(err) = sent {
                warn!("cannot answer the memory command: {err}");
            }
        }
        .instrument(span),
    );
}

/// Acknowledges a channel memory command: by REST over the gateway, in the HTTP response over
/// `POST /interactions`.
async fn acknowledge_control(
    delivery: &Delivery,
    http: Option<RpcReplyPort<ControlReply>>,
    interaction_id: u64,
    token: &str,
    reply: ControlReply,
) -> Result<(), String> {
    match (http, reply) {
        (Some(port), reply) => port
            .send(reply)
            .map_err(|_| "the HTTP request was gone before the reply".to_owned()),
        (None, ControlReply::Defer { .. }) => delivery
            .defer(interaction_id, token)
            .await
            .map_err(|err| err.to_string()),
        (None, ControlReply::Message { text, .. }) => delivery
            .reply_ephemeral(interaction_id, token, &text)
            .await
            .map_err(|err| err.to_string()),
    }
}

/// What `/zunda-memory` says: the live window's length, or the stored one.
async fn memory_text(channels: &Channels, store: &dyn Store, channel_id: u64) -> String {
    let Some(report) = channels.memory(channel_id).await else {
        return voice::RESET_FAILED_REPLY.to_owned();
    };
    let (remembered, in_ram) = match report.in_memory {
        Some(count) => (count, true),
        None => {
            let load = store.load(channel_id, report.window_exchanges);
            match tokio::time::timeout(Duration::from_millis(1500), load).await {
                Ok(Ok(stored)) => (stored.len(), false),
                _ => return voice::RESET_FAILED_REPLY.to_owned(),
            }
        }
    };
    voice::memory_reply(remembered, report.window_exchanges, in_ram, report.idle)
}
