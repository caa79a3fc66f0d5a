//! The open connections of one listener: the cap, which connection makes room when it is reached,
//! and what each connection's watchdog needs to know (requests in progress, last byte received).
//!
//! At the cap a new connection closes the *oldest* connection that has no request in progress —
//! one still sending its headers, or kept alive with nothing to do. Slow or silent clients are
//! exactly those, so they cannot fill the table and lock out a well-behaved client. A connection
//! younger than [`EVICTION_GRACE`] is not closed this way, so clients reconnecting in a tight loop
//! cannot close a well-behaved client's connection before its headers are read.
//!
//! When no connection can make room (each is busy with a request or brand new), the listener
//! waits for one before accepting more: new connections queue in the kernel's accept backlog in
//! arrival order, so a flood of reconnecting clients delays a well-behaved one by about one turn
//! of the table instead of winning every race for a free slot. A connection that finds no room
//! within the wait given to [`ConnectionTable::admit_within`] is refused.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::ops::metrics::Metrics;

/// How long a new connection is safe from being closed to make room: a well-behaved client
/// sends its headers well within it.
pub const EVICTION_GRACE: Duration = Duration::from_millis(250);

pub struct ConnectionTable {
    cap: usize,
    epoch: Instant,
    metrics: Arc<Metrics>,
    table: Mutex<Table>,
    /// Notified when a connection leaves the table.
    freed: Notify,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// By id, which grows with each connection: the first entry is the oldest.
    open: BTreeMap<u64, Arc<ConnState>>,
}

/// What the server, the service and the watchdog of one connection share.
pub struct ConnState {
    epoch: Instant,
    opened: Instant,
    /// Requests whose handler is running.
    busy: AtomicUsize,
    /// Milliseconds since `epoch` of the last byte received or request finished.
    last_activity_ms: AtomicU64,
    /// Notified when the connection must make room for a newer one.
    close: Notify,
}

/// Whether a new connection may be served.
pub enum Admission {
    /// Served; an older idle connection was told to close if the table was full.
    Admitted { guard: ConnGuard, evicted: bool },
    /// No room now: every connection is busy or too new to be closed.
    Full,
}

/// Keeps a connection's place in the table until dropped.
pub struct ConnGuard {
    table: Arc<ConnectionTable>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl ConnectionTable {
    pub fn new(cap: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            epoch: Instant::now(),
            metrics,
            table: Mutex::default(),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for a new connection if needed and registers it.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut table = self.lock();
        let mut evicted = false;
        if table.open.len() >= self.cap {
            let now = Instant::now();
            let oldest_idle = table
                .open
                .iter()
                .take_while(|(_, state)| state.opened + EVICTION_GRACE <= now)
                .find(|(_, state)| state.busy() == 0)
                .map(|(id, _)| *id);
            let Some(id) = oldest_idle else {
                return Admission::Full;
            };
            if let Some(state) = table.open.remove(&id) {
                // Stored as a permit if the connection's task is not waiting right now.
                state.close.notify_one();
                self.metrics.http_connection(-1);
            }
            self.metrics.http_connection_shed("evicted");
            evicted = true;
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(ConnState {
            epoch: self.epoch,
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
            close: Notify::new(),
        });
        state.touch();
        table.open.insert(id, state.clone());
        drop(table);
        self.metrics.http_connection(1);
        Admission::Admitted {
            guard: ConnGuard {
                table: self.clone(),
                id,
                state,
            },
            evicted,
        }
    }

    /// Admits a new connection, waiting up to `wait` for room; `None` (counted as refused)
    /// when there was none.
    pub async fn admit_within(self: &Arc<Self>, wait: Duration) -> Option<(ConnGuard, bool)> {
        let deadline = Instant::now() + wait;
        loop {
            if let Admission::Admitted { guard, evicted } = self.admit() {
                return Some((guard, evicted));
            }
            if Instant::now() >= deadline {
                self.metrics.http_connection_shed("refused");
                return None;
            }
            // Room comes from a connection leaving, a request ending or a new connection
            // outgrowing its grace: the first is notified, the others are polled.
            let _ = tokio::time::timeout(ROOM_POLL, self.freed.notified()).await;
        }
    }
}

/// How often a full table is looked at again for room.
const ROOM_POLL: Duration = Duration::from_millis(10);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        // An evicted connection has already left the table (and the gauge).
        if self.table.lock().open.remove(&self.id).is_some() {
            self.table.metrics.http_connection(-1);
            self.table.freed.notify_waiters();
        }
    }
}

impl ConnState {
    /// Records activity (a byte received, a request finished) now.
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// When the connection was last active.
    pub fn last_activity(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// Marks one request in progress until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Resolves when the connection must close to make room for a newer one.
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }
}

/// A request in progress on a connection; dropping it (also when the connection is dropped
/// mid-request) ends it.
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that records when it last received a byte, for the idle timeout.
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(table: &Arc<ConnectionTable>) -> ConnGuard {
        match table.admit() {
            Admission::Admitted { guard, .. } => guard,
            Admission::Full => panic!("full"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let table = ConnectionTable::new(3, Arc::new(Metrics::new()));
        let first = admitted(&table);
        let second = admitted(&table);
        let third = admitted(&table);
        tokio::time::advance(EVICTION_GRACE).await;
        // The oldest is busy with a request: the next oldest (idle) one is evicted instead.
        let _request = first.state.start_request();
        let Admission::Admitted {
            guard: fourth,
            evicted: true,
        } = table.admit()
        else {
            panic!("expected an eviction");
        };
        assert_eq!(table.len(), 3);
        tokio::time::timeout(Duration::from_millis(100), second.state.close_requested())
            .await
            .expect("the oldest idle connection is told to close");
        let told = tokio::time::timeout(Duration::from_millis(50), third.state.close_requested());
        assert!(told.await.is_err(), "a newer one is left alone");
        drop(second); // its task ends; the table does not count it twice
        assert_eq!(table.len(), 3);
        drop((third, fourth));
        assert_eq!(table.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn new_connections_are_safe_for_a_moment() {
        let table = ConnectionTable::new(2, Arc::new(Metrics::new()));
        let _a = admitted(&table);
        tokio::time::advance(EVICTION_GRACE / 2).await;
        let _b = admitted(&table);
        // Both are too new to be closed for a third.
        assert!(matches!(table.admit(), Admission::Full));
        tokio::time::advance(EVICTION_GRACE / 2).await;
        // The first one has had its chance to send a request.
        let third = table.admit();
        assert!(matches!(third, Admission::Admitted { evicted: true, .. }));
        assert_eq!(table.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_connection_is_busy_the_new_one_waits_for_room() {
        let metrics = Arc::new(Metrics::new());
        let table = ConnectionTable::new(2, metrics.clone());
        let a = admitted(&table);
        let b = admitted(&table);
        tokio::time::advance(EVICTION_GRACE).await;
        let _ra = a.state.start_request();
        let rb = b.state.start_request();
        assert!(matches!(table.admit(), Admission::Full));
        // Nothing frees up within the wait: refused, and counted.
        assert!(table
            .admit_within(Duration::from_millis(100))
            .await
            .is_none());
        assert!(metrics
            .render(&Default::default())
            .contains("zundamon_http_connections_shed_total{reason=\"refused\"} 1"));
        // A request ends while a newcomer waits: it gets the now idle connection's place.
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.admit_within(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished());
        drop(rb);
        let (_guard, evicted) = waiting.await.unwrap().expect("admitted");
        assert!(evicted);
    }
}
