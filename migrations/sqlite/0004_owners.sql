-- 0004: every pending question belongs to the process that accepted it (or took it over), and a
-- finished question leaves a tombstone.
--
-- `owner` is the instance id of that process and `fence` the token it holds the row with: a
-- process takes over a question only when the owner's heartbeat in `instances` has expired, and
-- raises `fence` as it does, so every later write of the old owner (checked against both) fails.
-- `done` marks a question answered, withdrawn or expired: the row stays (without its token) for a
-- while, so a write that timed out and commits late finds it and cannot bring the question back.
-- Rows written before this migration have no owner and are taken over at once.
ALTER TABLE pending_questions ADD COLUMN owner TEXT;
ALTER TABLE pending_questions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pending_questions ADD COLUMN done INTEGER NOT NULL DEFAULT 0;

-- One row per running process: it renews `expires_at_ms` (unix milliseconds) while it lives and
-- deletes the row when it stops.
CREATE TABLE instances (
    id            TEXT    PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL
);
