"""The PostgreSQL backend through asyncpg: `postgresql://user@host:port/db`.

This is the production backend: several tracbot processes share one
database. Two database features make that safe. `claim` holds a session
advisory lock per phone on a connection of its own, so two processes never
run one phone's events at once; `due_outbox` takes rows with `FOR UPDATE
SKIP LOCKED`, so two senders never take the same message. Times are
timestamptz written from the application's UTC clock, and asyncpg reads them
back as aware UTC datetimes whatever the server's TimeZone.

A server that cannot be reached raises `StorageUnavailable` (the webhook
answers 503 and Meta retries); any other database failure `StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from storage.base import (
    Conversation,
    InboxEvent,
    NewInboxEvent,
    NewOutbound,
    OutboxItem,
    Store,
    utcnow,
)
from storage.dialects import advisory_lock_key
from storage.errors import StorageError, StorageUnavailable
from storage.migrations import migrations
from storage.status import advances

log = logging.getLogger("tracbot.storage")

# A `sending` item older than this was taken by a sender that died.
SENDING_LEASE = timedelta(minutes=2)

# Serialises `open()` of several processes so a migration applies once.
MIGRATION_LOCK = advisory_lock_key("tracbot.migrations")

# Errors after which the server, not the statement, is the problem.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
_FAILED = (asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresStore(Store):
    """Storage in PostgreSQL; see the module docstring.

    Args:
        url: a libpq-style URL, `postgresql://user:password@host:port/db`.
        pool_min: connections opened by `open()` and kept.
        pool_max: connections at most; each held `claim` uses one.
        acquire_timeout: seconds to wait for a connection, pooled or new.
        command_timeout: seconds a statement may run.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        acquire_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.acquire_timeout = acquire_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None

    # Lifecycle

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.acquire_timeout,
                command_timeout=self.command_timeout,
                server_settings={"application_name": "tracbot"},
            )
        except (*_UNAVAILABLE, TimeoutError) as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        except _FAILED as exc:
            raise StorageError(f"cannot open PostgreSQL storage: {exc}") from exc

        await self._migrate()
        log.info("storage open backend=postgresql pool_max=%s", self.pool_max)

    async def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None

        # A connection still held (a claim whose task was lost) must not
        # keep the process from exiting.
        try:
            await asyncio.wait_for(pool.close(), timeout=self.command_timeout)
        except TimeoutError:
            log.warning("storage close timed out; terminating connections")
            pool.terminate()

    async def _migrate(self) -> None:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                "PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
            )
            rows = await conn.fetch("SELECT version FROM schema_migrations")
            done = {row["version"] for row in rows}

            for migration in migrations("postgres"):
                if migration.version in done:
                    continue
                for statement in migration.statements():
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    utcnow(),
                )
                log.info(
                    "migration applied backend=postgresql version=%s", migration.name
                )

    # Connections

    async def _acquire(self) -> asyncpg.Connection:
        if self._pool is None:
            raise StorageError("the postgresql store is not open")
        try:
            return await self._fresh_connection()
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"no database connection within {self.acquire_timeout}s "
                f"(pool_max={self.pool_max})"
            ) from exc
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def _fresh_connection(self) -> asyncpg.Connection:
        # A server restart leaves its goodbye unread on idle connections
        # until the loop polls their sockets: one pass of the loop lets
        # asyncpg see them closed, so we skip them instead of failing.
        assert self._pool is not None
        deadline = asyncio.get_running_loop().time() + self.acquire_timeout
        for _ in range(self.pool_max + 1):
            remaining = max(deadline - asyncio.get_running_loop().time(), 0.001)
            conn = await self._pool.acquire(timeout=remaining)
            await asyncio.sleep(0)
            if not conn.is_closed():
                return conn
            await self._release(conn)
        return await self._pool.acquire(timeout=self.acquire_timeout)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._acquire()
        try:
            with _translated():
                yield conn
        finally:
            await self._release(conn)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def claim(self, wa_id: str) -> AsyncIterator[bool]:
        """Hold this phone's advisory lock; yield False if another holds it.

        The lock lives on a connection of its own, held for the whole block:
        a session lock would be released by the pool's reset otherwise.
        """
        key = advisory_lock_key(f"tracbot.claim:{wa_id}")
        conn = await self._acquire()
        try:
            with _translated():
                held = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
            if not held:
                yield False
                return
            try:
                yield True
            finally:
                await _unlock(conn, key)
        finally:
            await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        # Release resets the connection, which fails on a dead one; that
        # must not hide the error that killed it.
        assert self._pool is not None
        try:
            await self._pool.release(conn)
        except (*_UNAVAILABLE, *_FAILED, TimeoutError) as exc:
            log.warning("connection dropped on release: %s", exc)

    # Inbox

    async def add_events(self, events: Sequence[NewInboxEvent]) -> int:
        if not events:
            return 0
        columns = list(zip(*(_event_row(e) for e in events), strict=True))

        # One statement for the whole batch; ORDINALITY keeps the ids in the
        # order Meta sent the events.
        async with self._connection() as conn:
            rows = await conn.fetch(
                "INSERT INTO inbox (key, kind, wa_id, phone_number_id, payload, "
                "received_at) SELECT k, kd, w, p, j::json, $6 FROM unnest("
                "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) "
                "WITH ORDINALITY AS e(k, kd, w, p, j, n) ORDER BY n "
                "ON CONFLICT (key) DO NOTHING RETURNING id",
                *columns,
                utcnow(),
            )
        return len(rows)

    async def pending_phones(self, limit: int = 100) -> list[str]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT COALESCE(wa_id, '') AS phone FROM inbox "
                "WHERE done_at IS NULL GROUP BY 1 ORDER BY MIN(id) LIMIT $1",
                limit,
            )
        return [row["phone"] for row in rows]

    async def next_event(self, wa_id: str) -> InboxEvent | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM inbox WHERE done_at IS NULL "
                "AND COALESCE(wa_id, '') = $1 ORDER BY id LIMIT 1",
                wa_id,
            )
        return None if row is None else _inbox_event(row)

    async def pending_count(self) -> int:
        async with self._connection() as conn:
            return await conn.fetchval(
                "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL"
            )

    # Conversations

    async def load_conversation(self, wa_id: str) -> Conversation | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM conversations WHERE wa_id = $1", wa_id
            )
        return None if row is None else _conversation(row)

    async def commit_step(
        self,
        event_id: int,
        conversation: Conversation | None,
        replies: Sequence[NewOutbound],
    ) -> list[int]:
        now = utcnow()
        async with self._transaction() as conn:
            # The done mark comes first: its row lock makes a second process
            # that replays the same event wait here, then find it done and
            # roll back instead of queueing the replies twice.
            marked = await conn.execute(
                "UPDATE inbox SET done_at = $2 WHERE id = $1 AND done_at IS NULL",
                event_id,
                now,
            )
            if marked != "UPDATE 1":
                raise StorageError(f"inbox event {event_id} is not pending")

            if conversation is not None:
                await _save_conversation(conn, conversation, now)
            return await _insert_outbound(conn, replies, now, event_id)

    # Outbox

    async def enqueue(self, replies: Sequence[NewOutbound]) -> list[int]:
        async with self._transaction() as conn:
            return await _insert_outbound(conn, replies, utcnow(), None)

    async def due_outbox(self, limit: int = 50) -> list[OutboxItem]:
        now = utcnow()

        # SKIP LOCKED lets concurrent senders each take other rows instead
        # of waiting on, and then taking again, the rows another one took.
        async with self._connection() as conn:
            rows = await conn.fetch(
                "WITH due AS (SELECT id FROM outbox "
                "WHERE (status = 'queued' AND next_attempt_at <= $1) "
                "OR (status = 'sending' AND updated_at < $2) "
                "ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) "
                "UPDATE outbox o SET status = 'sending', "
                "attempts = o.attempts + 1, updated_at = $1 "
                "FROM due WHERE o.id = due.id RETURNING o.*",
                now,
                now - SENDING_LEASE,
                limit,
            )
        return sorted((_outbox_item(row) for row in rows), key=lambda i: i.id)

    async def mark_sent(self, item_id: int, wamid: str | None, status: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE outbox SET status = $2, wamid = COALESCE($3, wamid), "
                "updated_at = $4 WHERE id = $1",
                item_id,
                status,
                wamid,
                utcnow(),
            )

    async def mark_retry(
        self, item_id: int, next_attempt_at: datetime, error: str
    ) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE outbox SET status = 'queued', next_attempt_at = $2, "
                "error_detail = $3, updated_at = $4 WHERE id = $1",
                item_id,
                _utc(next_attempt_at),
                error,
                utcnow(),
            )

    async def mark_failed(self, item_id: int, code: int | None, detail: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE outbox SET status = 'failed', "
                "error_code = COALESCE($2, error_code), "
                "error_detail = COALESCE($3, error_detail), updated_at = $4 "
                "WHERE id = $1",
                item_id,
                code,
                detail,
                utcnow(),
            )

    async def apply_status(
        self,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        # The row lock orders two webhooks of one message, so that the
        # later-ranked status wins whichever commits first.
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "SELECT id, status FROM outbox WHERE wamid = $1 "
                "ORDER BY id LIMIT 1 FOR UPDATE",
                wamid,
            )
            if row is None:
                return False
            if advances(row["status"], status):
                await conn.execute(
                    "UPDATE outbox SET status = $2, "
                    "error_code = COALESCE($3, error_code), "
                    "error_detail = COALESCE($4, error_detail), updated_at = $5 "
                    "WHERE id = $1",
                    row["id"],
                    status,
                    error_code,
                    error_detail,
                    utcnow(),
                )
            return True

    async def outbox_items(self, wa_id: str | None = None) -> list[OutboxItem]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM outbox WHERE $1::text IS NULL OR wa_id = $1 ORDER BY id",
                wa_id,
            )
        return [_outbox_item(row) for row in rows]


@contextlib.contextmanager
def _translated() -> Any:
    """Turn driver errors into StorageUnavailable or StorageError."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StorageUnavailable(f"PostgreSQL unavailable: {exc}") from exc
    except TimeoutError as exc:
        raise StorageError("PostgreSQL statement timed out") from exc
    except _FAILED as exc:
        raise StorageError(f"PostgreSQL error: {exc}") from exc


async def _unlock(conn: asyncpg.Connection, key: int) -> None:
    # A lost connection has lost its locks with it; closing it makes sure
    # the pool does not hand out a connection in an unknown state.
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
    except (*_UNAVAILABLE, *_FAILED, TimeoutError) as exc:
        log.warning("claim unlock failed, dropping connection: %s", exc)
        conn.terminate()


async def _save_conversation(
    conn: asyncpg.Connection, c: Conversation, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO conversations (wa_id, flow, state, slots, flow_version, "
        "last_inbound_at, deadline, updated_at) "
        "VALUES ($1, $2, $3, $4::json, $5, $6, $7, $8) "
        "ON CONFLICT (wa_id) DO UPDATE SET flow = excluded.flow, "
        "state = excluded.state, slots = excluded.slots, "
        "flow_version = excluded.flow_version, "
        "last_inbound_at = excluded.last_inbound_at, "
        "deadline = excluded.deadline, updated_at = excluded.updated_at",
        c.wa_id,
        c.flow,
        c.state,
        _json(c.slots),
        c.flow_version,
        _utc(c.last_inbound_at),
        _utc(c.deadline),
        now,
    )


async def _insert_outbound(
    conn: asyncpg.Connection,
    replies: Sequence[NewOutbound],
    now: datetime,
    inbox_id: int | None,
) -> list[int]:
    ids = []
    for reply in replies:
        item_id = await conn.fetchval(
            "INSERT INTO outbox (wa_id, phone_number_id, kind, body, status, "
            "next_attempt_at, inbox_id, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4::json, 'queued', $5, $6, $5, $5) RETURNING id",
            reply.wa_id,
            reply.phone_number_id,
            reply.kind,
            _json(reply.body),
            now,
            inbox_id,
        )
        ids.append(item_id)
    return ids


def _event_row(e: NewInboxEvent) -> tuple[str, str, str | None, str | None, str]:
    return (e.key, e.kind, e.wa_id, e.phone_number_id, _json(e.payload))


def _inbox_event(row: asyncpg.Record) -> InboxEvent:
    return InboxEvent(
        id=row["id"],
        key=row["key"],
        kind=row["kind"],
        wa_id=row["wa_id"],
        phone_number_id=row["phone_number_id"],
        payload=json.loads(row["payload"]),
        received_at=row["received_at"],
    )


def _conversation(row: asyncpg.Record) -> Conversation:
    return Conversation(
        wa_id=row["wa_id"],
        flow=row["flow"],
        state=row["state"],
        slots=json.loads(row["slots"]),
        flow_version=row["flow_version"],
        last_inbound_at=row["last_inbound_at"],
        deadline=row["deadline"],
    )


def _outbox_item(row: asyncpg.Record) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        wa_id=row["wa_id"],
        phone_number_id=row["phone_number_id"],
        kind=row["kind"],
        body=json.loads(row["body"]),
        status=row["status"],
        attempts=row["attempts"],
        wamid=row["wamid"],
        created_at=row["created_at"],
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
