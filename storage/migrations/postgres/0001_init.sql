-- tracbot schema, version 1 (PostgreSQL through asyncpg).
-- Times are timestamptz, written from the application's UTC clock. JSON is
-- the `json` type, stored as written: `jsonb` would refuse \u0000 inside a
-- webhook payload, and then the webhook could never be acknowledged.

CREATE TABLE inbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    wa_id TEXT,
    phone_number_id TEXT,
    payload JSON NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    done_at TIMESTAMPTZ
);
-- Events without a phone are grouped under '' as in the other backends.
CREATE INDEX inbox_pending ON inbox ((COALESCE(wa_id, '')), id)
    WHERE done_at IS NULL;
CREATE INDEX inbox_pending_order ON inbox (id) WHERE done_at IS NULL;

CREATE TABLE conversations (
    wa_id TEXT PRIMARY KEY,
    flow TEXT,
    state TEXT,
    slots JSON NOT NULL,
    flow_version TEXT,
    last_inbound_at TIMESTAMPTZ,
    deadline TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX conversations_deadline ON conversations (deadline)
    WHERE deadline IS NOT NULL;

CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    wa_id TEXT NOT NULL,
    phone_number_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body JSON NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    wamid TEXT,
    error_code INTEGER,
    error_detail TEXT,
    inbox_id BIGINT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'queued';
CREATE INDEX outbox_sending ON outbox (updated_at) WHERE status = 'sending';
CREATE INDEX outbox_wamid ON outbox (wamid);
CREATE INDEX outbox_wa_id ON outbox (wa_id, id);
