-- The sender's lease check reads `sending` items by age on every round;
-- without this index it scanned the whole outbox (31 events/s instead of
-- hundreds with 100,000 stored messages, bench/storage.py).
CREATE INDEX outbox_sending ON outbox (updated_at) WHERE status = 'sending';
