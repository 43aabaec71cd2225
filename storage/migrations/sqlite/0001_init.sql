-- tracbot schema, version 1 (SQLite). Times are ISO-8601 text in UTC.

CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    wa_id TEXT,
    phone_number_id TEXT,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL,
    done_at TEXT
);
CREATE INDEX inbox_pending ON inbox (wa_id, id) WHERE done_at IS NULL;

CREATE TABLE conversations (
    wa_id TEXT PRIMARY KEY,
    flow TEXT,
    state TEXT,
    slots TEXT NOT NULL,
    flow_version TEXT,
    last_inbound_at TEXT,
    deadline TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX conversations_deadline ON conversations (deadline)
    WHERE deadline IS NOT NULL;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wa_id TEXT NOT NULL,
    phone_number_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    wamid TEXT,
    error_code INTEGER,
    error_detail TEXT,
    inbox_id INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'queued';
CREATE INDEX outbox_wamid ON outbox (wamid);
CREATE INDEX outbox_wa_id ON outbox (wa_id, id);
