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
A pooled connection that died while idle (a server restart nobody saw)
fails on its first statement; that one failure is retried once on a fresh
connection, since nothing of the operation reached the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import asyncpg

from storage import jsontext, rows
from storage.base import (
    EARLIER_UNFINISHED,
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
    Turns,
    utcnow,
)
from storage.crash import crash_point
from storage.dialects import advisory_lock_key
from storage.errors import EventDone, KeyInUse, StorageError, StorageUnavailable
from storage.migrations import check_migrate_mode, pending_of, refuse_pending
from storage.status import advances

log = logging.getLogger("tracbot.storage")

T = TypeVar("T")


# Serialises `open()` of several processes so a migration applies once.
MIGRATION_LOCK = advisory_lock_key("tracbot.migrations")
# Seconds a migration statement (or the wait for another's) may take.
MIGRATION_SECONDS = 3600.0

# Connections of the pool kept for the webhook, the sender and the sweeper,
# whatever the dispatcher's claims hold (see `max_claims`).
RESERVED_CONNECTIONS = 2

# Errors after which the server, not the statement, is the problem.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
# A dead pooled connection says so with one of these on its first use (the
# internal error: the server's goodbye arrived while it was idle).
_DEAD = (*_UNAVAILABLE, asyncpg.InterfaceError, asyncpg.InternalClientError)
_FAILED = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

OUTBOX_INSERT = (
    "INSERT INTO outbox (wa_id, phone_number_id, kind, body, status, "
    "next_attempt_at, inbox_id, created_at, updated_at, fallback) "
    "VALUES ($1, $2, $3, $4::json, 'queued', $5, $6, $5, $5, $7::json) "
    "RETURNING id"
)


class _Retry(Exception):
    """A pooled connection was dead before the operation did anything."""


class PostgresStore(Store):
    """Storage in PostgreSQL; see the module docstring.

    Args:
        url: a libpq-style URL, `postgresql://user:password@host:port/db`.
        pool_min: connections opened by `open()` and kept.
        pool_max: connections at most; each held `claim` uses one.
        acquire_timeout: seconds to wait for a connection, pooled or new.
        statement_timeout: seconds a statement may run.
        migrate: `auto` applies pending migrations on open; `refuse` raises
            StorageError naming them (run `tracbot migrate` first).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        acquire_timeout: float = 5.0,
        statement_timeout: float = 10.0,
        migrate: str = "auto",
    ) -> None:
        self.url = url
        self.pool_min = min(pool_min, pool_max)
        self.pool_max = pool_max
        self.acquire_timeout = acquire_timeout
        self.command_timeout = statement_timeout
        self.migrate = check_migrate_mode(migrate)
        self._pool: asyncpg.Pool | None = None
        # Names of the migrations the last `open()` applied.
        self.applied: list[str] = []

    @property
    def max_claims(self) -> int:
        """Claims held at once: each holds a connection and its step needs
        another, and a few stay free for the webhook and the sender."""
        return max(1, (self.pool_max - RESERVED_CONNECTIONS) // 2)

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
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL: {_reason(exc, self.acquire_timeout)}"
            ) from exc
        except _FAILED as exc:
            raise StorageError(f"cannot open PostgreSQL storage: {exc}") from exc
        except ValueError as exc:
            # asyncpg parses the URL itself: a port of "5439x" was a traceback.
            raise StorageError(f"invalid PostgreSQL URL: {exc}") from exc

        try:
            await self._run(self._migrate, transaction=True)
        except BaseException:
            await self.close()
            raise
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

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        # Waiting for another process's migration, or an index built over a
        # big table, takes longer than a statement of the bot may.
        wait = MIGRATION_SECONDS
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=wait
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
            "PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        done = {row["version"] for row in rows}
        pending = pending_of("postgresql", "postgres", done)
        if pending and self.migrate == "refuse":
            refuse_pending("postgresql", pending)

        for migration in pending:
            for statement in migration.statements():
                await conn.execute(statement, timeout=wait)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                utcnow(),
            )
            log.info("migration applied backend=postgresql version=%s", migration.name)
        self.applied = [m.name for m in pending]

    # Running work

    async def _run(
        self,
        work: Callable[[Any], Awaitable[T]],
        *,
        transaction: bool = False,
    ) -> T:
        """Run `work` on a pooled connection, in a transaction if asked.

        After a restart every idle connection of the pool is dead, so each
        retry drops one; there are at most `pool_max` of them.
        """
        for _ in range(self.pool_max):
            with contextlib.suppress(_Retry):
                return await self._attempt(work, transaction, retry=True)
        return await self._attempt(work, transaction, retry=False)

    async def _attempt(
        self, work: Callable[[Any], Awaitable[T]], transaction: bool, retry: bool
    ) -> T:
        conn = await self._acquire()
        tracked = _Tracked(conn)
        try:
            if transaction:
                async with conn.transaction():
                    return await work(tracked)
            return await work(tracked)
        except TimeoutError as exc:
            # Before _DEAD, which holds OSError and so TimeoutError: a server
            # that does not answer is not a dead connection to retry on the
            # next one (each waited its timeout again, 35-65 s a webhook).
            raise StorageUnavailable(
                f"no answer from PostgreSQL within {self.command_timeout:g}s"
            ) from exc
        except _DEAD as exc:
            # Nothing succeeded on this connection: it was dead in the pool.
            if retry and tracked.calls == 0 and not _is_statement_error(exc):
                log.info("dead pooled connection dropped, retrying: %s", exc)
                _terminate(conn)
                raise _Retry from exc
            raise _translate(exc) from exc
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from exc
        finally:
            await self._release(conn)

    async def _acquire(self) -> asyncpg.Connection:
        if self._pool is None:
            raise StorageError("the postgresql store is not open")
        try:
            return await self._pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"no database connection within {self.acquire_timeout}s "
                f"(pool_max={self.pool_max})"
            ) from exc
        except (*_UNAVAILABLE, *_FAILED) as exc:
            # Also a login refused while the pool opens a connection (a
            # password rotated, the database dropped): not the statement's
            # fault, and an untranslated one ended the dispatcher for good.
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL: {_reason(exc, self.acquire_timeout)}"
            ) from exc

    async def _release(self, conn: asyncpg.Connection) -> None:
        # Release resets the connection, which fails on a dead one; that
        # must not hide the error that killed it.
        if self._pool is None:
            _terminate(conn)
            return
        try:
            await self._pool.release(conn)
        except (*_UNAVAILABLE, *_FAILED, TimeoutError) as exc:
            log.warning("connection dropped on release: %s", exc)

    @contextlib.asynccontextmanager
    async def claim(self, wa_id: str) -> AsyncIterator[bool]:
        """Hold this phone's advisory lock; yield False if another holds it.

        The lock lives on a connection of its own, held for the whole block:
        a session lock would be released by the pool's reset otherwise.
        """
        key = advisory_lock_key(f"tracbot.claim:{wa_id}")
        conn = await self._lock(key, retry=True)
        if conn is None:
            yield False
            return
        try:
            yield True
        finally:
            await _unlock(conn, key)
            await self._release(conn)

    async def _lock(self, key: int, retry: bool) -> asyncpg.Connection | None:
        conn = await self._acquire()
        try:
            held = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except _DEAD as exc:
            _terminate(conn)
            await self._release(conn)
            if retry:
                return await self._lock(key, retry=False)
            raise _translate(exc) from exc
        except BaseException:
            await self._release(conn)
            raise
        if not held:
            await self._release(conn)
            return None
        return conn

    # Inbox

    async def add_events(self, events: Sequence[NewInboxEvent]) -> int:
        if not events:
            return 0
        columns = list(zip(*(_event_row(e) for e in events), strict=True))

        # One statement for the whole batch; ORDINALITY keeps the ids in the
        # order Meta sent the events.
        async def work(conn: asyncpg.Connection) -> int:
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

        return await self._run(work)

    async def pending_phones(self, limit: int = 100) -> list[str]:
        rows = await self._fetch(
            "SELECT COALESCE(wa_id, '') AS phone FROM inbox "
            "WHERE done_at IS NULL GROUP BY 1 ORDER BY MIN(id) LIMIT $1",
            limit,
        )
        return [row["phone"] for row in rows]

    async def next_event(self, wa_id: str) -> InboxEvent | None:
        rows = await self._fetch(
            "SELECT * FROM inbox WHERE done_at IS NULL "
            "AND COALESCE(wa_id, '') = $1 ORDER BY id LIMIT 1",
            wa_id,
        )
        return _inbox_event(rows[0]) if rows else None

    async def next_turns(self, wa_id: str, limit: int) -> Turns:
        # The events and the conversation on one pooled connection.
        async def work(conn: asyncpg.Connection) -> Turns:
            rows = await conn.fetch(
                "SELECT * FROM inbox WHERE done_at IS NULL "
                "AND COALESCE(wa_id, '') = $1 ORDER BY id LIMIT $2",
                wa_id,
                limit,
            )
            events = [_inbox_event(row) for row in rows]
            conversation = None
            if events and wa_id:
                found = await conn.fetch(
                    "SELECT * FROM conversations WHERE wa_id = $1", wa_id
                )
                conversation = _conversation(found[0]) if found else None
                conversation = conversation or Conversation(wa_id=wa_id)
            return Turns(events, conversation, drained=len(events) < limit)

        return await self._run(work)

    async def pending_count(self) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL")
        return rows[0][0]

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(sql, *args)

        return await self._run(work)

    async def _execute(self, sql: str, *args: Any) -> str:
        async def work(conn: asyncpg.Connection) -> str:
            return await conn.execute(sql, *args)

        return await self._run(work)

    # Conversations

    async def load_conversation(self, wa_id: str) -> Conversation | None:
        rows = await self._fetch("SELECT * FROM conversations WHERE wa_id = $1", wa_id)
        return _conversation(rows[0]) if rows else None

    async def expired_conversations(
        self, now: datetime, limit: int = 100
    ) -> list[Conversation]:
        rows = await self._fetch(
            "SELECT * FROM conversations WHERE deadline <= $1 "
            "ORDER BY deadline LIMIT $2",
            _utc(now),
            limit,
        )
        return [_conversation(row) for row in rows]

    async def commit_step(
        self,
        event_id: int,
        conversation: Conversation | None,
        replies: Sequence[NewOutbound],
    ) -> list[int]:
        now = utcnow()

        async def work(conn: asyncpg.Connection) -> list[int]:
            # The done mark comes first: its row lock makes a second process
            # that replays the same event wait here, then find it done and
            # roll back instead of queueing the replies twice.
            marked = await conn.execute(
                "UPDATE inbox SET done_at = $2 WHERE id = $1 AND done_at IS NULL",
                event_id,
                now,
            )
            if marked != "UPDATE 1":
                raise EventDone(f"inbox event {event_id} is not pending")

            if conversation is not None:
                await _save_conversation(conn, conversation, now)
            ids = await _insert_outbound(conn, replies, now, event_id)
            crash_point("in_commit")
            return ids

        return await self._run(work, transaction=True)

    # Outbox

    async def enqueue(
        self, replies: Sequence[NewOutbound], keyed: Keyed | None = None
    ) -> list[int]:
        now = utcnow()

        async def work(conn: asyncpg.Connection) -> list[int]:
            ids = await _insert_outbound(conn, replies, now, None)
            if keyed is not None:
                kept = await conn.fetchval(
                    "INSERT INTO api_requests (idem_key, fingerprint, response, "
                    "created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING "
                    "RETURNING idem_key",
                    keyed.key,
                    keyed.fingerprint,
                    keyed.answer(ids),
                    now,
                )
                if kept is None:
                    # Raised inside the transaction: its messages go too.
                    raise KeyInUse(keyed.key)
            return ids

        return await self._run(work, transaction=True)

    async def kept_answer(self, key: str) -> KeptAnswer | None:
        rows = await self._fetch(
            "SELECT fingerprint, response FROM api_requests WHERE idem_key = $1", key
        )
        return KeptAnswer(rows[0][0], rows[0][1]) if rows else None

    async def due_outbox(self, limit: int = 50) -> list[OutboxItem]:
        now = utcnow()

        # SKIP LOCKED lets concurrent senders each take other rows instead
        # of waiting on, and then taking again, the rows another one took.
        # Per-phone order: EARLIER_UNFINISHED (storage.base); a row another
        # sender just took is still unfinished to this snapshot.
        rows = await self._fetch(
            "WITH due AS (SELECT id FROM outbox o "
            "WHERE ((status = 'queued' AND next_attempt_at <= $1) "
            "OR (status = 'sending' AND updated_at < $2)) "
            f"AND {EARLIER_UNFINISHED} "
            "ORDER BY (inbox_id IS NULL), id LIMIT $3 FOR UPDATE SKIP LOCKED) "
            "UPDATE outbox o SET status = 'sending', "
            "attempts = o.attempts + 1, updated_at = $1 "
            "FROM due WHERE o.id = due.id RETURNING o.*",
            now,
            now - SENDING_LEASE,
            limit,
        )
        return sorted((_outbox_item(row) for row in rows), key=lambda i: i.id)

    async def mark_sent(self, item_id: int, wamid: str | None, status: str) -> None:
        await self._execute(
            "UPDATE outbox SET status = $2, wamid = COALESCE($3, wamid), "
            f"updated_at = $4 WHERE id = $1 AND {NOT_ADOPTED}",
            item_id,
            status,
            wamid,
            utcnow(),
        )

    async def mark_retry(
        self, item_id: int, next_attempt_at: datetime, error: str
    ) -> None:
        await self._execute(
            "UPDATE outbox SET status = 'queued', next_attempt_at = $2, "
            f"error_detail = $3, updated_at = $4 WHERE id = $1 AND {NOT_ADOPTED}",
            item_id,
            _utc(next_attempt_at),
            error,
            utcnow(),
        )

    async def give_back(
        self,
        item_id: int,
        attempt: int,
        error: str,
        retry_at: datetime | None = None,
    ) -> None:
        now = utcnow()
        await self._execute(
            "UPDATE outbox SET status = 'queued', attempts = attempts - 1, "
            "next_attempt_at = $5, error_detail = $3, updated_at = $4 "
            "WHERE id = $1 AND status = 'sending' AND attempts = $2",
            item_id,
            attempt,
            error,
            now,
            retry_at or now,
        )

    async def renew_lease(self, item_id: int, attempt: int) -> bool:
        done = await self._execute(
            "UPDATE outbox SET updated_at = $3 "
            "WHERE id = $1 AND status = 'sending' AND attempts = $2",
            item_id,
            attempt,
            utcnow(),
        )
        return done == "UPDATE 1"

    async def mark_failed(self, item_id: int, code: int | None, detail: str) -> None:
        await self._execute(
            "UPDATE outbox SET status = 'failed', "
            "error_code = COALESCE($2, error_code), "
            "error_detail = COALESCE($3, error_detail), updated_at = $4 "
            f"WHERE id = $1 AND {NOT_ADOPTED}",
            item_id,
            code,
            detail,
            utcnow(),
        )

    async def adopt_status(
        self,
        item_id: int,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        # ADOPT_STATUS (storage.base), in asyncpg's markers.
        done = await self._execute(
            "UPDATE outbox SET wamid = $1, status = $2, "
            "error_code = COALESCE($3, error_code), "
            "error_detail = COALESCE($4, error_detail), updated_at = $5 "
            f"WHERE id = $6 AND {NOT_ADOPTED} AND status IN ('queued', 'sending')",
            wamid,
            status,
            error_code,
            error_detail,
            utcnow(),
            item_id,
        )
        return done == "UPDATE 1"

    async def apply_status(
        self,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        # The row lock orders two webhooks of one message, so that the
        # later-ranked status wins whichever commits first.
        async def work(conn: asyncpg.Connection) -> bool:
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

        return await self._run(work, transaction=True)

    async def _prune_batch(
        self, table: str, key: str, condition: str, column: str, before: datetime
    ) -> int:
        select = (
            f"SELECT {key} FROM {table} WHERE {condition} AND {column} < $1 LIMIT $2"
        )

        async def work(conn: asyncpg.Connection) -> int:
            keys = [
                row[0] for row in await conn.fetch(select, _utc(before), PRUNE_BATCH)
            ]
            if table == "outbox":
                await conn.execute(
                    "DELETE FROM attempts WHERE outbox_id = ANY($1)", keys
                )
            await conn.execute(f"DELETE FROM {table} WHERE {key} = ANY($1)", keys)
            return len(keys)

        return await self._run(work, transaction=True)

    async def outbox_items(self, wa_id: str | None = None) -> list[OutboxItem]:
        rows = await self._fetch(
            "SELECT * FROM outbox WHERE $1::text IS NULL OR wa_id = $1 ORDER BY id",
            wa_id,
        )
        return [_outbox_item(row) for row in rows]

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
        await self._execute(
            "INSERT INTO attempts (outbox_id, attempt, outcome, error_code, "
            "detail, ms, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            item_id,
            attempt,
            outcome,
            error_code,
            detail,
            ms,
            utcnow(),
        )

    async def attempts_of(self, item_id: int) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT attempt, outcome, error_code, detail, ms, at FROM attempts "
            "WHERE outbox_id = $1 ORDER BY id",
            item_id,
        )
        return [dict(row) for row in rows]

    async def last_inbound(self, wa_ids: Sequence[str]) -> dict[str, datetime]:
        if not wa_ids:
            return {}
        rows = await self._fetch(
            "SELECT wa_id, MAX(at) AS at FROM ("
            "SELECT wa_id, last_inbound_at AS at FROM conversations "
            "WHERE wa_id = ANY($1::text[]) AND last_inbound_at IS NOT NULL "
            "UNION ALL SELECT wa_id, received_at FROM inbox "
            "WHERE wa_id = ANY($1::text[]) AND done_at IS NULL AND kind = 'message'"
            ") AS t GROUP BY wa_id",
            list(wa_ids),
        )
        return {row["wa_id"]: row["at"] for row in rows}

    async def outbox_by_wamid(self, wamid: str) -> OutboxItem | None:
        rows = await self._fetch(
            "SELECT * FROM outbox WHERE wamid = $1 ORDER BY id LIMIT 1", wamid
        )
        return _outbox_item(rows[0]) if rows else None

    async def outbox_with_replacement(self, item_id: int) -> list[OutboxItem]:
        rows = await self._fetch(
            "SELECT * FROM outbox WHERE id = $1 OR fallback_of = $1 ORDER BY id",
            item_id,
        )
        return [_outbox_item(row) for row in rows]

    async def add_fallback(self, item_id: int, *, replace: bool) -> OutboxItem | None:
        now = utcnow()

        # The row lock makes a second caller wait, then find the fallback
        # already there; the unique index on fallback_of backs it up.
        async def work(conn: asyncpg.Connection) -> OutboxItem | None:
            row = await conn.fetchrow(
                "SELECT * FROM outbox o WHERE id = $1 AND fallback IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM outbox WHERE fallback_of = o.id) "
                "FOR UPDATE",
                item_id,
            )
            if row is None:
                return None
            if replace:
                await conn.execute(
                    "UPDATE outbox SET status = 'replaced', updated_at = $2 "
                    "WHERE id = $1",
                    item_id,
                    now,
                )
            status, attempts = ("sending", 1) if replace else ("queued", 0)
            added = await conn.fetchrow(
                "INSERT INTO outbox (wa_id, phone_number_id, kind, body, status, "
                "attempts, next_attempt_at, inbox_id, fallback_of, created_at, "
                "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $7, $7) "
                "RETURNING *",
                row["wa_id"],
                row["phone_number_id"],
                row["kind"],
                row["fallback"],
                status,
                attempts,
                now,
                row["inbox_id"],
                item_id,
            )
            return _outbox_item(added)

        return await self._run(work, transaction=True)

    async def history(
        self, wa_id: str, limit: int, offset: int
    ) -> tuple[int, list[HistoryEntry]]:
        # Read marks are requests, not messages; inbound statuses are about
        # our own messages, already in the outbox rows.
        union = (
            "SELECT 'out' AS direction, id, body::text AS body, status, wamid, "
            "error_code, error_detail, created_at AS at, fallback_of FROM outbox "
            "WHERE wa_id = $1 AND kind = 'message' UNION ALL "
            "SELECT 'in', id, payload::text, 'received', key, NULL, NULL, "
            "received_at, NULL FROM inbox WHERE wa_id = $1 AND kind = 'message'"
        )

        async def work(conn: asyncpg.Connection) -> tuple[int, list[HistoryEntry]]:
            total = await conn.fetchval(f"SELECT COUNT(*) FROM ({union}) h", wa_id)
            rows = await conn.fetch(
                f"SELECT * FROM ({union}) h ORDER BY at DESC, direction, id DESC "
                "LIMIT $2 OFFSET $3",
                wa_id,
                limit,
                offset,
            )
            return total, [_history_entry(row) for row in rows]

        return await self._run(work, transaction=True)

    async def delivery_counts(self, start: datetime, end: datetime) -> DeliveryCounts:
        rows = await self._fetch(
            "SELECT status, wamid IS NOT NULL AS accepted, COUNT(*) AS n "
            "FROM outbox WHERE kind = 'message' AND created_at >= $1 "
            "AND created_at < $2 GROUP BY 1, 2",
            _utc(start),
            _utc(end),
        )
        return DeliveryCounts.tally(
            (row["status"], row["accepted"], row["n"]) for row in rows
        )

    async def queue_stats(self) -> QueueStats:
        async def work(conn: asyncpg.Connection) -> QueueStats:
            pending, oldest = await conn.fetchrow(
                "SELECT COUNT(*), MIN(received_at) FROM inbox WHERE done_at IS NULL"
            )
            queued = await conn.fetchval(
                "SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')"
            )
            return QueueStats(pending, oldest, queued)

        return await self._run(work)

    # Account links

    async def get_link(self, wa_id: str) -> Link | None:
        rows = await self._fetch("SELECT * FROM links WHERE wa_id = $1", wa_id)
        return _link(rows[0]) if rows else None

    async def link_of_driver(self, driver_id: str) -> Link | None:
        rows = await self._fetch("SELECT * FROM links WHERE driver_id = $1", driver_id)
        return _link(rows[0]) if rows else None

    async def save_link(self, link: Link) -> None:
        await self._execute(
            "INSERT INTO links (wa_id, driver_id, rut, name, role, method, "
            "linked_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (wa_id) DO UPDATE SET driver_id = excluded.driver_id, "
            "rut = excluded.rut, name = excluded.name, role = excluded.role, "
            "method = excluded.method, linked_at = excluded.linked_at",
            link.wa_id,
            link.driver_id,
            link.rut,
            link.name,
            link.role,
            link.method,
            _utc(link.linked_at),
        )

    async def remove_link(self, wa_id: str) -> bool:
        done = await self._execute("DELETE FROM links WHERE wa_id = $1", wa_id)
        return done != "DELETE 0"

    async def move_link(self, old_wa_id: str, new_wa_id: str) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            # The new number may have been linked (by phone) meanwhile; the
            # account that moved there is the one that counts.
            await conn.execute("DELETE FROM links WHERE wa_id = $1", new_wa_id)
            moved = await conn.execute(
                "UPDATE links SET wa_id = $2 WHERE wa_id = $1", old_wa_id, new_wa_id
            )
            return moved != "UPDATE 0"

        return await self._run(work, transaction=True)

    async def move_conversation(self, old_wa_id: str, new_wa_id: str) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            # A conversation the new number started itself stays; an idle
            # row of it (its window) gives way to the one that moves.
            busy = await conn.fetchval(
                "SELECT 1 FROM conversations WHERE wa_id = $1 AND flow IS NOT NULL "
                "FOR UPDATE",
                new_wa_id,
            )
            if busy is not None:
                return False
            await conn.execute("DELETE FROM conversations WHERE wa_id = $1", new_wa_id)
            moved = await conn.execute(
                "UPDATE conversations SET wa_id = $2 WHERE wa_id = $1",
                old_wa_id,
                new_wa_id,
            )
            return moved != "UPDATE 0"

        return await self._run(work, transaction=True)

    async def add_link_attempt(self, wa_id: str, rut: str, outcome: str) -> None:
        await self._execute(
            "INSERT INTO link_attempts (wa_id, rut, outcome, at) "
            "VALUES ($1, $2, $3, $4)",
            wa_id,
            rut,
            outcome,
            utcnow(),
        )

    async def failed_link_attempts(self, wa_id: str, since: datetime) -> int:
        rows = await self._fetch(
            "SELECT COUNT(*) FROM link_attempts "
            "WHERE wa_id = $1 AND at >= $2 AND outcome NOT IN ('ok', 'denied')",
            wa_id,
            _utc(since),
        )
        return rows[0][0]

    async def inbound_count(self, start: datetime, end: datetime) -> int:
        rows = await self._fetch(
            "SELECT COUNT(*) FROM inbox WHERE kind = 'message' "
            "AND received_at >= $1 AND received_at < $2",
            _utc(start),
            _utc(end),
        )
        return rows[0][0]


class _Tracked:
    """A connection that counts the calls that succeeded (see `_Retry`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)
        if name not in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            self.calls += 1
            return result

        return call


def _is_statement_error(exc: BaseException) -> bool:
    # An InterfaceError may also be our own misuse (a bad argument type),
    # which a retry would only repeat; only a closed connection is retried.
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" not in str(exc).lower()
    return False


def _reason(exc: BaseException, seconds: float) -> str:
    # A timeout says nothing of itself ("cannot connect to PostgreSQL: ").
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {seconds:g}s"
    return str(exc) or type(exc).__name__


def _translate(exc: BaseException) -> StorageError:
    if isinstance(exc, _UNAVAILABLE):
        return StorageUnavailable(f"PostgreSQL unavailable: {exc}")
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc).lower():
        return StorageUnavailable(f"PostgreSQL unavailable: {exc}")
    if isinstance(exc, asyncpg.InternalClientError):
        return StorageUnavailable(f"PostgreSQL connection broken: {exc}")
    return StorageError(f"PostgreSQL error: {exc}")


async def _unlock(conn: asyncpg.Connection, key: int) -> None:
    # A lost connection has lost its locks with it; closing it makes sure
    # the pool does not hand out a connection in an unknown state.
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
    except (*_UNAVAILABLE, *_FAILED, TimeoutError) as exc:
        log.warning("claim unlock failed, dropping connection: %s", exc)
        _terminate(conn)


def _terminate(conn: asyncpg.Connection) -> None:
    # A connection the server closed may already be detached from the pool.
    with contextlib.suppress(asyncpg.InterfaceError):
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
            OUTBOX_INSERT,
            reply.wa_id,
            reply.phone_number_id,
            reply.kind,
            _json(reply.body),
            now,
            inbox_id,
            None if reply.fallback is None else _json(reply.fallback),
        )
        ids.append(item_id)
    return ids


def _event_row(e: NewInboxEvent) -> tuple[str, str, str | None, str | None, str]:
    return (e.key, e.kind, e.wa_id, e.phone_number_id, _json(e.payload))


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


_json = jsontext.dumps


# Rows into dataclasses (storage/rows.py); asyncpg returns aware datetimes.
_inbox_event = partial(rows.inbox_event, when=rows.as_is)
_conversation = partial(rows.conversation, when=rows.as_is)
_outbox_item = partial(rows.outbox_item, when=rows.as_is)
_history_entry = partial(rows.history_entry, when=rows.as_is)
_link = partial(rows.link, when=rows.as_is)
