//! Zundamon: a Discord bot that answers `/zunda` questions in the voice of Zundamon, searching the
//! web when it needs to and remembering the last exchanges of each channel.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else lives here so the
//! integration tests can drive the same code.

pub mod agent;
pub mod app;
pub mod ask;
pub mod config;
pub mod discord;
pub mod fleet;
pub mod health;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod ops_metrics;
pub mod owners;
pub mod probe;
pub mod reload;
pub mod retry;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod voice;

pub use app::Application;
pub use config::Config;
