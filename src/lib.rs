//! Zundamon: a Discord bot that answers `/zunda` questions in the voice of Zundamon, searching the
//! web when it needs to and remembering the last exchanges of each channel.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else lives here so the
//! integration tests can drive the same code.

pub mod agent;
pub mod app;
pub mod config;
pub mod discord;
pub mod fleet;
pub mod ops;
pub mod question;
pub mod retry;
pub mod store;
pub mod voice;

pub use app::Application;
pub use config::Config;
