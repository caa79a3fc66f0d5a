//! `/zunda` intake: a screened question gets its place in its channel's queue, then is recorded
//! and acknowledged (by REST from the gateway, in the HTTP response from the endpoint) while the
//! channel answers; in HTTP fleet mode it is only recorded, for the instance holding the channel.

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};
use zundamon_actors::{gate, Live, Question, Ticket};

use super::screening::{reply_now, screen, Screening};
use super::{span_of, CommandEvent, ControlReply, RouterMsg, RouterState};
use crate::discord::live;
use crate::discord::{ERROR_REPLY, WAIT_REPLY};
use crate::ops::metrics::Metrics;
use crate::question::lifecycle::{Job, Lifecycle, TOKEN_LIFETIME};
use crate::question::limits::BUSY_REPLY;
use crate::store::FleetPending;

/// error message (Discord waits 3 s for the HTTP reply).
const FLEET_RECORD_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a question waits for Discord to say where its channel sits.
const LOOKUP_BUDGET: Duration = Duration::from_millis(1500);

/// A `/zunda` use. From the gateway (`http_reply` is `None`) the acknowledgement is a REST call;
/// from the HTTP endpoint it is the text sent back on `http_reply`.
pub(super) fn on_command(
    state: &mut RouterState,
    event: CommandEvent,
    http_reply: Option<RpcReplyPort<ControlReply>>,
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
    if !event.looked_up && event.guild_id.is_some() {
        if let Some(unknown) = state.args.policy.lookup_needed(event.channel_id) {
            // Where the channel sits decides its settings (and maybe whether it may ask): ask
            // Discord once, then take the question again. It may be overtaken by a question in
            // the same channel meanwhile; only a channel never seen before waits for this.
            span.in_scope(|| info!(unknown, "asking Discord where the channel sits"));
            let (policy, delivery, myself) = (
                state.args.policy.clone(),
                state.args.delivery.clone(),
                state.myself.clone(),
            );
            let mut event = event;
            event.looked_up = true;
            state.args.in_flight.spawn(async move {
                let lookup = policy.parents.complete(&delivery, event.channel_id);
                let _ = tokio::time::timeout(LOOKUP_BUDGET, lookup).await;
                let message = match http_reply {
                    Some(reply) => RouterMsg::HttpCommand(event, reply),
                    None => RouterMsg::Command(event),
                };
                if myself.cast(message).is_err() {
                    error!("the event actor is gone: a question was dropped");
                }
            });
            return;
        }
    }
    let places = state.args.policy.places(event.channel_id, event.guild_id);
    let mut event = event;
    event.places = places.clone();
    let question = match screen(state, &event, &places, draining) {
        Screening::Ask(question) => question,
        Screening::Immediate {
            kind,
            text,
            ephemeral,
        } => {
            reply_now(state, event, http_reply, (kind, ephemeral), text, span);
            return;
        }
    };
    if state.args.policy.budgeted() {
        // Another process of a fleet may have counted some of this user's spending.
        let policy = state.args.policy.clone();
        let user = event.user_id;
        state
            .args
            .in_flight
            .spawn(async move { policy.refresh(user).await });
    }
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
            let _ = reply.send(wait_reply());
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
                (refusal.label(), false),
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
            places,
            attachments: event.attachments.clone(),
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
    reply: RpcReplyPort<ControlReply>,
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
            let _ = reply.send(message(BUSY_REPLY));
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
    if reply.send(message(text)).is_ok() && text == WAIT_REPLY {
        metrics.observe_ack_latency(received.elapsed().as_secs_f64());
        info!("recorded for the channel's fleet instance");
    }
}

/// The HTTP response is the acknowledgement: the endpoint sends it if it is still waiting.
fn acknowledge_http(
    lifecycle: &Lifecycle,
    received: Instant,
    reply: RpcReplyPort<ControlReply>,
) -> Result<(), &'static str> {
    if reply.send(wait_reply()).is_err() {
        // The endpoint gave up waiting (its 3 s budget): Discord never saw an acknowledgement.
        warn!("the HTTP request was gone before the acknowledgement: withdrawing the question");
        return Err("ack_failed");
    }
    lifecycle
        .metrics
        .observe_ack_latency(received.elapsed().as_secs_f64());
    Ok(())
}

/// An HTTP response message everyone in the channel sees.
fn message(text: &str) -> ControlReply {
    ControlReply::Message {
        text: text.to_owned(),
        ephemeral: false,
    }
}

/// The acknowledgement over HTTP: the wait message.
fn wait_reply() -> ControlReply {
    message(WAIT_REPLY)
}
