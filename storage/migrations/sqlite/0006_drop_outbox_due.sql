-- outbox_due served the sender's queue before outbox_queued (0005) took
-- over; no query reads it any more, and every outbox insert and status
-- change still paid for its upkeep in each COMMIT.
DROP INDEX IF EXISTS outbox_due;
