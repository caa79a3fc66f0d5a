//! Operating the process: what a platform and an operator see and use — the HTTP listener with
//! its probes (`/`, `/healthz`, `/readyz`) and `/metrics`, the metrics themselves, logging and
//! telemetry, configuration reload on SIGHUP, the shared TLS setup, and graceful shutdown.
//!
//! Nothing here decides what happens to a question; the question's room ([`crate::question`])
//! and the front ends report into it.

pub mod actor_metrics;
pub mod health;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
