//! The Discord front end.

pub mod deliver;
pub mod split;
