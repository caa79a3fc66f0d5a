-- 0005: what admins set at run time, and what each user's questions have cost.
--
-- The model `/zunda-model` chose for a channel or thread, keyed by its snowflake (`place_id`,
-- stored like every other id). Choosing `default` deletes the row, so a missing row means the
-- configured default model.
CREATE TABLE model_choices (
    place_id      INTEGER PRIMARY KEY,
    model         TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL -- unix milliseconds
);

-- The tokens (prompt + completion) each user's questions cost per calendar day, so a daily cap
-- holds across restarts. `day` is `YYYY-MM-DD` in the bot's configured time zone, computed by the
-- caller; every write adds to the row in one statement, so concurrent questions all count.
-- Pruning deletes the days older than a week: the text compares in date order.
CREATE TABLE token_usage (
    user_id INTEGER NOT NULL,
    day     TEXT    NOT NULL,
    tokens  INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
);

-- Warming the cache lists one day's users, and pruning deletes by day.
CREATE INDEX token_usage_day ON token_usage (day);
