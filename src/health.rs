//! The HTTP server operators and platforms probe (hyper): `/` (App Runner's default health
//! check), `/healthz` (liveness), `/readyz` (readiness: the gateway session is up and the bot is
//! not draining), `/metrics` (Prometheus), and Discord's HTTP interactions endpoint
//! (`POST /interactions`) when a public key is configured.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};
use zundamon_actors::Channels;

use crate::discord::interactions::{self, InteractionsEndpoint};
use crate::metrics::Metrics;

/// What the probes report on; shared with the gateway and the shutdown sequence.
pub struct Health {
    gateway_ready: AtomicBool,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    channels: Channels,
    interactions: OnceLock<InteractionsEndpoint>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>, channels: Channels) -> Self {
        Self {
            gateway_ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            metrics,
            channels,
            interactions: OnceLock::new(),
        }
    }

    /// Serves Discord's HTTP interactions endpoint on `POST /interactions` from now on.
    pub fn enable_interactions(&self, endpoint: InteractionsEndpoint) {
        let _ = self.interactions.set(endpoint);
    }

    pub fn set_gateway_ready(&self, ready: bool) {
        self.gateway_ready.store(ready, Ordering::Release);
        self.metrics.set_gateway_ready(ready);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.gateway_ready.load(Ordering::Acquire) && !self.is_draining()
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.uri().path() == interactions::PATH {
            return self.interaction(request).await;
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match request.uri().path() {
            "/" => text(StatusCode::OK, "ack"),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.is_ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" if self.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "gateway not ready\n"),
            "/metrics" => {
                let mut response =
                    text(StatusCode::OK, self.metrics.render(&self.channels.stats()));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn interaction(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(endpoint) = self.interactions.get() else {
            return text(
                StatusCode::NOT_FOUND,
                "the interactions endpoint needs DISCORD_PUBLIC_KEY\n",
            );
        };
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, interactions::MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
        };
        let (status, json) = endpoint.handle(&parts.headers, &body).await;
        let mut response = text(status, json.to_string());
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves probes until `stop` changes. Each connection is served on its own task.
pub async fn serve(listener: TcpListener, health: Arc<Health>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!("health server accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(health.respond(request).await) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, "health connection ended: {err}");
            }
        });
    }
}
