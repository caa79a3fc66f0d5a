//! Loopback fakes of the bot's upstreams, all on 127.0.0.1 port 0, and a harness that runs the
//! built binary against them.
#![allow(dead_code)]

pub mod bench;
pub mod bot;
pub mod fake_discord;
pub mod fake_openai;
pub mod fake_search;
pub mod fleet;
pub mod http_load;
pub mod multipart;
pub mod pg;
pub mod world;
