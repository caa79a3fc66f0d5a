-- 0002: the HTTP fleet. Questions taken by any instance behind a load balancer are recorded with
-- `fleet` set; the instance holding the channel's lease answers them, in interaction-id order.

ALTER TABLE pending_questions ADD COLUMN fleet BOOLEAN NOT NULL DEFAULT FALSE;

-- One row per channel being answered somewhere: `holder` renews `expires_at` (the server's clock)
-- while it lives; once it lapses any instance may take the channel over.
CREATE TABLE channel_leases (
    channel_id BIGINT      PRIMARY KEY,
    holder     TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Wakes every listening instance with the channel id, so the holder (or a taker) starts at once
-- instead of at its next scan. NOTIFY channels are per database, so the name carries the schema:
-- deployments in different schemas of one database do not wake each other.
CREATE FUNCTION zundamon_notify_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('zundamon_pending.' || TG_TABLE_SCHEMA, NEW.channel_id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER pending_questions_notify AFTER INSERT ON pending_questions
    FOR EACH ROW WHEN (NEW.fleet) EXECUTE FUNCTION zundamon_notify_pending();
