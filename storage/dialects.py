"""The SQL that differs between the databases the ODBC backend speaks to.

`storage/odbc.py` writes every statement that both databases accept itself
and asks its `Dialect` for the rest. A dialect method returns a `Statement`,
the SQL with `?` markers and its parameters in marker order, because the
order of the markers differs between dialects (`TOP (?)` comes first in
SQL Server, `LIMIT ?` last in PostgreSQL). What differs, PostgreSQL first
and SQL Server second:

- first rows: `LIMIT ?` / `TOP (?)`;
- insert unless the key exists: `ON CONFLICT ("key") DO NOTHING` /
  `INSERT … WHERE NOT EXISTS` under `UPDLOCK, HOLDLOCK`;
- id of an inserted row: `RETURNING id` / `OUTPUT INSERTED.id`;
- upsert: `ON CONFLICT (wa_id) DO UPDATE` / `MERGE … WITH (HOLDLOCK)`;
- take due outbox rows: `FOR UPDATE SKIP LOCKED` /
  `WITH (UPDLOCK, READPAST, ROWLOCK)`;
- lock rows read: `FOR UPDATE` / `WITH (UPDLOCK, ROWLOCK)`;
- a page of rows: `LIMIT ? OFFSET ?` / `OFFSET ? ROWS FETCH NEXT ? ROWS ONLY`;
- claim a phone: `pg_try_advisory_lock` / `sp_getapplock` owned by the session;
- text and JSON: `TEXT` / `NVARCHAR(MAX)`, so accents and emoji survive;
- times: `TIMESTAMP` / `DATETIME2`, both holding UTC.

Times are naive UTC on both, written from the application's clock, because
ODBC has no type with a zone. Schemas live in `migrations/odbc_postgresql/`
and `migrations/mssql/`.

The PostgreSQL dialect runs for real in our tests, through unixODBC and
psqlODBC. No SQL Server runs on our machines, so the SQL Server dialect is
only checked as strings (`tests/storage/test_dialects.py`): its first run
against a real server will be its first real test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.base import EARLIER_UNFINISHED

# Inbox and conversation columns in the order the statements below bind them.
INBOX_COLUMNS = ('"key"', "kind", "wa_id", "phone_number_id", "payload", "received_at")
API_REQUEST_COLUMNS = ("idem_key", "fingerprint", "response", "created_at")
CONVERSATION_COLUMNS = (
    "wa_id",
    "flow",
    "state",
    "slots",
    "flow_version",
    "last_inbound_at",
    "deadline",
    "updated_at",
)

# SQLSTATEs meaning "the server, not the statement": connection errors of
# class 08 and timeouts are ODBC's own, the rest each dialect adds.
COMMON_UNAVAILABLE = ("08", "HYT00", "HYT01")


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL with `?` markers, and its parameters in marker order."""

    sql: str
    params: tuple[Any, ...] = ()


def advisory_lock_key(name: str) -> int:
    """Return a stable signed 64-bit key for a PostgreSQL advisory lock."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Dialect:
    """The statements one database needs; see the module docstring."""

    name: str
    migrations: str
    unavailable_states: tuple[str, ...] = COMMON_UNAVAILABLE
    # Messages of a generic SQLSTATE (HY000) that mean a lost connection.
    unavailable_messages: tuple[str, ...] = ()

    def is_unavailable(self, sqlstate: str, message: str) -> bool:
        """Return whether an error says the server cannot be reached."""
        if sqlstate.startswith(self.unavailable_states):
            return True
        lowered = message.lower()
        return any(text in lowered for text in self.unavailable_messages)

    def create_migrations_table(self) -> Statement:
        raise NotImplementedError

    def migration_lock(self) -> Statement:
        raise NotImplementedError

    def insert_event(self, row: Sequence[Any]) -> Statement:
        raise NotImplementedError

    def keep_answer(self, row: Sequence[Any]) -> Statement:
        """Insert an API call's answer (API_REQUEST_COLUMNS) unless its key
        is kept already; the row count says which."""
        raise NotImplementedError

    def pending_phones(self, limit: int) -> Statement:
        raise NotImplementedError

    def next_event(self, wa_id: str) -> Statement:
        raise NotImplementedError

    def save_conversation(self, row: Sequence[Any]) -> Statement:
        raise NotImplementedError

    def insert_returning_id(
        self, table: str, columns: Sequence[str], row: Sequence[Any]
    ) -> Statement:
        raise NotImplementedError

    def due_outbox(
        self, now: datetime, stale_before: datetime, limit: int
    ) -> Statement:
        raise NotImplementedError

    def lock_by_wamid(self, wamid: str) -> Statement:
        raise NotImplementedError

    def first_rows(self, select: str, params: Sequence[Any], limit: int) -> Statement:
        """`SELECT` + `select` (columns, FROM, WHERE, ORDER BY), first rows."""
        raise NotImplementedError

    def page(
        self, query: str, params: Sequence[Any], limit: int, offset: int
    ) -> Statement:
        """One page of an ordered query (it must end in ORDER BY)."""
        raise NotImplementedError

    def select_for_update(
        self, table: str, where: str, params: Sequence[Any]
    ) -> Statement:
        """`SELECT *` of rows locked until the transaction ends."""
        raise NotImplementedError

    def upsert(
        self, table: str, key: str, columns: Sequence[str], row: Sequence[Any]
    ) -> Statement:
        """Insert a row, or update every other column where `key` matches.

        `key` is the first of `columns`.
        """
        raise NotImplementedError

    def try_claim(self, name: str) -> Statement:
        """Return a statement whose one row is 1 if the claim was granted."""
        raise NotImplementedError

    def release_claim(self, name: str) -> Statement:
        raise NotImplementedError


def _markers(count: int) -> str:
    return ", ".join("?" * count)


class PostgresDialect(Dialect):
    """PostgreSQL through psqlODBC."""

    name = "postgresql"
    migrations = "odbc_postgresql"
    # 57P0x: the server is shutting down or starting; 53300: it is full.
    unavailable_states = (*COMMON_UNAVAILABLE, "57P01", "57P02", "57P03", "53300")
    unavailable_messages = (
        "server closed the connection",
        "connection lost",
        "connection was lost",
        # psqlODBC's own words for a connection the server dropped.
        "connection has been lost",
        "no connection to the server",
    )

    def create_migrations_table(self) -> Statement:
        return Statement(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
            "PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )

    def migration_lock(self) -> Statement:
        key = advisory_lock_key("tracbot.migrations")
        return Statement("SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))", (key,))

    def insert_event(self, row: Sequence[Any]) -> Statement:
        return Statement(
            f"INSERT INTO inbox ({', '.join(INBOX_COLUMNS)}) "
            f'VALUES ({_markers(len(row))}) ON CONFLICT ("key") DO NOTHING',
            tuple(row),
        )

    def keep_answer(self, row: Sequence[Any]) -> Statement:
        return Statement(
            f"INSERT INTO api_requests ({', '.join(API_REQUEST_COLUMNS)}) "
            f"VALUES ({_markers(len(row))}) ON CONFLICT (idem_key) DO NOTHING",
            tuple(row),
        )

    def pending_phones(self, limit: int) -> Statement:
        return Statement(
            "SELECT COALESCE(wa_id, '') AS phone FROM inbox "
            "WHERE done_at IS NULL GROUP BY COALESCE(wa_id, '') "
            "ORDER BY MIN(id) LIMIT ?",
            (limit,),
        )

    def next_event(self, wa_id: str) -> Statement:
        return Statement(
            "SELECT * FROM inbox WHERE done_at IS NULL "
            "AND COALESCE(wa_id, '') = ? ORDER BY id LIMIT 1",
            (wa_id,),
        )

    def save_conversation(self, row: Sequence[Any]) -> Statement:
        return self.upsert("conversations", "wa_id", CONVERSATION_COLUMNS, row)

    def upsert(
        self, table: str, key: str, columns: Sequence[str], row: Sequence[Any]
    ) -> Statement:
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
        return Statement(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({_markers(len(row))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}",
            tuple(row),
        )

    def insert_returning_id(
        self, table: str, columns: Sequence[str], row: Sequence[Any]
    ) -> Statement:
        return Statement(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({_markers(len(row))}) RETURNING id",
            tuple(row),
        )

    def due_outbox(
        self, now: datetime, stale_before: datetime, limit: int
    ) -> Statement:
        return Statement(
            "WITH due AS (SELECT id FROM outbox o "
            "WHERE ((status = 'queued' AND next_attempt_at <= ?) "
            "OR (status = 'sending' AND updated_at < ?)) "
            f"AND {EARLIER_UNFINISHED} "
            "ORDER BY (inbox_id IS NULL), id LIMIT ? FOR UPDATE SKIP LOCKED) "
            "UPDATE outbox SET status = 'sending', "
            "attempts = outbox.attempts + 1, updated_at = ? "
            "FROM due WHERE outbox.id = due.id RETURNING outbox.*",
            (now, stale_before, limit, now),
        )

    def lock_by_wamid(self, wamid: str) -> Statement:
        return Statement(
            "SELECT id, status FROM outbox WHERE wamid = ? "
            "ORDER BY id LIMIT 1 FOR UPDATE",
            (wamid,),
        )

    def first_rows(self, select: str, params: Sequence[Any], limit: int) -> Statement:
        return Statement(f"SELECT {select} LIMIT ?", (*params, limit))

    def page(
        self, query: str, params: Sequence[Any], limit: int, offset: int
    ) -> Statement:
        return Statement(f"{query} LIMIT ? OFFSET ?", (*params, limit, offset))

    def select_for_update(
        self, table: str, where: str, params: Sequence[Any]
    ) -> Statement:
        return Statement(
            f"SELECT * FROM {table} WHERE {where} FOR UPDATE", tuple(params)
        )

    # psqlODBC returns booleans as '1'/'0' text by default; CASE gives an int.

    def try_claim(self, name: str) -> Statement:
        return Statement(
            "SELECT CASE WHEN pg_try_advisory_lock(CAST(? AS BIGINT)) THEN 1 "
            "ELSE 0 END",
            (advisory_lock_key(name),),
        )

    def release_claim(self, name: str) -> Statement:
        return Statement(
            "SELECT CASE WHEN pg_advisory_unlock(CAST(? AS BIGINT)) THEN 1 ELSE 0 END",
            (advisory_lock_key(name),),
        )


class SqlServerDialect(Dialect):
    """Microsoft SQL Server through Microsoft's ODBC driver (untested here)."""

    name = "mssql"
    migrations = "mssql"
    # 40613: database unavailable (Azure SQL); 1205 is a deadlock, which a
    # retry of the whole step fixes, so it stays a plain StorageError.
    unavailable_states = (*COMMON_UNAVAILABLE, "40613")
    unavailable_messages = ("communication link failure", "tcp provider")

    def create_migrations_table(self) -> Statement:
        return Statement(
            "IF OBJECT_ID(N'schema_migrations', N'U') IS NULL "
            "CREATE TABLE schema_migrations (version INT PRIMARY KEY, "
            "name NVARCHAR(200) NOT NULL, applied_at DATETIME2 NOT NULL)"
        )

    def migration_lock(self) -> Statement:
        return Statement(
            "EXEC sp_getapplock @Resource = ?, @LockMode = 'Exclusive', "
            "@LockOwner = 'Transaction', @LockTimeout = 60000",
            ("tracbot.migrations",),
        )

    def insert_event(self, row: Sequence[Any]) -> Statement:
        # HOLDLOCK keeps the range of the missing key locked until commit,
        # so two inserts of one key cannot both see it missing.
        return Statement(
            f"INSERT INTO inbox ({', '.join(INBOX_COLUMNS)}) "
            f"SELECT {_markers(len(row))} WHERE NOT EXISTS (SELECT 1 FROM inbox "
            'WITH (UPDLOCK, HOLDLOCK) WHERE "key" = ?)',
            (*row, row[0]),
        )

    def keep_answer(self, row: Sequence[Any]) -> Statement:
        return Statement(
            f"INSERT INTO api_requests ({', '.join(API_REQUEST_COLUMNS)}) "
            f"SELECT {_markers(len(row))} WHERE NOT EXISTS (SELECT 1 FROM "
            "api_requests WITH (UPDLOCK, HOLDLOCK) WHERE idem_key = ?)",
            (*row, row[0]),
        )

    def pending_phones(self, limit: int) -> Statement:
        return Statement(
            "SELECT TOP (?) COALESCE(wa_id, N'') AS phone FROM inbox "
            "WHERE done_at IS NULL GROUP BY COALESCE(wa_id, N'') "
            "ORDER BY MIN(id)",
            (limit,),
        )

    def next_event(self, wa_id: str) -> Statement:
        return Statement(
            "SELECT TOP (1) * FROM inbox WHERE done_at IS NULL "
            "AND COALESCE(wa_id, N'') = ? ORDER BY id",
            (wa_id,),
        )

    def save_conversation(self, row: Sequence[Any]) -> Statement:
        return self.upsert("conversations", "wa_id", CONVERSATION_COLUMNS, row)

    def upsert(
        self, table: str, key: str, columns: Sequence[str], row: Sequence[Any]
    ) -> Statement:
        # HOLDLOCK: without it two MERGEs of a new key can both insert.
        source = ", ".join(f"? AS {c}" for c in columns)
        updates = ", ".join(f"{c} = s.{c}" for c in columns if c != key)
        values = ", ".join(f"s.{c}" for c in columns)
        return Statement(
            f"MERGE {table} WITH (HOLDLOCK) AS t USING (SELECT {source}) "
            f"AS s ON t.{key} = s.{key} "
            f"WHEN MATCHED THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(columns)}) "
            f"VALUES ({values});",
            tuple(row),
        )

    def insert_returning_id(
        self, table: str, columns: Sequence[str], row: Sequence[Any]
    ) -> Statement:
        return Statement(
            f"INSERT INTO {table} ({', '.join(columns)}) OUTPUT INSERTED.id "
            f"VALUES ({_markers(len(row))})",
            tuple(row),
        )

    def due_outbox(
        self, now: datetime, stale_before: datetime, limit: int
    ) -> Statement:
        # READPAST skips rows another sender holds, as SKIP LOCKED does;
        # the check of earlier items has no READPAST, so it waits for a row
        # another sender holds instead of seeing past it.
        return Statement(
            "WITH due AS (SELECT TOP (?) * FROM outbox AS o "
            "WITH (UPDLOCK, READPAST, ROWLOCK) "
            "WHERE ((status = 'queued' AND next_attempt_at <= ?) "
            "OR (status = 'sending' AND updated_at < ?)) "
            f"AND {EARLIER_UNFINISHED} "
            "ORDER BY CASE WHEN inbox_id IS NULL THEN 1 ELSE 0 END, id) "
            "UPDATE due SET status = 'sending', attempts = attempts + 1, "
            "updated_at = ? OUTPUT INSERTED.*",
            (limit, now, stale_before, now),
        )

    def lock_by_wamid(self, wamid: str) -> Statement:
        return Statement(
            "SELECT TOP (1) id, status FROM outbox WITH (UPDLOCK, ROWLOCK) "
            "WHERE wamid = ? ORDER BY id",
            (wamid,),
        )

    def first_rows(self, select: str, params: Sequence[Any], limit: int) -> Statement:
        return Statement(f"SELECT TOP (?) {select}", (limit, *params))

    def page(
        self, query: str, params: Sequence[Any], limit: int, offset: int
    ) -> Statement:
        return Statement(
            f"{query} OFFSET ? ROWS FETCH NEXT ? ROWS ONLY", (*params, offset, limit)
        )

    def select_for_update(
        self, table: str, where: str, params: Sequence[Any]
    ) -> Statement:
        return Statement(
            f"SELECT * FROM {table} WITH (UPDLOCK, ROWLOCK) WHERE {where}",
            tuple(params),
        )

    def try_claim(self, name: str) -> Statement:
        # NOCOUNT keeps the EXEC's row counts from coming before the result.
        return Statement(
            "SET NOCOUNT ON; DECLARE @granted INT; "
            "EXEC @granted = sp_getapplock @Resource = ?, "
            "@LockMode = 'Exclusive', @LockOwner = 'Session', @LockTimeout = 0; "
            "SELECT CASE WHEN @granted >= 0 THEN 1 ELSE 0 END",
            (name,),
        )

    def release_claim(self, name: str) -> Statement:
        return Statement(
            "SET NOCOUNT ON; DECLARE @released INT; "
            "EXEC @released = sp_releaseapplock @Resource = ?, "
            "@LockOwner = 'Session'; SELECT @released",
            (name,),
        )


DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": PostgresDialect,
    "mssql": SqlServerDialect,
}


def dialect_named(name: str) -> Dialect:
    """Return a dialect by name (`postgresql` or `mssql`).

    Raises:
        ValueError: the name is not a dialect.
    """
    try:
        return DIALECTS[name.lower()]()
    except KeyError:
        raise ValueError(
            f"unknown ODBC dialect {name!r} (expected postgresql or mssql)"
        ) from None


def dialect_for_dbms(dbms_name: str) -> Dialect:
    """Return the dialect of a DBMS, as ODBC's SQL_DBMS_NAME names it.

    Raises:
        ValueError: no dialect speaks to this DBMS.
    """
    lowered = dbms_name.lower()
    if "postgres" in lowered:
        return PostgresDialect()
    if "sql server" in lowered:
        return SqlServerDialect()
    raise ValueError(
        f"no ODBC dialect for DBMS {dbms_name!r}; pass dialect='postgresql' "
        "or dialect='mssql' if it speaks one of them"
    )
