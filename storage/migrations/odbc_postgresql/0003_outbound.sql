-- Outbound delivery (issue 6), through ODBC: times are TIMESTAMP holding
-- UTC, JSON is TEXT. The attempts log of the sender, template fallback, and
-- the indexes of per-phone order, history and metrics.

-- The template body to send instead when the window is closed, and on a
-- template sent instead, the item it replaces; the unique index is the
-- "once" of the fallback.
ALTER TABLE outbox ADD COLUMN fallback TEXT;
ALTER TABLE outbox ADD COLUMN fallback_of BIGINT;
CREATE UNIQUE INDEX outbox_fallback_of ON outbox (fallback_of)
    WHERE fallback_of IS NOT NULL;

-- A phone's unfinished items, oldest first: a later item waits for them.
CREATE INDEX outbox_unfinished ON outbox (wa_id, id)
    WHERE status IN ('queued', 'sending');

-- Metrics count messages by creation time.
CREATE INDEX outbox_created ON outbox (created_at);

-- History reads a phone's inbound messages newest first.
CREATE INDEX inbox_wa_id ON inbox (wa_id, id);

-- One row per request the sender made, with what came of it.
CREATE TABLE attempts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error_code INTEGER,
    detail TEXT,
    ms INTEGER NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE INDEX attempts_outbox ON attempts (outbox_id, id);
