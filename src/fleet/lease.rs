//! The fleet's queries: per-channel leases (a row with an expiry on the server's clock) and the
//! questions recorded for the fleet.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zundamon_actors::{ChannelId, StoreError};

use crate::store::postgres::failed;
use crate::store::sqlite::{channel_key, unkey};
use crate::store::{PendingQuestion, PendingStore, PostgresStore};

/// Lease operations for one instance (`holder`).
#[derive(Clone)]
pub struct Leases {
    store: Arc<PostgresStore>,
    holder: Arc<str>,
    lease_ms: f64,
}

impl Leases {
    pub fn new(store: Arc<PostgresStore>, holder: &str, lease: Duration) -> Self {
        Self {
            store,
            holder: holder.into(),
            lease_ms: lease.as_secs_f64() * 1000.0,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes `channel`'s lease if it is free or lapsed, or renews it if this instance holds it.
    /// True if this instance holds it now.
    pub async fn acquire(&self, channel: ChannelId) -> Result<bool, StoreError> {
        let client = self.store.client("take a channel lease").await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO channel_leases (channel_id, holder, expires_at)
                 VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                 ON CONFLICT (channel_id) DO UPDATE
                     SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                     WHERE channel_leases.holder = EXCLUDED.holder
                        OR channel_leases.expires_at < now()
                 RETURNING channel_id",
            )
            .await
            .map_err(failed("take a channel lease"))?;
        let rows = client
            .query(
                &statement,
                &[&channel_key(channel), &&*self.holder, &self.lease_ms],
            )
            .await
            .map_err(failed("take a channel lease"))?;
        Ok(!rows.is_empty())
    }

    /// Renews the leases of `channels`; returns those this instance still holds.
    pub async fn renew(&self, channels: &[ChannelId]) -> Result<Vec<ChannelId>, StoreError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<i64> = channels.iter().copied().map(channel_key).collect();
        let client = self.store.client("renew channel leases").await?;
        let rows = client
            .query(
                "UPDATE channel_leases SET expires_at = now() + $3 * interval '1 millisecond'
                 WHERE holder = $1 AND channel_id = ANY($2) RETURNING channel_id",
                &[&&*self.holder, &keys, &self.lease_ms],
            )
            .await
            .map_err(failed("renew channel leases"))?;
        Ok(rows.iter().map(|row| unkey(row.get(0))).collect())
    }

    /// Gives `channel` up (only if this instance holds it).
    pub async fn release(&self, channel: ChannelId) -> Result<(), StoreError> {
        let client = self.store.client("release a channel lease").await?;
        client
            .execute(
                "DELETE FROM channel_leases WHERE channel_id = $1 AND holder = $2",
                &[&channel_key(channel), &&*self.holder],
            )
            .await
            .map(drop)
            .map_err(failed("release a channel lease"))
    }

    /// Gives every lease of this instance up.
    pub async fn release_all(&self) -> Result<u64, StoreError> {
        let client = self.store.client("release channel leases").await?;
        client
            .execute(
                "DELETE FROM channel_leases WHERE holder = $1",
                &[&&*self.holder],
            )
            .await
            .map_err(failed("release channel leases"))
    }

    /// The channels that have fleet questions waiting.
    pub async fn waiting_channels(&self) -> Result<Vec<ChannelId>, StoreError> {
        let client = self.store.client("list waiting channels").await?;
        let rows = client
            .query(
                "SELECT DISTINCT channel_id FROM pending_questions WHERE fleet",
                &[],
            )
            .await
            .map_err(failed("list waiting channels"))?;
        Ok(rows.iter().map(|row| unkey(row.get(0))).collect())
    }

    /// `channel`'s fleet questions, oldest interaction first.
    pub async fn waiting_in(&self, channel: ChannelId) -> Result<Vec<PendingQuestion>, StoreError> {
        self.store.fleet_pending_in(channel).await
    }
}

/// The pending table as the event actor sees it in fleet mode: questions are recorded as fleet
/// questions (which wakes the instances), and removed when delivered.
pub struct FleetPending(pub Arc<PostgresStore>);

#[async_trait]
impl PendingStore for FleetPending {
    async fn record(&self, question: &PendingQuestion) -> Result<(), StoreError> {
        self.0.record_for_fleet(question).await
    }

    async fn delivered_parts(&self, interaction_id: u64, parts: u32) -> Result<(), StoreError> {
        self.0.delivered_parts(interaction_id, parts).await
    }

    async fn follow_ups(&self, interaction_id: u64, ids: &[u64]) -> Result<(), StoreError> {
        self.0.follow_ups(interaction_id, ids).await
    }

    async fn remove(&self, interaction_id: u64) -> Result<(), StoreError> {
        self.0.remove(interaction_id).await
    }

    async fn pending(&self) -> Result<Vec<PendingQuestion>, StoreError> {
        self.0.pending().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::config::Secret;
    use crate::store::postgres::tests::TestDb;

    fn question(interaction_id: u64, channel_id: u64) -> PendingQuestion {
        PendingQuestion {
            interaction_id,
            application_id: 1,
            token: Secret::new(format!("token-{interaction_id}")),
            channel_id,
            guild_id: None,
            user_id: 2,
            user_name: "ずんだ".into(),
            question: format!("質問 {interaction_id}"),
            received_at: SystemTime::now(),
            accepted: interaction_id,
            delivered_parts: 0,
            follow_ups: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_lapses_or_is_released() {
        let Some(db) = TestDb::new("a_lease_has_one_holder_until_it_lapses_or_is_released").await
        else {
            return;
        };
        let store = Arc::new(db.store.clone());
        let a = Leases::new(store.clone(), "a", Duration::from_millis(600));
        let b = Leases::new(store.clone(), "b", Duration::from_millis(600));
        assert!(a.acquire(7).await.unwrap());
        assert!(a.acquire(7).await.unwrap(), "the holder renews");
        assert!(!b.acquire(7).await.unwrap(), "held: no second holder");
        assert!(b.acquire(8).await.unwrap(), "another channel is free");
        assert_eq!(b.renew(&[7, 8]).await.unwrap(), vec![8], "b holds only 8");

        // Not renewed: the lease lapses and b takes it; a's renewal then fails.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(b.acquire(7).await.unwrap());
        assert!(a.renew(&[7]).await.unwrap().is_empty());
        assert!(!a.acquire(7).await.unwrap());

        // Released: free at once, and only by its holder.
        a.release(7).await.unwrap();
        assert!(!a.acquire(7).await.unwrap(), "a cannot release b's lease");
        b.release(7).await.unwrap();
        assert!(a.acquire(7).await.unwrap());
        assert_eq!(b.release_all().await.unwrap(), 1);
        assert!(a.acquire(8).await.unwrap());
        db.drop_schema().await;
    }

    #[tokio::test]
    async fn concurrent_takers_of_a_free_channel_get_exactly_one_lease() {
        let Some(db) =
            TestDb::new("concurrent_takers_of_a_free_channel_get_exactly_one_lease").await
        else {
            return;
        };
        let store = Arc::new(db.store.clone());
        for channel in 0..20_u64 {
            let takers: Vec<_> = (0..4)
                .map(|n| {
                    let leases =
                        Leases::new(store.clone(), &format!("i{n}"), Duration::from_secs(5));
                    tokio::spawn(async move { leases.acquire(channel).await.unwrap() })
                })
                .collect();
            let mut won = 0;
            for taker in takers {
                won += usize::from(taker.await.unwrap());
            }
            assert_eq!(won, 1, "channel {channel}");
        }
        db.drop_schema().await;
    }

    #[tokio::test]
    async fn fleet_questions_wait_by_channel_in_interaction_order_apart_from_pending() {
        let Some(db) =
            TestDb::new("fleet_questions_wait_by_channel_in_interaction_order_apart_from_pending")
                .await
        else {
            return;
        };
        let store = Arc::new(db.store.clone());
        let fleet = FleetPending(store.clone());
        let leases = Leases::new(store.clone(), "a", Duration::from_secs(5));
        // Recorded out of order (two instances racing): answered in interaction order.
        fleet.record(&question(30, 1)).await.unwrap();
        fleet.record(&question(10, 1)).await.unwrap();
        fleet.record(&question(20, 2)).await.unwrap();
        fleet.record(&question(10, 1)).await.unwrap(); // a retried insert
        store.record(&question(5, 1)).await.unwrap(); // a process's own question
        let ids =
            |qs: Vec<PendingQuestion>| qs.iter().map(|q| q.interaction_id).collect::<Vec<_>>();
        assert_eq!(ids(leases.waiting_in(1).await.unwrap()), vec![10, 30]);
        let mut channels = leases.waiting_channels().await.unwrap();
        channels.sort_unstable();
        assert_eq!(channels, vec![1, 2]);
        assert_eq!(
            ids(store.pending().await.unwrap()),
            vec![5],
            "fleet rows are not resumed at startup"
        );
        fleet.remove(10).await.unwrap();
        assert_eq!(ids(leases.waiting_in(1).await.unwrap()), vec![30]);
        db.drop_schema().await;
    }

    #[tokio::test]
    async fn a_fleet_insert_wakes_listeners_with_its_channel() {
        let Some(db) = TestDb::new("a_fleet_insert_wakes_listeners_with_its_channel").await else {
            return;
        };
        let (wake_tx, mut wakeups) = tokio::sync::mpsc::unbounded_channel();
        let (_mode, mode_rx) = tokio::sync::watch::channel(super::super::Mode::Serving);
        let listener = tokio::spawn(super::super::listen_for_wakeups(
            db.config.clone(),
            wake_tx,
            mode_rx,
        ));
        let fleet = FleetPending(Arc::new(db.store.clone()));
        let channel = u64::MAX - 5; // wraps to a negative key and back
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        // The listener connects asynchronously: insert until a wake-up arrives.
        let woken = loop {
            n += 1;
            fleet.record(&question(n, channel)).await.unwrap();
            match tokio::time::timeout(Duration::from_millis(200), wakeups.recv()).await {
                Ok(Some(woken)) => break woken,
                _ if tokio::time::Instant::now() < deadline => continue,
                _ => panic!("no wake-up"),
            }
        };
        assert_eq!(woken, channel);
        // A process's own (non-fleet) question wakes nobody.
        while wakeups.try_recv().is_ok() {}
        db.store.record(&question(999, 3)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), wakeups.recv())
                .await
                .is_err()
        );
        listener.abort();
        db.drop_schema().await;
    }
}
