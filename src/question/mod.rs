//! A question's life, the heart of the exactly-once promise: intake (screening, rate limit,
//! queue limits), the event actor that fixes each question's place in its channel
//! ([`router`]), and the state machine that records, acknowledges, asks, delivers and forgets it
//! ([`lifecycle`]), with this process's ownership of the recorded questions ([`owners`]).
//!
//! The Discord protocol ([`crate::discord`]) brings questions in and carries answers out; it
//! does not decide a question's fate. The channel actors ([`zundamon_actors`]) answer one
//! question at a time per channel; the agent ([`crate::agent`]) writes the answers.

pub mod admission;
pub mod lifecycle;
pub mod limits;
pub mod owners;
pub mod policy;
pub mod router;
