-- Account links (issue 4), SQL Server: DATETIME2 holding UTC, NVARCHAR
-- text. Which driver of the business data each phone belongs to, and the
-- log of linking attempts behind the rate limit.

-- One phone, one driver; one driver, one phone.
CREATE TABLE links (
    wa_id NVARCHAR(64) NOT NULL PRIMARY KEY,
    driver_id NVARCHAR(100) NOT NULL CONSTRAINT links_driver UNIQUE,
    rut NVARCHAR(20) NOT NULL,
    name NVARCHAR(400) NOT NULL,
    role NVARCHAR(50) NOT NULL,
    method NVARCHAR(20) NOT NULL,
    linked_at DATETIME2 NOT NULL
);

CREATE TABLE link_attempts (
    id BIGINT IDENTITY(1, 1) PRIMARY KEY,
    wa_id NVARCHAR(64) NOT NULL,
    rut NVARCHAR(100) NOT NULL,
    outcome NVARCHAR(20) NOT NULL,
    at DATETIME2 NOT NULL
);
CREATE INDEX link_attempts_wa_id ON link_attempts (wa_id, at);
