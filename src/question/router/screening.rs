//! Screening a `/zunda` use before any model is involved (draining, empty or too long, rate
//! limit), and the immediate reply that answers it without the model.

use ractor::RpcReplyPort;
use tokio::time::Instant;
use tracing::{error, info, Instrument};

use super::{CommandEvent, ControlReply, RouterState};
use crate::agent::attachments;
use crate::question::limits::{self, QuestionCheck};
use crate::question::policy::Refused;
use crate::voice;

/// What to do with a `/zunda` use before any model is involved.
pub(super) enum Screening {
    /// Reply at once with this text (`kind` labels the metric; only the asker sees it if
    /// `ephemeral`); no model call.
    Immediate {
        kind: &'static str,
        text: String,
        ephemeral: bool,
    },
    /// Ask the model this question (trimmed by [`limits::check_question`]).
    Ask(String),
}

pub(super) fn screen(
    state: &RouterState,
    event: &CommandEvent,
    places: &[u64],
    draining: bool,
) -> Screening {
    let immediate = |kind, text| Screening::Immediate {
        kind,
        text,
        ephemeral: false,
    };
    if draining {
        return immediate("draining", limits::SHUTTING_DOWN_REPLY.to_owned());
    }
    // Refusals first: they cost nothing, not even a rate-limit token.
    match state
        .args
        .policy
        .screen(event.user_id, event.roles.as_deref(), places)
    {
        Ok(()) => {}
        Err(refused) => {
            let (reason, text) = match refused {
                Refused::Access(_) => ("access", voice::ACCESS_REFUSED_REPLY),
                Refused::Budget => ("token_cap", voice::BUDGET_SPENT_REPLY),
                Refused::Dms => ("dms", voice::DMS_REFUSED_REPLY),
            };
            state.args.metrics.question_refused(reason);
            info!(reason, why = ?refused, "refused before the model");
            return Screening::Immediate {
                kind: reason,
                text: text.to_owned(),
                ephemeral: true,
            };
        }
    }
    match limits::check_question(&event.question, state.args.limits.max_question_chars) {
        QuestionCheck::Empty => immediate("empty", limits::EMPTY_QUESTION_REPLY.to_owned()),
        QuestionCheck::TooLong { chars, limit } => {
            immediate("too_long", limits::too_long_reply(chars, limit))
        }
        QuestionCheck::Ok(question) => {
            if !event.attachments.is_empty() || event.missing_attachment {
                let vision = state.args.policy.settings_now(places).vision;
                if let Err((kind, text)) = attachments::screen(
                    &event.attachments,
                    event.missing_attachment,
                    state.args.limits.max_image_bytes,
                    vision,
                ) {
                    info!(kind, "an attachment refused before the model");
                    return immediate(kind, text);
                }
            }
            match state.limiter.check(event.user_id, Instant::now()) {
                Err(wait) => immediate("rate_limited", limits::rate_limited_reply(wait)),
                Ok(()) => Screening::Ask(attachments::with_placeholders(
                    &question,
                    &event.attachments,
                )),
            }
        }
    }
}

/// Answers at once without the model (bad question, rate limit, busy, draining).
pub(super) fn reply_now(
    state: &mut RouterState,
    event: CommandEvent,
    http_reply: Option<RpcReplyPort<ControlReply>>,
    (kind, ephemeral): (&'static str, bool),
    text: String,
    span: tracing::Span,
) {
    let metrics = state.args.metrics.clone();
    if let Some(reply) = http_reply {
        metrics.reply(kind);
        let _ = reply.send(ControlReply::Message { text, ephemeral });
        return;
    }
    let delivery = state.delivery(event.application_id);
    let guard = state.args.in_flight.start();
    state.args.in_flight.spawn(
        async move {
            let _guard = guard;
            let (id, token) = (event.interaction_id, event.token.expose());
            let replied = if ephemeral {
                delivery.reply_ephemeral(id, token, &text).await
            } else {
                delivery.reply_now(id, token, &text).await
            };
            match replied {
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
