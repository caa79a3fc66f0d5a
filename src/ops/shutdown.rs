//! Graceful shutdown: the signal that starts it, the count of accepted questions whose answer
//! has not been delivered yet (the drain waits for it to reach zero), and the tasks spawned for
//! them (tracked, so the process knows when each has ended, and cancelled if they outlive the
//! grace period).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Resolves on SIGTERM (what ECS, App Runner and Kubernetes send) or SIGINT (Ctrl-C).
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
        let mut int = signal(SignalKind::interrupt()).expect("cannot listen for SIGINT");
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Counts work that must finish before the process may exit, and tracks the tasks doing it.
#[derive(Clone, Default)]
pub struct InFlight {
    inner: Arc<Inner>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
    /// Set when the grace period ran out: work still pending is left for the next process.
    abandoned: AtomicBool,
}

/// Held while one piece of work is pending; dropping it marks the work done.
pub struct InFlightGuard {
    inner: Arc<Inner>,
}

impl InFlight {
    pub fn start(&self) -> InFlightGuard {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard {
            inner: self.inner.clone(),
        }
    }

    /// Spawns a task that is tracked until it ends, and cancelled by [`close`](Self::close) if
    /// it is still running then.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let _ = cancel.run_until_cancelled(task).await;
        });
    }

    /// Waits until every tracked task has ended, at most until `deadline`; then cancels the
    /// rest and waits for them to unwind. Returns how many were cancelled.
    pub async fn close(&self, deadline: Instant) -> usize {
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let left = self.tasks.len();
        self.cancel.cancel();
        self.tasks.wait().await;
        left
    }

    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// The grace period is over: what is still pending stays recorded for the next process
    /// instead of being finished with an error.
    pub fn abandon(&self) {
        self.inner.abandoned.store(true, Ordering::Release);
    }

    /// Waits until nothing is pending or the deadline passes; returns what is still pending.
    pub async fn wait_idle(&self, deadline: Instant) -> usize {
        loop {
            let notified = self.inner.idle.notified();
            let pending = self.count();
            if pending == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count();
            }
        }
    }
}

impl InFlightGuard {
    /// Whether the process gave up waiting for this work (see [`InFlight::abandon`]).
    pub fn abandoned(&self) -> bool {
        self.inner.abandoned.load(Ordering::Acquire)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_pending_work() {
        let in_flight = InFlight::default();
        let guard = in_flight.start();
        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move {
                in_flight
                    .wait_idle(Instant::now() + Duration::from_secs(10))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(guard);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_tasks_are_awaited_then_cancelled() {
        let in_flight = InFlight::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        in_flight.spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = done_tx.send(());
        });
        in_flight.spawn(std::future::pending());
        let cancelled = in_flight
            .close(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(cancelled, 1, "the stuck task was cancelled");
        assert!(done_rx.await.is_ok(), "the short task ran to its end");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline() {
        let in_flight = InFlight::default();
        let _guard = in_flight.start();
        let pending = in_flight
            .wait_idle(Instant::now() + Duration::from_secs(2))
            .await;
        assert_eq!(pending, 1);
    }
}
