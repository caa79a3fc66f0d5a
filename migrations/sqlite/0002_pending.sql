-- 0002: stable exchange ids, and the questions accepted but not yet answered.
--
-- `exchange_id` is the interaction (or message) id that asked the question: a write retried after a
-- timeout, or a question resumed after a crash, finds its row already there and adds no second one.
-- Rows written before this migration have none (NULLs never collide in a unique index).
ALTER TABLE exchanges ADD COLUMN exchange_id INTEGER;
CREATE UNIQUE INDEX exchanges_channel_exchange ON exchanges (channel_id, exchange_id);

-- A question is recorded here before its acknowledgement is sent and deleted once its answer (or
-- the error message) has been delivered, so a process that dies in between leaves it for the next
-- one. `token` is the interaction token: a secret that Discord honours for 15 minutes.
CREATE TABLE pending_questions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT, -- acceptance order
    interaction_id  INTEGER NOT NULL UNIQUE,
    application_id  INTEGER NOT NULL,
    token           TEXT    NOT NULL,
    channel_id      INTEGER NOT NULL,
    guild_id        INTEGER,
    user_id         INTEGER NOT NULL,
    user_name       TEXT    NOT NULL,
    question        TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL, -- unix milliseconds
    delivered_parts INTEGER NOT NULL DEFAULT 0
);
