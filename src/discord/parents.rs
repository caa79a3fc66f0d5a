//! Where each channel sits: a thread's parent channel, a channel's category. Learned from what
//! Discord tells the bot anyway — the `channel` object of each interaction, the gateway's
//! GUILD_CREATE (every channel and active thread of a guild) and channel and thread events — and,
//! where those leave a gap (a thread's channel seen by the HTTP endpoint only), from one cached
//! REST lookup. The access lists and the per-place settings are judged by this ancestry.

use std::time::Duration;

use dashmap::DashMap;
use reqwest::Method;
use serde_json::Value;
use serenity::all::{ChannelType, GuildChannel, PartialChannel};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::deliver::{Call, Delivery, Route};

/// Channels remembered at most; past it the map starts over (it refills from the next events).
const MAX_CHANNELS: usize = 200_000;
/// Parents followed at most (thread → channel → category).
const MAX_DEPTH: usize = 3;

/// How long a channel Discord would not describe is not asked about again.
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Each known channel's parent (`None`: known to have none).
#[derive(Debug, Default)]
pub struct Parents {
    parents: DashMap<u64, Option<u64>>,
    /// Channels whose lookup failed, and when (not asked again for [`RETRY_AFTER`]).
    failed: DashMap<u64, Instant>,
}

impl Parents {
    pub fn new() -> Self {
        Self::default()
    }

    /// `channel`'s parent is `parent`.
    pub fn learn(&self, channel: u64, parent: Option<u64>) {
        if self.parents.len() >= MAX_CHANNELS && !self.parents.contains_key(&channel) {
            self.parents.clear();
        }
        self.parents.insert(channel, parent);
    }

    /// A channel the gateway or an interaction described.
    pub fn learn_guild_channel(&self, channel: &GuildChannel) {
        self.learn(channel.id.get(), channel.parent_id.map(|id| id.get()));
    }

    /// The channel object of an interaction. A channel's parent is a category, which has none.
    pub fn learn_partial(&self, channel: &PartialChannel) {
        let parent = channel.parent_id.map(|id| id.get());
        self.learn(channel.id.get(), parent);
        if let (Some(category), false) = (parent, is_thread(channel.kind)) {
            self.parents.entry(category).or_insert(None);
        }
    }

    /// A channel that is gone.
    pub fn forget(&self, channel: u64) {
        self.parents.remove(&channel);
    }

    /// The ancestor of `channel` whose parent is not known, if any (to look up).
    pub fn gap(&self, channel: u64) -> Option<u64> {
        let mut current = channel;
        for _ in 0..MAX_DEPTH {
            match self.parents.get(&current).map(|entry| *entry) {
                None if self.recently_failed(current) => return None,
                None => return Some(current),
                Some(None) => return None,
                Some(Some(parent)) => current = parent,
            }
        }
        None
    }

    fn recently_failed(&self, channel: u64) -> bool {
        self.failed
            .get(&channel)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }

    /// Where a question in `channel` was asked, most specific first: the channel, its parent
    /// channel (for a thread), the category, then the guild.
    pub fn places(&self, channel: u64, guild: Option<u64>) -> Vec<u64> {
        let mut places = vec![channel];
        let mut current = channel;
        for _ in 0..MAX_DEPTH {
            match self.parents.get(&current).and_then(|entry| *entry) {
                Some(parent) if !places.contains(&parent) => {
                    places.push(parent);
                    current = parent;
                }
                _ => break,
            }
        }
        places.extend(guild.filter(|guild| !places.contains(guild)));
        places
    }
}

/// The longest a parent lookup may take (it delays one question, once per channel).
const LOOKUP_BUDGET: Duration = Duration::from_millis(1500);

impl Parents {
    /// Fills the gap in `channel`'s ancestry, if there is one, from Discord (`GET
    /// /channels/{id}` with the bot token). A failed lookup leaves the gap: the question is then
    /// judged by the places that are known.
    pub async fn complete(&self, delivery: &Delivery, channel: u64) {
        for _ in 0..MAX_DEPTH {
            let Some(unknown) = self.gap(channel) else {
                return;
            };
            match delivery.channel_parent(unknown).await {
                Some(parent) => {
                    self.failed.remove(&unknown);
                    self.learn(unknown, parent);
                }
                None => {
                    if self.failed.len() >= MAX_CHANNELS {
                        self.failed.clear();
                    }
                    self.failed.insert(unknown, Instant::now());
                    return;
                }
            }
        }
    }
}

impl Delivery {
    /// The parent of `channel` as Discord says (`None` if it cannot be read).
    pub async fn channel_parent(&self, channel: u64) -> Option<Option<u64>> {
        let auth = self.reader.as_ref()?;
        let call = Call {
            route: Route::Channel {
                channel_id: channel,
            },
            method: Method::GET,
            url: format!("{}/channels/{channel}", self.api),
            auth: Some(auth.clone()),
            body: Value::Null,
            secret: "",
        };
        let deadline = Instant::now() + LOOKUP_BUDGET;
        match self
            .send_for_body(call, self.delivery_policy(deadline))
            .await
        {
            Ok(body) => {
                let channel_json: Value = serde_json::from_slice(&body).ok()?;
                let parent = channel_json["parent_id"]
                    .as_str()
                    .and_then(|id| id.parse::<u64>().ok());
                debug!(channel, ?parent, "looked up a channel's parent");
                Some(parent)
            }
            Err(err) => {
                warn!(channel, "cannot look up the channel's parent: {err}");
                None
            }
        }
    }
}

fn is_thread(kind: ChannelType) -> bool {
    matches!(
        kind,
        ChannelType::PublicThread | ChannelType::PrivateThread | ChannelType::NewsThread
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_reaches_its_channel_category_and_guild() {
        let parents = Parents::new();
        parents.learn(4, Some(3));
        assert_eq!(parents.gap(4), Some(3));
        assert_eq!(parents.places(4, Some(1)), vec![4, 3, 1]);
        parents.learn(3, Some(2));
        parents.learn(2, None);
        assert_eq!(parents.gap(4), None);
        assert_eq!(parents.places(4, Some(1)), vec![4, 3, 2, 1]);
        assert_eq!(parents.places(9, None), vec![9]);
        // A loop in bad data ends.
        parents.learn(5, Some(6));
        parents.learn(6, Some(5));
        assert_eq!(parents.places(5, None), vec![5, 6]);
    }
}
