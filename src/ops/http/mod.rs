//! The HTTP listener(s): hyper HTTP/1 connections with the limits a port open to the internet
//! needs, serving the [`Routes`] mounted on them (probes, metrics, Discord interactions).
//!
//! Slow clients cannot starve the port:
//! - **headers**: hyper's header-read timeout (it needs a timer, hence [`TokioTimer`]); hyper
//!   starts it whenever the connection waits for a request, so it also ends kept-alive
//!   connections that send no next request;
//! - **body**: a body (only `POST /interactions` reads one) must arrive within the body timeout;
//! - **idle**: a connection that receives no byte for the idle timeout while no request is in
//!   progress is closed;
//! - **count**: at most `max_connections` are open; a new one closes the oldest without a request
//!   in progress; when all are busy (or brand new) the listener waits for room before accepting
//!   more, and refuses with 503 a connection that waited a header timeout (see [`connections`]).

pub mod connections;
pub mod routes;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use self::connections::{ConnGuard, ConnectionTable, Tracked};
pub use self::routes::Routes;
use crate::config::HttpConfig;
use crate::ops::metrics::Metrics;

/// What a refused connection is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 5\r\n\r\nbusy\n";

/// A request head must fit in this (Discord's are well under 4 KiB).
const MAX_BUF_BYTES: usize = 64 * 1024;

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl HttpSettings {
    pub fn from_config(config: &HttpConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            body_timeout: Duration::from_secs(config.body_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_connections: config.max_connections,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 256,
        }
    }
}

/// How long open connections may take to finish when the server stops.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One listener's server: its routes, limits and open connections.
pub struct Server {
    routes: Arc<Routes>,
    settings: HttpSettings,
    connections: Arc<ConnectionTable>,
}

impl Server {
    pub fn new(routes: Routes, settings: HttpSettings, metrics: Arc<Metrics>) -> Self {
        let connections = ConnectionTable::new(settings.max_connections, metrics);
        Self {
            routes: Arc::new(routes),
            settings,
            connections,
        }
    }

    /// The open connections, for tests and benchmarks.
    pub fn connections(&self) -> Arc<ConnectionTable> {
        self.connections.clone()
    }

    /// Serves until `stop` changes. Each connection is served on its own task.
    pub async fn serve(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let Self {
            routes,
            settings,
            connections,
        } = self;
        // Every connection's task is tracked: when the server stops, open connections get a
        // moment to finish their request, then are cancelled, and `serve` returns only once
        // every one of them has ended.
        let tasks = tokio_util::task::TaskTracker::new();
        let cancel = tokio_util::sync::CancellationToken::new();
        let stopped = async {
            tasks.close();
            if tokio::time::timeout(CLOSE_GRACE, tasks.wait())
                .await
                .is_err()
            {
                cancel.cancel();
                tasks.wait().await;
            }
        };
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Typically out of file descriptors: wait for connections to close.
                        warn!("HTTP accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            // At the cap with no room, later connections wait in the accept backlog, in order.
            let admitted = tokio::select! {
                admitted = connections.admit_within(settings.header_timeout) => admitted,
                _ = stop.changed() => break,
            };
            let guard = match admitted {
                Some((guard, evicted)) => {
                    if evicted {
                        debug!(%peer, "connection cap reached: closed the oldest idle connection");
                    }
                    guard
                }
                None => {
                    debug!(%peer, "connection cap reached and no room in time: refused");
                    // Best effort and never waiting: the socket buffer of a fresh connection
                    // takes these few bytes.
                    let _ = stream.try_write(REFUSED);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let connection = serve_connection(stream, guard, routes.clone(), settings.clone());
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let _ = cancel.run_until_cancelled(connection).await;
            });
        }
        stopped.await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    guard: ConnGuard,
    routes: Arc<Routes>,
    settings: HttpSettings,
) {
    let state = guard.state.clone();
    let service = service_fn({
        let state = state.clone();
        let body_timeout = settings.body_timeout;
        move |request: Request<Incoming>| {
            let received = Instant::now();
            let request_guard = state.start_request();
            let routes = routes.clone();
            async move {
                let response = routes.respond(request, received, body_timeout).await;
                drop(request_guard);
                Ok::<_, Infallible>(response)
            }
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        // Bounds what one connection buffers (hyper's default is ~400 KiB): the cap times this
        // is the most the read buffers can take.
        .max_buf_size(MAX_BUF_BYTES)
        .serve_connection(TokioIo::new(Tracked::new(stream, state.clone())), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let idle_check = if state.busy() > 0 {
            Instant::now() + settings.idle_timeout
        } else {
            state.last_activity() + settings.idle_timeout
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(err) = ended {
                    debug!("HTTP connection ended: {err}");
                }
                break;
            }
            () = state.close_requested(), if !closing => {
                if state.busy() == 0 {
                    break; // evicted while idle or sending headers: drop it now
                }
                // A request started just now: answer it, then close.
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_check) => {
                if state.busy() == 0 && state.last_activity() + settings.idle_timeout <= Instant::now() {
                    debug!("HTTP connection idle: closed");
                    break;
                }
            }
        }
    }
    drop(guard);
}
