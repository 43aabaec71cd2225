-- The sender's lease check reads `sending` items by age on every round;
-- without this index it scanned the whole outbox (the server schemas have
-- had it since 0001).
CREATE INDEX outbox_sending ON outbox (updated_at) WHERE status = 'sending';
