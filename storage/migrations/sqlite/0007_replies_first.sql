-- A conversation's replies leave before the backend's notifications and
-- alerts (issue 7, a fresh user's pass): the queue was one line by id, and
-- a driver's AYUDA waited 40 s behind 3,000 queued alerts (3 min behind
-- 15,000) at 80 messages a second. The sender's take reads the queued
-- replies first, then the rest, each in id order through its own index;
-- the two are disjoint, so an item is in exactly one as before.
CREATE INDEX outbox_replies_queued ON outbox (id)
    WHERE status = 'queued' AND inbox_id IS NOT NULL;
CREATE INDEX outbox_others_queued ON outbox (id)
    WHERE status = 'queued' AND inbox_id IS NULL;
DROP INDEX IF EXISTS outbox_queued;
