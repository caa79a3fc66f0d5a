//! Mentions of the bot in a guild message: a short reply pointing to `/zunda` (rate limited, and
//! posted once thanks to the message nonce).

use tokio::time::Instant;
use tracing::warn;

use super::RouterState;
use crate::discord::MENTION_REPLY;

/// A guild message that mentions the bot gets the mention reply.
pub(super) fn on_message(
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
    if !state.args.policy.may_mention(author_id) {
        state.args.metrics.question_refused("access");
        return; // a blocked user gets no reply
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
