//! Every backend's schema migrations, in one place. Each list is applied in order and each backend
//! records how many it has applied (SQLite in `PRAGMA user_version`, PostgreSQL in the
//! `zundamon_schema` table), so a released migration is never edited: add a new file instead.
//!
//! The SQLite list keeps its history: a database written by any earlier version is brought up to date.

/// `migrations/sqlite/*.sql`, in order.
pub const SQLITE: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_exchanges.sql"),
    include_str!("../../migrations/sqlite/0002_pending.sql"),
    include_str!("../../migrations/sqlite/0003_acceptance_order.sql"),
    include_str!("../../migrations/sqlite/0004_owners.sql"),
    include_str!("../../migrations/sqlite/0005_admin.sql"),
    include_str!("../../migrations/sqlite/0006_question_context.sql"),
];

/// `migrations/postgres/*.sql`, in order.
pub const POSTGRES: &[&str] = &[
    include_str!("../../migrations/postgres/0001_store.sql"),
    include_str!("../../migrations/postgres/0002_fleet.sql"),
    include_str!("../../migrations/postgres/0003_acceptance_order.sql"),
    include_str!("../../migrations/postgres/0004_owners.sql"),
    include_str!("../../migrations/postgres/0005_admin.sql"),
    include_str!("../../migrations/postgres/0006_question_context.sql"),
];
