//! The channel memory commands, `/zunda-reset` (with its permission check) and `/zunda-memory`:
//! acknowledged by REST or in the HTTP response, answered with what the channel remembers.

use std::time::Duration;

use ractor::RpcReplyPort;
use tracing::{error, info, warn, Instrument};
use zundamon_actors::Channels;

use super::{span_of, ControlEvent, ControlKind, ControlReply, RouterState};
use crate::config::DEFAULT_MODEL;
use crate::discord::deliver::Delivery;
use crate::question::lifecycle::TOKEN_LIFETIME;
use crate::question::policy::Policy;
use crate::store::Store;
use crate::voice;

/// Discord's ADMINISTRATOR, MANAGE_GUILD and MANAGE_MESSAGES permission bits.
const ADMINISTRATOR: u64 = 1 << 3;
const MANAGE_GUILD: u64 = 1 << 5;
const MANAGE_MESSAGES: u64 = 1 << 13;

/// Whether a member with `permissions` has one of the `needed` bits (or is an administrator).
/// Discord hides a command from members without its default permission; it is checked again
/// here, so a permission override in the server settings cannot hand it to everyone by mistake.
fn permitted(permissions: Option<u64>, needed: u64) -> bool {
    permissions.is_some_and(|bits| bits & (ADMINISTRATOR | needed) != 0)
}

/// `/zunda-reset`, `/zunda-memory` and `/zunda-model`.
pub(super) fn on_control(
    state: &mut RouterState,
    event: ControlEvent,
    http: Option<RpcReplyPort<ControlReply>>,
) {
    let span = span_of(event.interaction_id, event.channel_id, event.user_id);
    let delivery = state.delivery(event.application_id);
    let channels = state.args.channels.clone();
    let store = state.args.store.clone();
    let metrics = state.args.metrics.clone();
    let policy = state.args.policy.clone();
    let admin = policy.is_admin(event.user_id);
    let places = policy.places(event.channel_id, event.guild_id);
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
                    ControlKind::Reset
                        if !admin && !permitted(event.permissions, MANAGE_MESSAGES) =>
                    {
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
                    ControlKind::Model(_)
                        if !admin && !permitted(event.permissions, MANAGE_GUILD) =>
                    {
                        metrics.reply("model_forbidden");
                        respond(ControlReply::Message {
                            text: voice::MODEL_FORBIDDEN_REPLY.to_owned(),
                            ephemeral: true,
                        })
                        .await
                    }
                    ControlKind::Model(name) => {
                        let name = name.trim().to_owned();
                        let config = policy.config();
                        if !config.has_model(&name) {
                            return respond(ControlReply::Message {
                                text: voice::unknown_model_reply(&name, &config.model_names()),
                                ephemeral: true,
                            })
                            .await;
                        }
                        respond(ControlReply::Defer { ephemeral: false }).await?;
                        let is_default = name == DEFAULT_MODEL;
                        let chosen = (!is_default).then_some(name.as_str());
                        let text = match policy.choose_model(event.channel_id, chosen).await {
                            Ok(()) => {
                                metrics.reply("model");
                                info!(model = %name, "the channel's model was chosen");
                                voice::model_chosen_reply(&name, is_default)
                            }
                            Err(err) => {
                                error!("cannot keep the channel's model: {err}");
                                voice::MODEL_FAILED_REPLY.to_owned()
                            }
                        };
                        delivery
                            .edit_original(token, &text, deliver_by)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    ControlKind::Memory if over_http => {
                        respond(ControlReply::Defer { ephemeral: true }).await?;
                        let text = memory_text(&channels, store.as_ref(), event.channel_id).await;
                        let text = text + &settings_text(&policy, &places).await;
                        metrics.reply("memory");
                        delivery
                            .edit_original(token, &text, deliver_by)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    ControlKind::Memory => {
                        let text = memory_text(&channels, store.as_ref(), event.channel_id).await;
                        let text = text + &settings_text(&policy, &places).await;
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

/// What `/zunda-memory` adds: the settings a question here is answered with.
async fn settings_text(policy: &Policy, places: &[u64]) -> String {
    let settings = policy.settings(places).await;
    voice::settings_lines(
        &settings.model,
        settings.search,
        settings.persona.is_some(),
        settings.chosen,
    )
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
