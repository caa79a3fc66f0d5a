-- 0004: every pending question belongs to the process that accepted it (or took it over), fleet
-- leases are fenced, and a finished question leaves a tombstone.
--
-- `owner` is the instance id of that process and `fence` the token it holds the row with. A
-- gateway process takes over a question only when the owner's heartbeat in `instances` has
-- expired, and raises `fence` as it does; an HTTP fleet holder claims its channel's questions
-- with its lease's `token`, which increases on every takeover. Every write of a holder (the
-- pending row, the window, and the check before each Discord call) is checked against both, so a
-- process that froze past its lease or heartbeat writes nothing once it wakes.
-- `done` marks a question answered, withdrawn or expired: the row stays (without its token) for a
-- while, so a write that timed out and commits late finds it and cannot bring the question back.
-- Rows written before this migration have no owner and are taken over at once.
ALTER TABLE pending_questions ADD COLUMN owner TEXT;
ALTER TABLE pending_questions ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pending_questions ADD COLUMN done BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE channel_leases ADD COLUMN token BIGINT NOT NULL DEFAULT 0;

-- One row per running process: it renews `expires_at` (the server's clock) while it lives and
-- deletes the row when it stops.
CREATE TABLE instances (
    id         TEXT        PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
