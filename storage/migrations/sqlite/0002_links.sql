-- Account links (issue 4): which driver of the business data each phone
-- belongs to, and the log of linking attempts behind the rate limit.
-- Times are ISO-8601 text in UTC.

-- One phone, one driver; one driver, one phone (a RUT already linked to
-- another number is refused by the flow, moved only by a number change).
CREATE TABLE links (
    wa_id TEXT PRIMARY KEY,
    driver_id TEXT NOT NULL UNIQUE,
    rut TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    method TEXT NOT NULL,
    linked_at TEXT NOT NULL
);

CREATE TABLE link_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wa_id TEXT NOT NULL,
    rut TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX link_attempts_wa_id ON link_attempts (wa_id, at);
