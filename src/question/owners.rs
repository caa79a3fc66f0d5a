//! This process's claim on the questions it accepted: a heartbeat in the store, renewed every
//! [`BEAT_EVERY`], and a scan that takes over the questions of processes whose heartbeat has
//! expired (killed, frozen, cut off from the store) and hands them to the event actor.
//!
//! The rule is the same for SQLite (one process, or a few on one file) and PostgreSQL (a rolling
//! deploy, shard ranges, the HTTP fleet's gateway questions): a live process's questions are never
//! taken, however they were stored; a dead one's are taken once, by one process, with a raised
//! fence that turns away any late write of the old owner.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::question::router::RouterMsg;
use crate::store::{PendingStore, Wanted};

/// How often the heartbeat is renewed and unowned questions are looked for.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// The running heartbeat; [`Owners::drain`] stops taking questions over, [`Owners::stop`] ends
/// the heartbeat.
pub struct Owners {
    store: Arc<dyn PendingStore>,
    taking: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Owners {
    /// Renews the heartbeat once and takes over what is unowned now (handed to `router` before
    /// anything else reaches it), then keeps doing both in the background. A process whose
    /// heartbeat is older than `lease` counts as gone.
    pub async fn start(
        store: Arc<dyn PendingStore>,
        router: ActorRef<RouterMsg>,
        lease: Duration,
        wanted: Wanted,
    ) -> Self {
        let scan = Scan {
            store: store.clone(),
            router,
            lease,
            wanted,
        };
        scan.beat().await;
        scan.take_over(true).await;
        let (taking, mut taking_rx) = watch::channel(true);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(BEAT_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    changed = taking_rx.changed() => if changed.is_err() { return },
                }
                scan.beat().await;
                if *taking_rx.borrow() {
                    scan.take_over(false).await;
                }
            }
        });
        Self {
            store,
            taking,
            task,
        }
    }

    /// Takes nothing over from now on; the heartbeat goes on, so the questions this process is
    /// still answering stay its own.
    pub fn drain(&self) {
        let _ = self.taking.send(false);
    }

    /// Ends the heartbeat: whatever this process leaves unanswered may be taken over at once.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        match tokio::time::timeout(Duration::from_secs(1), self.store.leave()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!("cannot end the heartbeat (it lapses): {err}"),
            Err(_) => warn!("cannot end the heartbeat (it lapses): the store took too long"),
        }
    }
}

struct Scan {
    store: Arc<dyn PendingStore>,
    router: ActorRef<RouterMsg>,
    lease: Duration,
    wanted: Wanted,
}

impl Scan {
    async fn beat(&self) {
        match tokio::time::timeout(BEAT_EVERY, self.store.heartbeat(self.lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!("cannot renew this process's heartbeat: {err}"),
            Err(_) => warn!("cannot renew this process's heartbeat: the store took too long"),
        }
    }

    async fn take_over(&self, starting: bool) {
        let claim = self.store.claim_orphans(self.lease, self.wanted.clone());
        let questions = match tokio::time::timeout(self.lease, claim).await {
            Ok(Ok(questions)) => questions,
            Ok(Err(err)) => {
                warn!("cannot look for questions left by other processes: {err}");
                return;
            }
            Err(_) => {
                warn!("cannot look for questions left by other processes: the store took too long");
                return;
            }
        };
        if questions.is_empty() {
            return;
        }
        if starting {
            info!(
                count = questions.len(),
                "resuming questions left by the previous process"
            );
        }
        if self.router.cast(RouterMsg::Resume(questions)).is_err() {
            warn!("cannot resume pending questions: the event actor is gone");
        }
    }
}
