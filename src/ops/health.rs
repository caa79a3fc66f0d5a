//! What operators and platforms probe: `/` (App Runner's default health check), `/healthz`
//! (liveness) and `/readyz` (readiness: the gateway session is up and the bot is not draining).
//!
//! Every answer reads two flags and nothing else: a probe never waits on the event actor, the
//! store or the model, so it stays fast however busy the bot is. The HTTP server that mounts
//! these routes lives in [`crate::ops::http`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper::StatusCode;

use crate::ops::metrics::Metrics;

/// What the probes report on; shared with the gateway and the shutdown sequence.
pub struct Health {
    gateway_ready: AtomicBool,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            gateway_ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            metrics,
        }
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

    /// The answer to a probe of `path`, or `None` when `path` is not a probe.
    pub fn probe(&self, path: &str) -> Option<(StatusCode, &'static str)> {
        Some(match path {
            "/" => (StatusCode::OK, "ack"),
            "/healthz" => (StatusCode::OK, "ok\n"),
            "/readyz" if self.is_ready() => (StatusCode::OK, "ready\n"),
            "/readyz" if self.is_draining() => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "gateway not ready\n"),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_gateway_and_draining() {
        let health = Health::new(Arc::new(Metrics::new()));
        assert_eq!(health.probe("/").unwrap().0, StatusCode::OK);
        assert_eq!(health.probe("/healthz").unwrap().0, StatusCode::OK);
        assert_eq!(
            health.probe("/readyz").unwrap(),
            (StatusCode::SERVICE_UNAVAILABLE, "gateway not ready\n")
        );
        health.set_gateway_ready(true);
        assert_eq!(health.probe("/readyz").unwrap().0, StatusCode::OK);
        health.start_draining();
        assert_eq!(
            health.probe("/readyz").unwrap(),
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        );
        assert!(health.probe("/metrics").is_none());
    }
}
