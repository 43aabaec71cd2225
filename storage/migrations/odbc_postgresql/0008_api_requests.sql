-- Backend API calls made with an Idempotency-Key, through ODBC: times are
-- TIMESTAMP holding UTC. The answer each got, so that the same call again
-- (a retry after a timeout or a 503) is answered the same and queues
-- nothing twice. Written in the transaction that queues its messages.
CREATE TABLE api_requests (
    idem_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
