-- 0001: each channel's recent question/answer exchanges.
--
-- `id` orders the exchanges: SQLite hands out max(id) + 1, so a channel's newest exchange always
-- has its highest id even after older rows were deleted.
CREATE TABLE exchanges (
    id         INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL, -- the Discord channel snowflake
    question   TEXT    NOT NULL,
    answer     TEXT    NOT NULL,
    created_at INTEGER NOT NULL  -- unix seconds
);

-- Loading and trimming a channel walk its rows newest first.
CREATE INDEX exchanges_channel_id_id ON exchanges (channel_id, id);

-- Pruning deletes by age across all channels.
CREATE INDEX exchanges_created_at ON exchanges (created_at);
