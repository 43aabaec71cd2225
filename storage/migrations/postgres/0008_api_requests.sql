-- Backend API calls made with an Idempotency-Key: the answer each got, so
-- that the same call again (a retry after a timeout or a 503) is answered
-- the same and queues nothing twice. Written in the transaction that
-- queues the call's messages.
CREATE TABLE api_requests (
    idem_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
