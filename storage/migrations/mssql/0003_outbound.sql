-- Outbound delivery (issue 6), SQL Server: the attempts log of the sender,
-- template fallback when the 24-hour window is closed, and the indexes of
-- per-phone order, history and metrics. Not run in our tests.

-- The template body to send instead (JSON), and on a template sent
-- instead, the item it replaces; the filtered unique index is the "once".
ALTER TABLE outbox ADD fallback NVARCHAR(MAX) NULL, fallback_of BIGINT NULL;
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
    id BIGINT IDENTITY(1, 1) PRIMARY KEY,
    outbox_id BIGINT NOT NULL,
    attempt INT NOT NULL,
    outcome NVARCHAR(50) NOT NULL,
    error_code INT,
    detail NVARCHAR(MAX),
    ms INT NOT NULL,
    at DATETIME2 NOT NULL
);
CREATE INDEX attempts_outbox ON attempts (outbox_id, id);
