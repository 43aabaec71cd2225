"""The ODBC backend through aioodbc: `odbc:<ODBC connection string>`.

It serves Tracmin's SQL Server in production and runs against PostgreSQL
through psqlODBC in our tests. Statements both databases accept are written
here; the others come from the connection's `Dialect` (storage/dialects.py),
detected from the DBMS name the driver reports or named by `dialect=`.

aioodbc runs each call in a worker thread, which a cancelled task cannot
stop; every operation therefore runs as a task of its own that finishes
(commits or rolls back, and returns its connection) even when its caller is
cancelled. Times are stored as naive UTC and read back as aware UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import aioodbc
import pyodbc
from aioodbc.connection import Connection
from aioodbc.cursor import Cursor

from storage import jsontext, rows
from storage.base import (
    ADOPT_STATUS,
    NOT_ADOPTED,
    PRUNE_BATCH,
    SENDING_LEASE,
    Conversation,
    DeliveryCounts,
    HistoryEntry,
    InboxEvent,
    KeptAnswer,
    Keyed,
    Link,
    NewInboxEvent,
    NewOutbound,
    OutboxItem,
    QueueStats,
    Store,
    utcnow,
)
from storage.dialects import Dialect, Statement, dialect_for_dbms, dialect_named
from storage.errors import EventDone, KeyInUse, StorageError, StorageUnavailable
from storage.migrations import check_migrate_mode, pending_of, refuse_pending
from storage.status import advances

log = logging.getLogger("tracbot.storage")

T = TypeVar("T")
Work = Callable[[Cursor], Awaitable[T]]


OUTBOX_COLUMNS = (
    "wa_id",
    "phone_number_id",
    "kind",
    "body",
    "status",
    "next_attempt_at",
    "inbox_id",
    "created_at",
    "updated_at",
    "fallback",
)
LINK_COLUMNS = ("wa_id", "driver_id", "rut", "name", "role", "method", "linked_at")

# Connections of the pool kept for the webhook, the sender and the sweeper,
# whatever the dispatcher's claims hold (see `max_claims`).
RESERVED_CONNECTIONS = 2

# Seconds a migration (or the wait for another process's) may take.
MIGRATION_SECONDS = 3600.0

# Markers per statement of `last_inbound`; SQL Server takes 2100 at most.
IN_CHUNK = 500


class _Retry(Exception):
    """A pooled connection was dead before the transaction did anything."""


class OdbcStore(Store):
    """Storage through an ODBC driver; see the module docstring.

    Args:
        url: `odbc:` followed by an ODBC connection string.
        dialect: `postgresql` or `mssql`; detected from the DBMS if None.
        pool_min: connections opened by `open()` and kept.
        pool_max: connections at most; each held `claim` uses one.
        acquire_timeout: seconds to wait for a connection, pooled or new.
        statement_timeout: seconds an operation may take once it has one.
        migrate: `auto` applies pending migrations on open; `refuse` raises
            StorageError naming them (run `tracbot migrate` first).
    """

    def __init__(
        self,
        url: str,
        *,
        dialect: str | None = None,
        pool_min: int = 1,
        pool_max: int = 10,
        acquire_timeout: float = 5.0,
        statement_timeout: float = 10.0,
        migrate: str = "auto",
    ) -> None:
        self.url = url
        self.statement_timeout = statement_timeout
        self.migrate = check_migrate_mode(migrate)
        # Names of the migrations the last `open()` applied.
        self.applied: list[str] = []
        self.pool_min = min(pool_min, pool_max)
        self.pool_max = pool_max
        self.acquire_timeout = acquire_timeout
        self.dialect: Dialect = dialect_named(dialect) if dialect else Dialect()
        self._detect = dialect is None
        self._connection_string = _connection_string(url)
        self._pool: aioodbc.Pool | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def max_claims(self) -> int:
        """Claims held at once: each holds a connection and its step needs
        another, and a few stay free for the webhook and the sender."""
        return max(1, (self.pool_max - RESERVED_CONNECTIONS) // 2)

    # Lifecycle

    async def open(self) -> None:
        try:
            self._pool = await aioodbc.create_pool(
                dsn=self._connection_string,
                minsize=self.pool_min,
                maxsize=self.pool_max,
                autocommit=False,
                timeout=max(1, round(self.acquire_timeout)),
            )
        except pyodbc.Error as exc:
            raise self._translated(exc) from exc

        try:
            if self._detect:
                self.dialect = await self._detect_dialect()
            await self._run(self._migrate, within=MIGRATION_SECONDS)
        except BaseException:
            await self.close()
            raise
        log.info("storage open backend=odbc dialect=%s", self.dialect.name)

    async def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None

        # Operations whose callers were cancelled still finish first.
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), timeout=30)
        except TimeoutError:
            log.warning("storage close timed out with connections in use")

    async def _detect_dialect(self) -> Dialect:
        conn = await self._acquire()
        try:
            dbms = await conn.getinfo(pyodbc.SQL_DBMS_NAME)
        finally:
            await self._pool_release(conn)
        try:
            return dialect_for_dbms(dbms)
        except ValueError as exc:
            raise StorageError(str(exc)) from None

    async def _migrate(self, cursor: Cursor) -> None:
        lock = self.dialect.migration_lock()
        await cursor.execute(lock.sql, *lock.params)
        await cursor.execute(self.dialect.create_migrations_table().sql)
        await cursor.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cursor.fetchall()}
        pending = pending_of(
            f"odbc ({self.dialect.name})", self.dialect.migrations, done
        )
        if pending and self.migrate == "refuse":
            refuse_pending(f"odbc ({self.dialect.name})", pending)

        for migration in pending:
            for statement in migration.statements():
                await cursor.execute(statement)
            await cursor.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) "
                "VALUES (?, ?, ?)",
                migration.version,
                migration.name,
                _naive(utcnow()),
            )
            log.info("migration applied backend=odbc version=%s", migration.name)
        self.applied = [m.name for m in pending]

    # Running work

    async def _run(self, work: Work[T], within: float | None = None) -> T:
        """Run `work` in one transaction, to its end even if we are cancelled.

        The caller waits `within` seconds at most (the statement and the
        acquire timeouts by default).
        """
        task = asyncio.ensure_future(self._transaction(work))
        self._tasks.add(task)
        task.add_done_callback(_forget(self._tasks))
        # ODBC calls block a thread with no time limit of their own: a
        # server that hung without closing its connections held webhooks
        # for minutes with no answer. The caller gets its error in time;
        # the work finishes (commits or not) when the server answers.
        try:
            return await asyncio.wait_for(
                asyncio.shield(task),
                within or self.statement_timeout + self.acquire_timeout,
            )
        except TimeoutError:
            if task.done():
                raise
            raise StorageUnavailable(
                f"no answer from the database within {self.statement_timeout:g}s"
            ) from None

    async def _transaction(self, work: Work[T]) -> T:
        # A connection that died while idle in the pool (a server restart)
        # fails on its first statement, before anything was sent: a retry
        # on another connection is safe then, and only then. After a
        # restart every idle connection is dead; each retry drops one.
        for _ in range(self.pool_max):
            with contextlib.suppress(_Retry):
                return await self._attempt(work)
        return await self._attempt(work, retry=False)

    async def _attempt(self, work: Work[T], retry: bool = True) -> T:
        conn = await self._acquire()
        started = False
        try:
            cursor = await conn.cursor()
            try:
                result = await work(_Tracked(cursor))
                started = True
                await conn.commit()
                return result
            except BaseException:
                await _rollback(conn)
                raise
            finally:
                with contextlib.suppress(pyodbc.Error):
                    await cursor.close()
        except pyodbc.Error as exc:
            error = self._translated(exc)
            if isinstance(error, StorageUnavailable):
                await _close(conn)
                if retry and not started and getattr(exc, "_first", False):
                    raise _Retry from exc
            raise error from exc
        finally:
            await self._pool_release(conn)

    async def _acquire(self) -> Connection:
        if self._pool is None:
            raise StorageError("the odbc store is not open")
        try:
            return await asyncio.wait_for(
                self._pool.acquire(), timeout=self.acquire_timeout
            )
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"no database connection within {self.acquire_timeout}s "
                f"(pool_max={self.pool_max})"
            ) from exc
        except pyodbc.Error as exc:
            raise self._translated(exc) from exc

    async def _pool_release(self, conn: Connection) -> None:
        assert self._pool is not None or conn.closed
        if self._pool is not None:
            await self._pool.release(conn)
        else:
            await _close(conn)

    def _translated(self, exc: pyodbc.Error) -> StorageError:
        sqlstate = exc.args[0] if exc.args else ""
        message = str(exc.args[1] if len(exc.args) > 1 else exc)
        if self.dialect.is_unavailable(str(sqlstate), message):
            return StorageUnavailable(f"database unavailable: {message}")
        return StorageError(f"database error [{sqlstate}]: {message}")

    @contextlib.asynccontextmanager
    async def claim(self, wa_id: str) -> AsyncIterator[bool]:
        """Hold this phone's lock in the database; yield False if taken.

        The lock belongs to a connection held for the whole block.
        """
        name = f"tracbot.claim:{wa_id}"
        conn = await self._lock(name)
        if conn is None:
            yield False
            return
        try:
            yield True
        finally:
            await self._release_claim(conn, name)
            await self._pool_release(conn)

    async def _lock(self, name: str) -> Connection | None:
        # Pooled connections that died idle fail here first; each failure
        # drops one (`_on` closes it) and another is tried.
        for attempt in range(self.pool_max + 1):
            conn = await self._acquire()
            try:
                held = await self._on(conn, self.dialect.try_claim(name))
            except StorageUnavailable:
                await self._pool_release(conn)
                if attempt == self.pool_max:
                    raise
                continue
            except BaseException:
                await self._pool_release(conn)
                raise
            if held:
                return conn
            await self._pool_release(conn)
            return None
        raise AssertionError("unreachable")

    async def _on(self, conn: Connection, statement: Statement) -> bool:
        """Run a claim statement on the claim's own connection."""

        async def execute() -> bool:
            cursor = await conn.execute(statement.sql, *statement.params)
            row = await cursor.fetchone()
            await cursor.close()
            await conn.commit()
            return row is not None and int(row[0]) == 1

        task = asyncio.ensure_future(execute())
        self._tasks.add(task)
        task.add_done_callback(_forget(self._tasks))
        try:
            return await asyncio.shield(task)
        except pyodbc.Error as exc:
            await _close(conn)
            raise self._translated(exc) from exc

    async def _release_claim(self, conn: Connection, name: str) -> None:
        # The lock dies with its session, so a connection that cannot say
        # unlock is closed instead.
        try:
            await self._on(conn, self.dialect.release_claim(name))
        except StorageError as exc:
            log.warning("claim release failed, connection dropped: %s", exc)
            await _close(conn)

    # Inbox

    async def add_events(self, events: Sequence[NewInboxEvent]) -> int:
        now = _naive(utcnow())
        rows = [
            (e.key, e.kind, e.wa_id, e.phone_number_id, _json(e.payload), now)
            for e in events
        ]

        async def work(cursor: Cursor) -> int:
            added = 0
            for row in rows:
                statement = self.dialect.insert_event(row)
                await cursor.execute(statement.sql, *statement.params)
                added += cursor.rowcount == 1
            return added

        return await self._run(work) if rows else 0

    async def pending_phones(self, limit: int = 100) -> list[str]:
        statement = self.dialect.pending_phones(limit)
        rows = await self._run(_fetch_all(statement.sql, statement.params))
        return [row["phone"] for row in rows]

    async def next_event(self, wa_id: str) -> InboxEvent | None:
        statement = self.dialect.next_event(wa_id)
        rows = await self._run(_fetch_all(statement.sql, statement.params))
        return _inbox_event(rows[0]) if rows else None

    async def pending_count(self) -> int:
        rows = await self._run(
            _fetch_all("SELECT COUNT(*) AS n FROM inbox WHERE done_at IS NULL")
        )
        return int(rows[0]["n"])

    # Conversations

    async def load_conversation(self, wa_id: str) -> Conversation | None:
        rows = await self._run(
            _fetch_all("SELECT * FROM conversations WHERE wa_id = ?", (wa_id,))
        )
        return _conversation(rows[0]) if rows else None

    async def expired_conversations(
        self, now: datetime, limit: int = 100
    ) -> list[Conversation]:
        statement = self.dialect.first_rows(
            "* FROM conversations WHERE deadline <= ? ORDER BY deadline",
            (_naive(now),),
            limit,
        )
        rows = await self._run(_fetch_all(statement.sql, statement.params))
        return [_conversation(row) for row in rows]

    async def commit_step(
        self,
        event_id: int,
        conversation: Conversation | None,
        replies: Sequence[NewOutbound],
    ) -> list[int]:
        now = _naive(utcnow())

        async def work(cursor: Cursor) -> list[int]:
            # The done mark comes first: its row lock makes a process that
            # replays the same event wait, then find it done and roll back.
            await cursor.execute(
                "UPDATE inbox SET done_at = ? WHERE id = ? AND done_at IS NULL",
                now,
                event_id,
            )
            if cursor.rowcount != 1:
                raise EventDone(f"inbox event {event_id} is not pending")

            if conversation is not None:
                statement = self.dialect.save_conversation(
                    _conversation_row(conversation, now)
                )
                await cursor.execute(statement.sql, *statement.params)
            return await self._insert_outbound(cursor, replies, now, event_id)

        return await self._run(work)

    # Outbox

    async def enqueue(
        self, replies: Sequence[NewOutbound], keyed: Keyed | None = None
    ) -> list[int]:
        now = _naive(utcnow())

        async def work(cursor: Cursor) -> list[int]:
            ids = await self._insert_outbound(cursor, replies, now, None)
            if keyed is not None:
                row = (keyed.key, keyed.fingerprint, keyed.answer(ids), now)
                statement = self.dialect.keep_answer(row)
                await cursor.execute(statement.sql, *statement.params)
                if cursor.rowcount != 1:
                    # Raised inside the transaction: its messages go too.
                    raise KeyInUse(keyed.key)
            return ids

        return await self._run(work)

    async def kept_answer(self, key: str) -> KeptAnswer | None:
        rows = await self._run(
            _fetch_all(
                "SELECT fingerprint, response FROM api_requests WHERE idem_key = ?",
                (key,),
            )
        )
        return KeptAnswer(rows[0]["fingerprint"], rows[0]["response"]) if rows else None

    async def _insert_outbound(
        self,
        cursor: Cursor,
        replies: Sequence[NewOutbound],
        now: datetime,
        inbox_id: int | None,
    ) -> list[int]:
        ids = []
        for reply in replies:
            row = (
                reply.wa_id,
                reply.phone_number_id,
                reply.kind,
                _json(reply.body),
                "queued",
                now,
                inbox_id,
                now,
                now,
                None if reply.fallback is None else _json(reply.fallback),
            )
            statement = self.dialect.insert_returning_id("outbox", OUTBOX_COLUMNS, row)
            await cursor.execute(statement.sql, *statement.params)
            ids.append(int((await cursor.fetchone())[0]))
        return ids

    async def due_outbox(self, limit: int = 50) -> list[OutboxItem]:
        now = utcnow()
        statement = self.dialect.due_outbox(
            _naive(now), _naive(now - SENDING_LEASE), limit
        )
        rows = await self._run(_fetch_all(statement.sql, statement.params))
        return sorted((_outbox_item(row) for row in rows), key=lambda i: i.id)

    async def mark_sent(self, item_id: int, wamid: str | None, status: str) -> None:
        await self._run(
            _execute(
                "UPDATE outbox SET status = ?, wamid = COALESCE(?, wamid), "
                f"updated_at = ? WHERE id = ? AND {NOT_ADOPTED}",
                (status, wamid, _naive(utcnow()), item_id),
            )
        )

    async def mark_retry(
        self, item_id: int, next_attempt_at: datetime, error: str
    ) -> None:
        await self._run(
            _execute(
                "UPDATE outbox SET status = 'queued', next_attempt_at = ?, "
                f"error_detail = ?, updated_at = ? WHERE id = ? AND {NOT_ADOPTED}",
                (_naive(next_attempt_at), error, _naive(utcnow()), item_id),
            )
        )

    async def give_back(
        self,
        item_id: int,
        attempt: int,
        error: str,
        retry_at: datetime | None = None,
    ) -> None:
        now = _naive(utcnow())
        due = now if retry_at is None else _naive(retry_at)
        await self._run(
            _execute(
                "UPDATE outbox SET status = 'queued', attempts = attempts - 1, "
                "next_attempt_at = ?, error_detail = ?, updated_at = ? "
                "WHERE id = ? AND status = 'sending' AND attempts = ?",
                (due, error, now, item_id, attempt),
            )
        )

    async def renew_lease(self, item_id: int, attempt: int) -> bool:
        async def work(cursor: Cursor) -> bool:
            await cursor.execute(
                "UPDATE outbox SET updated_at = ? "
                "WHERE id = ? AND status = 'sending' AND attempts = ?",
                _naive(utcnow()),
                item_id,
                attempt,
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def mark_failed(self, item_id: int, code: int | None, detail: str) -> None:
        await self._run(
            _execute(
                "UPDATE outbox SET status = 'failed', "
                "error_code = COALESCE(?, error_code), "
                "error_detail = COALESCE(?, error_detail), updated_at = ? "
                f"WHERE id = ? AND {NOT_ADOPTED}",
                (code, detail, _naive(utcnow()), item_id),
            )
        )

    async def adopt_status(
        self,
        item_id: int,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        row = (wamid, status, error_code, error_detail, _naive(utcnow()), item_id)

        async def work(cursor: Cursor) -> bool:
            await cursor.execute(ADOPT_STATUS, *row)
            return cursor.rowcount == 1

        return await self._run(work)

    async def apply_status(
        self,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        lock = self.dialect.lock_by_wamid(wamid)

        # The row lock orders two webhooks of one message, so that the
        # later-ranked status wins whichever commits first.
        async def work(cursor: Cursor) -> bool:
            await cursor.execute(lock.sql, *lock.params)
            row = await cursor.fetchone()
            if row is None:
                return False
            item_id, current = row
            if advances(current, status):
                await cursor.execute(
                    "UPDATE outbox SET status = ?, "
                    "error_code = COALESCE(?, error_code), "
                    "error_detail = COALESCE(?, error_detail), updated_at = ? "
                    "WHERE id = ?",
                    status,
                    error_code,
                    error_detail,
                    _naive(utcnow()),
                    item_id,
                )
            return True

        return await self._run(work)

    async def _prune_batch(
        self, table: str, key: str, condition: str, column: str, before: datetime
    ) -> int:
        select = self.dialect.first_rows(
            f"{key} FROM {table} WHERE {condition} AND {column} < ?",
            (_naive(before),),
            PRUNE_BATCH,
        )

        async def work(cursor: Cursor) -> int:
            await cursor.execute(select.sql, *select.params)
            keys = [(row[0],) for row in await cursor.fetchall()]
            if keys and table == "outbox":
                await cursor.executemany(
                    "DELETE FROM attempts WHERE outbox_id = ?", keys
                )
            if keys:
                await cursor.executemany(f"DELETE FROM {table} WHERE {key} = ?", keys)
            return len(keys)

        return await self._run(work)

    async def outbox_items(self, wa_id: str | None = None) -> list[OutboxItem]:
        if wa_id is None:
            work = _fetch_all("SELECT * FROM outbox ORDER BY id")
        else:
            work = _fetch_all(
                "SELECT * FROM outbox WHERE wa_id = ? ORDER BY id", (wa_id,)
            )
        return [_outbox_item(row) for row in await self._run(work)]

    # Delivery

    async def record_attempt(
        self,
        item_id: int,
        attempt: int,
        outcome: str,
        ms: int,
        error_code: int | None = None,
        detail: str | None = None,
    ) -> None:
        await self._run(
            _execute(
                "INSERT INTO attempts (outbox_id, attempt, outcome, error_code, "
                "detail, ms, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (item_id, attempt, outcome, error_code, detail, ms, _naive(utcnow())),
            )
        )

    async def attempts_of(self, item_id: int) -> list[dict[str, Any]]:
        rows = await self._run(
            _fetch_all(
                "SELECT attempt, outcome, error_code, detail, ms, at FROM attempts "
                "WHERE outbox_id = ? ORDER BY id",
                (item_id,),
            )
        )
        return [{**row, "at": _aware(row["at"])} for row in rows]

    async def last_inbound(self, wa_ids: Sequence[str]) -> dict[str, datetime]:
        phones = list(dict.fromkeys(wa_ids))
        chunks = [phones[i : i + IN_CHUNK] for i in range(0, len(phones), IN_CHUNK)]

        async def work(cursor: Cursor) -> dict[str, datetime]:
            found = {}
            for chunk in chunks:
                marks = ", ".join("?" * len(chunk))
                await cursor.execute(
                    "SELECT wa_id, MAX(at) AS at FROM ("
                    "SELECT wa_id, last_inbound_at AS at FROM conversations "
                    f"WHERE wa_id IN ({marks}) AND last_inbound_at IS NOT NULL "
                    "UNION ALL SELECT wa_id, received_at FROM inbox "
                    f"WHERE wa_id IN ({marks}) AND done_at IS NULL "
                    "AND kind = 'message') AS t GROUP BY wa_id",
                    *chunk,
                    *chunk,
                )
                found.update(
                    (wa_id, _aware(at)) for wa_id, at in await cursor.fetchall()
                )
            return found

        return await self._run(work) if chunks else {}

    async def outbox_by_wamid(self, wamid: str) -> OutboxItem | None:
        statement = self.dialect.first_rows(
            "* FROM outbox WHERE wamid = ? ORDER BY id", (wamid,), 1
        )
        rows = await self._run(_fetch_all(statement.sql, statement.params))
        return _outbox_item(rows[0]) if rows else None

    async def outbox_with_replacement(self, item_id: int) -> list[OutboxItem]:
        rows = await self._run(
            _fetch_all(
                "SELECT * FROM outbox WHERE id = ? OR fallback_of = ? ORDER BY id",
                (item_id, item_id),
            )
        )
        return [_outbox_item(row) for row in rows]

    async def add_fallback(self, item_id: int, *, replace: bool) -> OutboxItem | None:
        now = _naive(utcnow())
        lock = self.dialect.select_for_update(
            "outbox o",
            "id = ? AND fallback IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM outbox f WHERE f.fallback_of = o.id)",
            (item_id,),
        )

        # The row lock makes a second caller wait, then find the fallback
        # already there; the unique index on fallback_of backs it up.
        async def work(cursor: Cursor) -> OutboxItem | None:
            rows = await _fetch_all(lock.sql, lock.params)(cursor)
            if not rows:
                return None
            row = rows[0]
            if replace:
                await cursor.execute(
                    "UPDATE outbox SET status = 'replaced', updated_at = ? "
                    "WHERE id = ?",
                    now,
                    item_id,
                )
            status, attempts = ("sending", 1) if replace else ("queued", 0)
            values = {
                "wa_id": row["wa_id"],
                "phone_number_id": row["phone_number_id"],
                "kind": row["kind"],
                "body": row["fallback"],
                "status": status,
                "attempts": attempts,
                "next_attempt_at": now,
                "inbox_id": row["inbox_id"],
                "fallback_of": item_id,
                "created_at": now,
                "updated_at": now,
            }
            insert = self.dialect.insert_returning_id(
                "outbox", tuple(values), tuple(values.values())
            )
            await cursor.execute(insert.sql, *insert.params)
            added = int((await cursor.fetchone())[0])
            found = await _fetch_all("SELECT * FROM outbox WHERE id = ?", (added,))(
                cursor
            )
            return _outbox_item(found[0])

        return await self._run(work)

    async def history(
        self, wa_id: str, limit: int, offset: int
    ) -> tuple[int, list[HistoryEntry]]:
        # Read marks are requests, not messages; inbound statuses are about
        # our own messages, already in the outbox rows.
        union = (
            "SELECT 'out' AS direction, id, body, status, wamid, error_code, "
            "error_detail, created_at AS at, fallback_of FROM outbox "
            "WHERE wa_id = ? AND kind = 'message' UNION ALL "
            "SELECT 'in', id, payload, 'received', \"key\", NULL, NULL, "
            "received_at, NULL FROM inbox WHERE wa_id = ? AND kind = 'message'"
        )
        page = self.dialect.page(
            f"SELECT * FROM ({union}) h ORDER BY at DESC, direction, id DESC",
            (wa_id, wa_id),
            limit,
            offset,
        )

        async def work(cursor: Cursor) -> tuple[int, list[HistoryEntry]]:
            count = _fetch_all(f"SELECT COUNT(*) AS n FROM ({union}) h", (wa_id,) * 2)
            total = (await count(cursor))[0]["n"]
            rows = await _fetch_all(page.sql, page.params)(cursor)
            return int(total), [_history_entry(row) for row in rows]

        return await self._run(work)

    async def delivery_counts(self, start: datetime, end: datetime) -> DeliveryCounts:
        accepted = "CASE WHEN wamid IS NULL THEN 0 ELSE 1 END"
        rows = await self._run(
            _fetch_all(
                f"SELECT status, {accepted} AS accepted, COUNT(*) AS n "
                "FROM outbox WHERE kind = 'message' AND created_at >= ? "
                f"AND created_at < ? GROUP BY status, {accepted}",
                (_naive(start), _naive(end)),
            )
        )
        return DeliveryCounts.tally(
            (row["status"], bool(int(row["accepted"])), int(row["n"])) for row in rows
        )

    async def queue_stats(self) -> QueueStats:
        async def work(cursor: Cursor) -> QueueStats:
            [inbox] = await _fetch_all(
                "SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM inbox "
                "WHERE done_at IS NULL"
            )(cursor)
            [outbox] = await _fetch_all(
                "SELECT COUNT(*) AS n FROM outbox WHERE status IN ('queued', 'sending')"
            )(cursor)
            return QueueStats(
                int(inbox["n"]), _aware(inbox["oldest"]), int(outbox["n"])
            )

        return await self._run(work)

    # Account links

    async def get_link(self, wa_id: str) -> Link | None:
        rows = await self._run(
            _fetch_all("SELECT * FROM links WHERE wa_id = ?", (wa_id,))
        )
        return _link(rows[0]) if rows else None

    async def link_of_driver(self, driver_id: str) -> Link | None:
        rows = await self._run(
            _fetch_all("SELECT * FROM links WHERE driver_id = ?", (driver_id,))
        )
        return _link(rows[0]) if rows else None

    async def save_link(self, link: Link) -> None:
        row = (
            link.wa_id,
            link.driver_id,
            link.rut,
            link.name,
            link.role,
            link.method,
            _naive(link.linked_at),
        )
        statement = self.dialect.upsert("links", "wa_id", LINK_COLUMNS, row)
        await self._run(_execute(statement.sql, statement.params))

    async def remove_link(self, wa_id: str) -> bool:
        async def work(cursor: Cursor) -> bool:
            await cursor.execute("DELETE FROM links WHERE wa_id = ?", wa_id)
            return cursor.rowcount > 0

        return await self._run(work)

    async def move_link(self, old_wa_id: str, new_wa_id: str) -> bool:
        async def work(cursor: Cursor) -> bool:
            # The new number may have been linked (by phone) meanwhile; the
            # account that moved there is the one that counts.
            await cursor.execute("DELETE FROM links WHERE wa_id = ?", new_wa_id)
            await cursor.execute(
                "UPDATE links SET wa_id = ? WHERE wa_id = ?", new_wa_id, old_wa_id
            )
            return cursor.rowcount > 0

        return await self._run(work)

    async def move_conversation(self, old_wa_id: str, new_wa_id: str) -> bool:
        async def work(cursor: Cursor) -> bool:
            # A conversation the new number started itself stays; an idle
            # row of it (its window) gives way to the one that moves.
            await cursor.execute(
                "SELECT 1 FROM conversations WHERE wa_id = ? AND flow IS NOT NULL",
                new_wa_id,
            )
            if await cursor.fetchone() is not None:
                return False
            await cursor.execute("DELETE FROM conversations WHERE wa_id = ?", new_wa_id)
            await cursor.execute(
                "UPDATE conversations SET wa_id = ? WHERE wa_id = ?",
                new_wa_id,
                old_wa_id,
            )
            return cursor.rowcount > 0

        return await self._run(work)

    async def add_link_attempt(self, wa_id: str, rut: str, outcome: str) -> None:
        await self._run(
            _execute(
                "INSERT INTO link_attempts (wa_id, rut, outcome, at) "
                "VALUES (?, ?, ?, ?)",
                (wa_id, rut, outcome, _naive(utcnow())),
            )
        )

    async def failed_link_attempts(self, wa_id: str, since: datetime) -> int:
        rows = await self._run(
            _fetch_all(
                "SELECT COUNT(*) AS n FROM link_attempts "
                "WHERE wa_id = ? AND at >= ? AND outcome NOT IN ('ok', 'denied')",
                (wa_id, _naive(since)),
            )
        )
        return int(rows[0]["n"])

    async def inbound_count(self, start: datetime, end: datetime) -> int:
        rows = await self._run(
            _fetch_all(
                "SELECT COUNT(*) AS n FROM inbox WHERE kind = 'message' "
                "AND received_at >= ? AND received_at < ?",
                (_naive(start), _naive(end)),
            )
        )
        return int(rows[0]["n"])


class _Tracked:
    """A cursor that marks errors of its first statement (see `_Retry`)."""

    def __init__(self, cursor: Cursor) -> None:
        self._cursor = cursor
        self._executed = 0

    async def execute(self, sql: str, *params: Any) -> Cursor:
        try:
            await self._cursor.execute(sql, *params)
        except pyodbc.Error as exc:
            exc._first = self._executed == 0  # type: ignore[attr-defined]
            raise
        self._executed += 1
        return self._cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _fetch_all(sql: str, params: Sequence[Any] = ()) -> Work[list[dict[str, Any]]]:
    async def work(cursor: Cursor) -> list[dict[str, Any]]:
        await cursor.execute(sql, *params)
        # psqlODBC describes no columns when `UPDATE … RETURNING` hit no row.
        if cursor.description is None:
            return []
        names = [column[0].lower() for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    return work


def _execute(sql: str, params: Sequence[Any]) -> Work[None]:
    async def work(cursor: Cursor) -> None:
        await cursor.execute(sql, *params)

    return work


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        # Its caller may be gone; the error was logged by whoever saw it.
        if not task.cancelled():
            task.exception()

    return done


async def _rollback(conn: Connection) -> None:
    if not conn.closed:
        with contextlib.suppress(pyodbc.Error):
            await conn.rollback()


async def _close(conn: Connection) -> None:
    if not conn.closed:
        with contextlib.suppress(pyodbc.Error):
            await conn.close()


def _connection_string(url: str) -> str:
    if not url.lower().startswith("odbc:"):
        raise ValueError("an odbc storage url starts with 'odbc:'")
    rest = url[len("odbc:") :]
    return rest.removeprefix("//")


def _conversation_row(c: Conversation, now: datetime) -> tuple[Any, ...]:
    return (
        c.wa_id,
        c.flow,
        c.state,
        _json(c.slots),
        c.flow_version,
        _naive(c.last_inbound_at),
        _naive(c.deadline),
        now,
    )


def _naive(value: datetime | None) -> datetime | None:
    """Return a time as naive UTC, the form the columns hold."""
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


_json = jsontext.dumps


# Rows into dataclasses (storage/rows.py); the columns hold naive UTC.
_inbox_event = partial(rows.inbox_event, when=_aware)
_conversation = partial(rows.conversation, when=_aware)
_outbox_item = partial(rows.outbox_item, when=_aware)
_history_entry = partial(rows.history_entry, when=_aware)
_link = partial(rows.link, when=_aware)
