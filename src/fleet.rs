//! The HTTP fleet: several instances behind a load balancer, all receiving Discord's HTTP
//! interactions, one PostgreSQL. Any instance takes a question (records it in the shared pending
//! table and replies 「ちょっと待ってね。」); the instance holding the channel's lease answers the
//! channel's questions in interaction order, with the window read from the store, so each channel
//! still has one actor across the fleet.
//!
//! Leases are rows with an expiry on the database server's clock, renewed by their holder every
//! [`SCAN_EVERY`]. An insert wakes every instance (LISTEN/NOTIFY); the periodic scan covers a
//! missed wake-up and takes over the channels whose holder died once its lease lapses. A holder
//! keeps a channel for the channel-actor idle time after its last question, so a channel never
//! has a live actor (and a cached window) on two instances.

pub mod lease;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ractor::ActorRef;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use zundamon_actors::ChannelId;

use crate::ops::metrics::Metrics;
use crate::question::router::RouterMsg;
use crate::retry::Backoff;
use crate::store::PostgresStore;
use lease::Leases;

/// How often leases are renewed and waiting channels scanned.
pub const SCAN_EVERY: Duration = Duration::from_secs(1);
/// The NOTIFY channel the pending table's insert trigger signals, followed by `.` and the
/// table's schema.
const WAKE_CHANNEL: &str = "zundamon_pending";
/// Reconnecting for wake-ups after the listening connection failed: 0.2 s doubling to 5 s (the
/// periodic scan covers the questions meanwhile).
const LISTEN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// How the fleet runs.
#[derive(Clone)]
pub struct FleetSettings {
    /// A lease not renewed for this long lapses: the takeover time after an instance dies.
    pub lease: Duration,
    /// How long a channel is kept after its last question (the channel actor's idle time).
    pub keep_idle: Duration,
    /// This instance's name in the lease table (the store's instance id, which also owns the
    /// questions it claims).
    pub holder: String,
    /// Where the fleet's metrics go.
    pub metrics: Arc<Metrics>,
}

/// A running fleet member; [`Fleet::drain`] and [`Fleet::stop`] end it.
pub struct Fleet {
    leases: Leases,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serving,
    /// Keep the channels held (their answers are finishing), take no new ones.
    Draining,
    Stopped,
}

impl Fleet {
    /// Starts listening for wake-ups on a connection of its own and scanning for work, handing
    /// the channels this instance holds to `router` as [`RouterMsg::Resume`].
    pub fn start(
        store: Arc<PostgresStore>,
        listen: tokio_postgres::Config,
        router: ActorRef<RouterMsg>,
        settings: FleetSettings,
    ) -> Self {
        let leases = Leases::new(store, &settings.holder, settings.lease);
        let (mode, mode_rx) = watch::channel(Mode::Serving);
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let listener = tokio::spawn(listen_for_wakeups(listen, wake_tx, mode_rx.clone()));
        let worker = Worker {
            leases: leases.clone(),
            router,
            keep_idle: settings.keep_idle,
            held: HashMap::new(),
            metrics: settings.metrics.clone(),
        };
        let task = tokio::spawn(async move {
            worker.run(wake_rx, mode_rx).await;
            listener.abort();
        });
        info!(
            holder = %settings.holder,
            lease_ms = settings.lease.as_millis() as u64,
            "HTTP fleet member started"
        );
        Self { leases, mode, task }
    }

    /// Takes no new channels from now on; the held ones stay held until [`stop`](Self::stop).
    pub fn drain(&self) {
        let _ = self.mode.send(Mode::Draining);
    }

    /// Stops and gives every lease up, so other instances take the channels at once.
    pub async fn stop(self) {
        let _ = self.mode.send(Mode::Stopped);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        match self.leases.release_all().await {
            Ok(released) => info!(released, "HTTP fleet: leases released"),
            Err(err) => warn!("HTTP fleet: cannot release leases (they lapse): {err}"),
        }
    }
}

struct Worker {
    leases: Leases,
    router: ActorRef<RouterMsg>,
    keep_idle: Duration,
    /// Held channels and when they last had a question waiting.
    held: HashMap<ChannelId, Instant>,
    metrics: Arc<Metrics>,
}

impl Worker {
    async fn run(
        mut self,
        mut wakeups: mpsc::UnboundedReceiver<ChannelId>,
        mut mode: watch::Receiver<Mode>,
    ) {
        let mut ticks = tokio::time::interval(SCAN_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let serving = *mode.borrow() == Mode::Serving;
            tokio::select! {
                _ = ticks.tick() => self.scan(serving).await,
                Some(channel) = wakeups.recv() => {
                    if serving {
                        self.take(channel).await;
                    }
                }
                changed = mode.changed() => {
                    if changed.is_err() || *mode.borrow() == Mode::Stopped {
                        return;
                    }
                }
            }
        }
    }

    /// Renews the held leases, takes the channels with waiting questions whose lease is free
    /// (when serving), and gives up channels idle for longer than their actor lives.
    async fn scan(&mut self, serving: bool) {
        let held: Vec<ChannelId> = self.held.keys().copied().collect();
        match self.leases.renew(&held).await {
            Ok(still) => {
                for channel in held.iter().filter(|c| !still.contains(c)) {
                    warn!(channel_id = channel, "HTTP fleet: lost a channel lease");
                    self.held.remove(channel);
                    self.metrics.fleet_channel("lost", self.held.len());
                }
            }
            Err(err) => {
                warn!("HTTP fleet: cannot renew leases: {err}");
                self.metrics.fleet_store_error("renew");
            }
        }
        let waiting = match self.leases.waiting_channels().await {
            Ok(waiting) => waiting,
            Err(err) => {
                warn!("HTTP fleet: cannot scan for questions: {err}");
                self.metrics.fleet_store_error("scan");
                return;
            }
        };
        if serving {
            for channel in &waiting {
                self.take(*channel).await;
            }
        }
        let now = Instant::now();
        for channel in &waiting {
            if let Some(seen) = self.held.get_mut(channel) {
                *seen = now;
            }
        }
        let idle: Vec<ChannelId> = self
            .held
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) > self.keep_idle)
            .map(|(channel, _)| *channel)
            .collect();
        for channel in idle {
            self.held.remove(&channel);
            self.metrics.fleet_channel("released", self.held.len());
            if let Err(err) = self.leases.release(channel).await {
                warn!(
                    channel_id = channel,
                    "HTTP fleet: cannot release a lease: {err}"
                );
                self.metrics.fleet_store_error("release");
            } else {
                debug!(channel_id = channel, "HTTP fleet: released an idle channel");
            }
        }
    }

    /// Takes (or renews) `channel`'s lease and, if held, claims its waiting questions with the
    /// lease's token and hands them to the event actor (which skips the ones it is already
    /// answering).
    async fn take(&mut self, channel: ChannelId) {
        let token = match self.leases.acquire(channel).await {
            Ok(Some(token)) => token,
            Ok(None) => return, // another instance answers this channel
            Err(err) => {
                warn!(
                    channel_id = channel,
                    "HTTP fleet: cannot take a lease: {err}"
                );
                self.metrics.fleet_store_error("acquire");
                return;
            }
        };
        if self.held.insert(channel, Instant::now()).is_none() {
            info!(channel_id = channel, holder = %self.leases.holder(), "HTTP fleet: took a channel");
            self.metrics.fleet_channel("taken", self.held.len());
        }
        match self.leases.claim(channel, token).await {
            Ok(questions) if questions.is_empty() => {}
            Ok(questions) => {
                if self.router.cast(RouterMsg::Resume(questions)).is_err() {
                    warn!("HTTP fleet: the event actor is gone");
                }
            }
            Err(err) => {
                warn!(
                    channel_id = channel,
                    "HTTP fleet: cannot read questions: {err}"
                );
                self.metrics.fleet_store_error("read");
            }
        }
    }
}

/// Keeps a connection LISTENing for inserts and forwards each channel id; reconnects after a
/// failure (the periodic scan covers what was missed meanwhile).
async fn listen_for_wakeups(
    config: tokio_postgres::Config,
    wake: mpsc::UnboundedSender<ChannelId>,
    mode: watch::Receiver<Mode>,
) {
    // Failed attempts since the last connection that listened.
    let mut failures = 0u32;
    while *mode.borrow() != Mode::Stopped {
        let connected = match crate::store::postgres::tls_for(&config) {
            Some(tls) => config.connect(tls).await.map(|(c, conn)| (c, drive(conn))),
            None => config
                .connect(tokio_postgres::NoTls)
                .await
                .map(|(c, conn)| (c, drive(conn))),
        };
        match connected {
            Ok((client, (mut notes, driver))) => {
                if let Err(err) = listen(&client).await {
                    warn!("HTTP fleet: cannot LISTEN: {err}");
                } else {
                    failures = 0;
                    while let Some(payload) = notes.recv().await {
                        if let Ok(channel) = payload.parse::<i64>() {
                            let _ = wake.send(crate::store::keys::unkey(channel));
                        }
                    }
                }
                driver.abort();
            }
            Err(err) => warn!("HTTP fleet: cannot connect for wake-ups: {err}"),
        }
        tokio::time::sleep(LISTEN_BACKOFF.delay(failures)).await;
        failures = failures.saturating_add(1);
    }
}

/// Drives `connection`, forwarding the payload of each notification; the receiver ends when the
/// connection fails.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> (mpsc::UnboundedReceiver<String>, JoinHandle<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(note)) => {
                    let _ = notes_tx.send(note.payload().to_owned());
                }
                Ok(_) => {}
                Err(err) => {
                    warn!("HTTP fleet: wake-up connection failed: {err}");
                    break;
                }
            }
        }
    });
    (notes, driver)
}

/// LISTENs on the wake-up channel of the schema the pending table resolves to on this
/// connection (the same search path as the store's).
async fn listen(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let schema: String = client
        .query_one(
            "SELECT n.nspname::TEXT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = 'pending_questions'::regclass",
            &[],
        )
        .await?
        .get(0);
    let channel = format!("{WAKE_CHANNEL}.{schema}").replace('"', "\"\"");
    client.batch_execute(&format!("LISTEN \"{channel}\"")).await
}
