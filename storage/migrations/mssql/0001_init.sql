-- tracbot schema, version 1 (SQL Server through ODBC).
-- Not run in our tests: no SQL Server runs on our machines. Times are
-- DATETIME2 holding UTC, written from the application's clock. Text is
-- NVARCHAR so that accents and emoji survive; JSON is NVARCHAR(MAX).
-- Keys and phone numbers are bounded NVARCHAR so that they can be indexed.

CREATE TABLE inbox (
    id BIGINT IDENTITY(1, 1) PRIMARY KEY,
    [key] NVARCHAR(400) NOT NULL CONSTRAINT inbox_key UNIQUE,
    kind NVARCHAR(50) NOT NULL,
    wa_id NVARCHAR(64),
    phone_number_id NVARCHAR(64),
    payload NVARCHAR(MAX) NOT NULL,
    received_at DATETIME2 NOT NULL,
    done_at DATETIME2
);
CREATE INDEX inbox_pending ON inbox (wa_id, id) WHERE done_at IS NULL;

CREATE TABLE conversations (
    wa_id NVARCHAR(64) NOT NULL PRIMARY KEY,
    flow NVARCHAR(200),
    state NVARCHAR(200),
    slots NVARCHAR(MAX) NOT NULL,
    flow_version NVARCHAR(100),
    last_inbound_at DATETIME2,
    deadline DATETIME2,
    updated_at DATETIME2 NOT NULL
);
CREATE INDEX conversations_deadline ON conversations (deadline)
    WHERE deadline IS NOT NULL;

CREATE TABLE outbox (
    id BIGINT IDENTITY(1, 1) PRIMARY KEY,
    wa_id NVARCHAR(64) NOT NULL,
    phone_number_id NVARCHAR(64) NOT NULL,
    kind NVARCHAR(50) NOT NULL,
    body NVARCHAR(MAX) NOT NULL,
    status NVARCHAR(20) NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at DATETIME2 NOT NULL,
    wamid NVARCHAR(200),
    error_code INT,
    error_detail NVARCHAR(MAX),
    inbox_id BIGINT,
    created_at DATETIME2 NOT NULL,
    updated_at DATETIME2 NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'queued';
CREATE INDEX outbox_sending ON outbox (updated_at) WHERE status = 'sending';
CREATE INDEX outbox_wamid ON outbox (wamid);
CREATE INDEX outbox_wa_id ON outbox (wa_id, id);
