//! Bringing the messages to the final answer after the live view stopped: each part edited or
//! posted, a follow-up with an unknown outcome settled by looking before posting again, and the
//! follow-ups the final split no longer needs deleted.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::shown::{Shown, UNSURE};
use crate::discord::deliver::{Delivery, DeliveryError};
use crate::discord::follow_ups::Lookup;

/// How long after a lost answer to look for the follow-up: a request that timed out on our side
/// may still be on its way through Discord.
const SETTLE_DELAY: Duration = Duration::from_secs(1);
/// How often a follow-up proven missing is posted again (each time only after a look).
const MAX_RESENDS: u32 = 3;

impl Shown {
    /// Brings message `index` to `part` (the final answer's part, as the non-streaming path
    /// splits it): edits it if it shows something else, posts it if it does not exist yet. With
    /// nothing shown this is the plain delivery.
    pub async fn finish_part(
        &mut self,
        delivery: &Delivery,
        token: &str,
        index: usize,
        part: &str,
        deliver_by: Instant,
    ) -> Result<(), DeliveryError> {
        let unsure = index > 0 && self.follow_ups.get(index - 1) == Some(&UNSURE);
        // Only this process's own post or edit with the file shows the part's text (the live
        // view never shows it), so a part shown already carries its file.
        let file = self.file_at(index);
        if self.content(index) == Some(part) && !unsure {
            return Ok(());
        }
        if let Some(until) = self.hold_until.take() {
            tokio::time::sleep_until(until).await;
        }
        match index {
            0 => delivery.edit_original(token, part, deliver_by).await?,
            _ if unsure => return self.settle(delivery, token, index, part, deliver_by).await,
            _ => match self.follow_ups.get(index - 1) {
                Some(&id) => {
                    delivery
                        .edit_follow_up_with(token, id, part, file.as_ref(), deliver_by)
                        .await?
                }
                None => match delivery
                    .create_follow_up_with(token, part, file.as_ref(), deliver_by)
                    .await
                {
                    Ok(id) => self.follow_ups_changed(Some(id)).await,
                    Err(DeliveryError::Unknown { .. }) => {
                        self.unsure(part).await;
                        return self.settle(delivery, token, index, part, deliver_by).await;
                    }
                    Err(err) => return Err(err),
                },
            },
        }
        self.set(index, part);
        Ok(())
    }

    /// Message `index` is a follow-up whose post had an unknown outcome: finds out whether it
    /// exists and brings it to `part`. Found, it is kept (and edited if need be); proven missing,
    /// it is posted once more (and if that answer is lost too, looked for again, up to
    /// [`MAX_RESENDS`] times); when that cannot be told, it is left alone: a part that may be
    /// missing is better than one shown twice.
    async fn settle(
        &mut self,
        delivery: &Delivery,
        token: &str,
        index: usize,
        part: &str,
        deliver_by: Instant,
    ) -> Result<(), DeliveryError> {
        let mut resends = 0;
        let file = self.file_at(index);
        loop {
            let sent = self.content(index).unwrap_or_default().to_owned();
            let lookup = match self.origin {
                Some(origin) if !sent.is_empty() => {
                    tokio::time::sleep(SETTLE_DELAY).await;
                    let known: Vec<u64> = self
                        .follow_ups
                        .iter()
                        .copied()
                        .filter(|&id| id != UNSURE)
                        .collect();
                    delivery
                        .find_follow_up(origin, &sent, &known, deliver_by)
                        .await
                }
                Some(_) => Lookup::Unknowable("what was posted is not known here".into()),
                None => Lookup::Unknowable("the channel is not known here".into()),
            };
            match lookup {
                Lookup::Found(id) => {
                    delivery.count_unknown_follow_up("found");
                    info!(
                        part = index + 1,
                        message_id = id,
                        "a follow-up whose answer was lost had been posted: keeping it"
                    );
                    self.settled(index, id).await;
                    // Found showing `part`, it was posted with its file.
                    if sent != part {
                        delivery
                            .edit_follow_up_with(token, id, part, file.as_ref(), deliver_by)
                            .await?;
                    }
                    self.set(index, part);
                    return Ok(());
                }
                Lookup::Absent if resends < MAX_RESENDS => {
                    resends += 1;
                    delivery.count_unknown_follow_up("resent");
                    info!(
                        part = index + 1,
                        "a follow-up whose answer was lost was not posted: posting it once more"
                    );
                    let posted = delivery
                        .create_follow_up_with(token, part, file.as_ref(), deliver_by)
                        .await;
                    match posted {
                        Ok(id) => {
                            self.settled(index, id).await;
                            self.set(index, part);
                            return Ok(());
                        }
                        // Unknown again: look again before anything else.
                        Err(DeliveryError::Unknown { .. }) => self.set(index, part),
                        Err(err) => return Err(err),
                    }
                }
                Lookup::Absent | Lookup::Unknowable(_) => {
                    let why = match lookup {
                        Lookup::Unknowable(why) => why,
                        _ => format!("posted {resends} more time(s), each answer lost"),
                    };
                    delivery.count_unknown_follow_up("given_up");
                    warn!(
                        part = index + 1,
                        why = %why,
                        "part of the answer may be missing: a follow-up's post had an unknown \
                         outcome and cannot be checked, so it is not posted again (it could show \
                         twice)"
                    );
                    self.set(index, part);
                    return Ok(());
                }
            }
        }
    }

    /// Deletes the follow-ups past the first `parts` messages (the final split needed fewer than
    /// the stream had, because a boundary moved).
    pub async fn finish_extras(
        &mut self,
        delivery: &Delivery,
        token: &str,
        parts: usize,
        deliver_by: Instant,
    ) -> Result<(), DeliveryError> {
        let keep = parts.saturating_sub(1);
        if self.follow_ups.len() <= keep {
            return Ok(());
        }
        let extras = self.follow_ups.split_off(keep);
        self.contents.truncate(keep + 1);
        // Noted gone first: a process dying in between leaves a stray message, never an id the
        // next one would fail to edit.
        self.follow_ups_changed(None).await;
        // An unsure one has no id to delete by.
        for extra in extras.into_iter().rev().filter(|&id| id != UNSURE) {
            delivery.delete_follow_up(token, extra, deliver_by).await?;
        }
        Ok(())
    }
}
