//! Resuming the questions a stopped process left recorded and acknowledged: each goes to the back
//! of its channel's queue (or gets the busy reply, or is dropped once its token has expired).

use tokio::time::Instant;
use tracing::{info, warn, Instrument};
use zundamon_actors::{Question, Ticket};

use super::{span_of, RouterState};
use crate::question::lifecycle::{Job, Lifecycle, TOKEN_LIFETIME};
use crate::question::limits::BUSY_REPLY;
use crate::store::PendingQuestion;

/// Questions left by a process that stopped: each goes to the back of its channel's queue (in
/// the order given, which is the order they were accepted), with an open gate: they were
/// acknowledged already.
pub(super) fn on_resume(state: &mut RouterState, questions: Vec<PendingQuestion>) {
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
                // Where the accepting process placed it, if it recorded that.
                places: if question.places.is_empty() {
                    state
                        .args
                        .policy
                        .places(question.channel_id, question.guild_id)
                } else {
                    question.places.clone()
                },
                attachments: question.attachments.clone(),
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
