-- Backend API calls made with an Idempotency-Key, SQL Server: DATETIME2
-- holding UTC. The answer each got, so that the same call again (a retry
-- after a timeout or a 503) is answered the same and queues nothing twice.
-- Written in the transaction that queues the call's messages.
CREATE TABLE api_requests (
    idem_key NVARCHAR(255) NOT NULL PRIMARY KEY,
    fingerprint NVARCHAR(64) NOT NULL,
    response NVARCHAR(MAX) NOT NULL,
    created_at DATETIME2 NOT NULL
);
