-- 0001: each channel's recent exchanges and the questions accepted but not yet answered; the same
-- tables as SQLite's 0001 + 0002, in PostgreSQL's types.
--
-- Snowflakes are stored in BIGINT: ids below 2^63 unchanged, larger ones wrapped to negative
-- numbers (one-to-one), as in the SQLite store.

CREATE TABLE exchanges (
    id          BIGSERIAL PRIMARY KEY, -- orders a channel's exchanges
    channel_id  BIGINT NOT NULL,
    exchange_id BIGINT,                -- the interaction or message id that asked the question
    question    TEXT   NOT NULL,
    answer      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL        -- unix seconds
);
CREATE INDEX exchanges_channel_id_id ON exchanges (channel_id, id);
CREATE INDEX exchanges_created_at ON exchanges (created_at);
-- A retried write finds its row already there (NULLs never collide).
CREATE UNIQUE INDEX exchanges_channel_exchange ON exchanges (channel_id, exchange_id);

-- `token` is the interaction token: a secret that Discord honours for 15 minutes.
CREATE TABLE pending_questions (
    seq             BIGSERIAL PRIMARY KEY, -- acceptance order
    interaction_id  BIGINT  NOT NULL UNIQUE,
    application_id  BIGINT  NOT NULL,
    token           TEXT    NOT NULL,
    channel_id      BIGINT  NOT NULL,
    guild_id        BIGINT,
    user_id         BIGINT  NOT NULL,
    user_name       TEXT    NOT NULL,
    question        TEXT    NOT NULL,
    received_at_ms  BIGINT  NOT NULL, -- unix milliseconds
    delivered_parts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX pending_questions_channel ON pending_questions (channel_id, seq);
