//! Which paths a listener answers, and the glue from hyper requests to the modules that own
//! them: probes from [`crate::ops::health`], `/metrics` from [`crate::ops::metrics`], `POST /interactions`
//! from [`crate::discord::interactions`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;
use zundamon_actors::StatsSnapshot;

use crate::discord::interactions::{self, InteractionsEndpoint};
use crate::ops::health::Health;
use crate::ops::metrics::Metrics;

/// Reads the actor system's counts for a scrape (never waits: they are atomics).
pub type StatsSource = Arc<dyn Fn() -> StatsSnapshot + Send + Sync>;

/// The routes one listener serves.
#[derive(Default)]
pub struct Routes {
    probes: Option<Arc<Health>>,
    metrics: Option<(Arc<Metrics>, StatsSource)>,
    interactions: Option<Arc<OnceLock<InteractionsEndpoint>>>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `/`, `/healthz` and `/readyz`.
    pub fn probes(mut self, health: Arc<Health>) -> Self {
        self.probes = Some(health);
        self
    }

    /// Serves `/metrics`, with the actor counts read from `stats` at each scrape.
    pub fn metrics(mut self, metrics: Arc<Metrics>, stats: StatsSource) -> Self {
        self.metrics = Some((metrics, stats));
        self
    }

    /// Serves `POST /interactions` once `endpoint` is set (404 until then).
    pub fn interactions(mut self, endpoint: Arc<OnceLock<InteractionsEndpoint>>) -> Self {
        self.interactions = Some(endpoint);
        self
    }

    /// Answers one request whose headers arrived at `received`.
    pub async fn respond(
        &self,
        request: Request<Incoming>,
        received: Instant,
        body_timeout: Duration,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if path == interactions::PATH {
            if let Some(slot) = &self.interactions {
                return interaction(slot.get(), request, received, body_timeout).await;
            }
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        if let Some((status, body)) = self.probes.as_ref().and_then(|h| h.probe(path)) {
            return text(status, body);
        }
        if let (Some((metrics, stats)), "/metrics") = (&self.metrics, path) {
            let mut response = text(StatusCode::OK, metrics.render(&stats()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return response;
        }
        text(StatusCode::NOT_FOUND, "not found\n")
    }
}

async fn interaction(
    endpoint: Option<&InteractionsEndpoint>,
    request: Request<Incoming>,
    received: Instant,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    let Some(endpoint) = endpoint else {
        return text(
            StatusCode::NOT_FOUND,
            "the interactions endpoint needs DISCORD_PUBLIC_KEY\n",
        );
    };
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(body, interactions::MAX_BODY_BYTES, body_timeout).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let (status, json) = endpoint.handle(&parts.headers, &body, received).await;
    let mut response = text(status, json.to_string());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The whole body, unless it is larger than `limit` (413) or slower than `timeout` (408).
async fn read_body(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Response<Full<Bytes>>> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(_)) => Err(text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n")),
        Err(_) => Err(text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n")),
    }
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
