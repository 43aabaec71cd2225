-- The queues in the order they are served (issue 7). Without these, the
-- dispatcher's next phones and the sender's next items were found by
-- reading every pending event or queued item and sorting them: a cost that
-- grew with the backlog, just when a backlog needed the server's time.
CREATE INDEX inbox_queue ON inbox (id) WHERE done_at IS NULL;
CREATE INDEX outbox_queued ON outbox (id) WHERE status = 'queued';
