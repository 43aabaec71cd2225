"""The embedded SQLite backend: `sqlite:///path/to/file.db`.

Every store method runs as one synchronous function, so a method is atomic
and no two can interleave. The short ones (the whole path of a message) run
on the event loop (storage/sqlite_batch.py says why not on a thread):
indexed reads at once, writes queued together in one transaction (group
commit), each caller answered after that COMMIT, and a webhook's insert
at once in a commit of its own. Reads that may scan many rows (history, delivery
counts, queue stats) run on a reader thread with a connection of its own, so
that they never hold the loop; WAL lets them read while the loop writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

try:
    import fcntl
except ImportError:  # Windows: no second process is detected
    fcntl = None  # type: ignore[assignment]

from storage import jsontext, rows
from storage.base import (
    ADOPT_STATUS,
    EARLIER_UNFINISHED,
    NOT_ADOPTED,
    PRUNE_BATCH,
    RESEND_WAIT,
    SENDING_LEASE,
    Conversation,
    DeliveryCounts,
    HistoryEntry,
    InboxEvent,
    KeptAnswer,
    Keyed,
    NewInboxEvent,
    NewOutbound,
    OutboxItem,
    QueueStats,
    Store,
    Turns,
    utcnow,
)
from storage.errors import EventDone, KeyInUse, StorageError, StorageUnavailable
from storage.migrations import check_migrate_mode, pending_of, refuse_pending
from storage.sqlite_batch import Connection, GroupCommit, share_turns, transaction
from storage.sqlite_checkpoint import SAFETY_NET_PAGES, Checkpointer
from storage.sqlite_links import LinksMixin
from storage.status import advances

log = logging.getLogger("tracbot.storage")

T = TypeVar("T")

# Milliseconds a call on the event loop waits for another process's lock.
LOOP_BUSY_MS = 50
# Opening and migrating may wait this long for another process's lock.
OPEN_BUSY_MS = 5000


# OperationalError messages that mean "not now" rather than "never".
UNAVAILABLE_MESSAGES = ("locked", "busy", "unable to open", "disk", "readonly")


# The last time formatted and its text: a store call stamps its rows with
# one `now`, up to seven times for a message's step. (One tuple, so that the
# two threads of `server.processing: thread` never see half of it.)
_last_ts: tuple[datetime | None, str | None] = (None, None)


def _ts(value: datetime | None) -> str | None:
    global _last_ts
    if value is None:
        return None
    last = _last_ts
    if value is last[0]:
        return last[1]
    # Our own times are UTC already (utcnow); only others need converting.
    text = (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat()
    _last_ts = (value, text)
    return text


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def path_of(url: str) -> str:
    """The file of a `sqlite://` URL (`:memory:` for none)."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not a sqlite url: {url!r}")
    # sqlite:///var/x.db is relative, sqlite:////srv/x.db absolute.
    path = url.removeprefix("sqlite://").removeprefix("/")
    return path or ":memory:"


class SqliteStore(LinksMixin, Store):
    """Storage in one SQLite file; see the module docstring."""

    def __init__(
        self, url: str, *, migrate: str = "auto", companion: bool = False
    ) -> None:
        self.url = url
        # A second store of this process on the file (the worker thread's,
        # bot/worker.py): the first one owns the file and checkpoints it.
        self.companion = companion
        self.migrate = check_migrate_mode(migrate)
        # Names of the migrations the last `open()` applied.
        self.applied: list[str] = []
        self.path = path_of(url)
        self.shared = self.path != ":memory:"
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._batches: GroupCommit | None = None
        # The reader thread's connection (see the module docstring).
        self._reader: sqlite3.Connection | None = None
        # Whether a webhook insert committed at once in this turn of the loop.
        self._inserted_this_turn = False
        # Links read with a phone's next events (storage/sqlite_links.py).
        self._links_read = {}
        # The lock that says this process is the file's only tracbot.
        self._owner: IO[bytes] | None = None
        self._checkpointer: Checkpointer | None = None

    async def open(self) -> None:
        if self.path != ":memory:":
            folder = Path(self.path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                # A file where the folder goes, a folder it may not write:
                # a traceback ending in "[Errno 17] File exists" was all.
                raise StorageError(
                    f"cannot make the database's folder {folder}: {exc.strerror or exc}"
                ) from None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tracbot-sqlite")
        self._batches = GroupCommit(lambda: self.db)
        try:
            await self._run_alone(self._connect)
        except StorageUnavailable as exc:
            await self.close()
            if "locked" not in str(exc):
                raise
            raise StorageUnavailable(
                f"SQLite file {self.path} stayed locked by another process for "
                f"{OPEN_BUSY_MS // 1000} s (a sqlite3 session left in a "
                "transaction, a migration run by hand?): end it, then start "
                "again"
            ) from exc
        except BaseException:
            await self.close()
            raise
        if self.path != ":memory:" and not self.companion:
            claim = self._claim_later if self._owner is None else None
            self._checkpointer = Checkpointer(self.path, on_second=claim).start()
        log.info("storage open backend=sqlite path=%s", self.path)

    async def close(self) -> None:
        if self._executor is None or self._batches is None:
            return
        await self._batches.idle()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        await self._run_alone(self._close_reader)
        await self._run_alone(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = self._batches = None

    def problem(self) -> str | None:
        checkpointer = self._checkpointer
        return None if checkpointer is None else checkpointer.problem

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call in the next group commit (writes: `_transaction`)."""
        batches = self._writable()
        try:
            return await batches.run(fn, *args)
        except sqlite3.Error as exc:
            raise _translated(exc) from exc

    def _writable(self) -> GroupCommit:
        """The group commit, if a write may go to the file now.

        Raises:
            StorageUnavailable: the file was deleted or replaced under us;
                what is written now is lost at the next start. A webhook
                answered 503 is sent again by Meta, an API call retried by
                the backend; a 200 or a 202 would have lost it.
        """
        if self._batches is None:
            raise StorageError("the sqlite store is not open")
        gone = self._checkpointer is not None and self._checkpointer.problem
        if gone:
            raise StorageUnavailable(gone)
        return self._batches

    def _peek(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read at once, outside any transaction.

        An indexed read costs less than queueing it: no future, no batch,
        no write lock. Nothing is ever half written between two loop
        callbacks, so it sees every committed call and nothing else.
        """
        if self._batches is None:
            raise StorageError("the sqlite store is not open")
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise _translated(exc) from exc

    async def _run_alone(self, fn: Callable[..., T], *args: Any) -> T:
        """Run outside any batch: what may not run inside a transaction."""
        if self._executor is None:
            raise StorageError("the sqlite store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise _translated(exc) from exc

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read that may scan on the reader thread: `fn(db, *args)`."""
        if self.path == ":memory:":
            # A memory database is private to its connection.
            return await self._run(fn, self.db, *args)
        return await self._run_alone(self._on_reader, fn, *args)

    def _on_reader(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, isolation_level=None)
            self._reader.row_factory = sqlite3.Row
            self._reader.execute("PRAGMA query_only=1")
            self._reader.execute("PRAGMA busy_timeout=5000")
        return fn(self._reader, *args)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _connect(self) -> None:
        _create_private(self.path)
        db = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            factory=Connection,
        )
        if self.shared:
            share_turns(db, self.path)
        db.row_factory = sqlite3.Row

        # WAL keeps readers and the writer apart; NORMAL sync survives a
        # crash of the process, which is the failure we guard against.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Opening and migrating may wait for another process's lock.
        db.execute(f"PRAGMA busy_timeout={OPEN_BUSY_MS}")
        # Checkpoints run on a thread of their own (sqlite_checkpoint.py).
        db.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")
        self._db = db
        self._migrate(db)
        if not self.companion:
            # A companion's first store owns the file and released its sends.
            self._claim(db)
        # From here this connection works on the event loop: a file locked
        # by another process (a `sqlite3` session, a migration) must not
        # hold the loop. Past this wait a call fails as unavailable: a
        # webhook gets 503 (Meta retries), the workers try again later.
        db.execute(f"PRAGMA busy_timeout={LOOP_BUSY_MS}")

    def _claim(self, db: sqlite3.Connection) -> None:
        self._owner = _own(self.path)
        if self._owner is not None:
            self._release_sends(db)
        else:
            log.warning(
                "another tracbot process has %s open: the items it is sending "
                "are left to it",
                self.path,
            )

    def _claim_later(self) -> bool:
        """Own the file once the process that had it lets go (on the
        checkpointer's thread, about once a second); True once owned.

        A `tracbot serve` started while a `tracbot chat` had the file never
        took it back, and every chat after took it for itself and shared
        the server's queues instead of working on a copy.
        """
        try:
            owner = _own(self.path)
        except OSError:
            return False  # the folder changed under us: try again later
        if owner is None:
            return False
        self._owner = owner
        log.info("storage: this process owns %s now", self.path)
        return True

    def _release_sends(self, db: sqlite3.Connection) -> None:
        # No other process has the file open (`_own`), so nothing is really
        # being sent: items left `sending` by a killed process go back to
        # the queue, not after the lease but after RESEND_WAIT: those it had
        # on the wire may be Meta's already, and their statuses, which find
        # them by their callback data (statuses.py), stop the resend.
        resend_at = utcnow() + RESEND_WAIT
        with _transaction(db):
            count = db.execute(
                "UPDATE outbox SET status = 'queued', next_attempt_at = ? "
                "WHERE status = 'sending'",
                (_ts(resend_at),),
            ).rowcount
        if count:
            log.warning(
                "outbox items requeued after an unclean stop count=%d: sent at "
                "%s unless Meta's statuses say it has them",
                count,
                resend_at.strftime("%H:%M:%S UTC"),
            )

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._owner is not None:
            self._owner.close()  # releases the lock
            self._owner = None

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT)"
        )
        done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        pending = pending_of("sqlite", "sqlite", done)
        if pending and self.migrate == "refuse":
            refuse_pending("sqlite", pending)
        self.applied = [m.name for m in pending]
        for migration in pending:
            with _transaction(db):
                for statement in migration.statements():
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    (migration.version, migration.name, _ts(utcnow())),
                )
            log.info("migration applied backend=sqlite version=%s", migration.name)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store used before open()"
        return self._db

    # Inbox

    async def add_events(self, events: Sequence[NewInboxEvent]) -> int:
        # A webhook waits for this before its 200. The first of a turn of
        # the loop commits at once, so that the 200 leaves in the turn that
        # read the request; more in the same turn (a burst) join the next
        # batch, where they share one COMMIT instead of paying one each.
        self._writable()
        if self._inserted_this_turn:
            return await self._run(self._add_events, events)
        self._inserted_this_turn = True
        asyncio.get_running_loop().call_soon(self._loop_turned)
        try:
            return self._add_events(events)
        except sqlite3.Error as exc:
            raise _translated(exc) from exc

    def _loop_turned(self) -> None:
        self._inserted_this_turn = False

    def _add_events(self, events: Sequence[NewInboxEvent]) -> int:
        now = _ts(utcnow())
        rows = [
            (e.key, e.kind, e.wa_id, e.phone_number_id, _json(e.payload), now)
            for e in events
        ]
        with _transaction(self.db):
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO inbox "
                "(key, kind, wa_id, phone_number_id, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self.db.total_changes - before

    async def pending_phones(self, limit: int = 100) -> list[str]:
        return self._peek(self._pending_phones, limit)

    def _pending_phones(self, limit: int) -> list[str]:
        # Pending events oldest first, read only until `limit` phones are
        # found: a GROUP BY would read and sort the whole backlog each time.
        rows = self.db.execute(
            "SELECT COALESCE(wa_id, '') FROM inbox INDEXED BY inbox_queue "
            "WHERE done_at IS NULL ORDER BY id"
        )
        phones: dict[str, None] = {}
        for (phone,) in rows:
            if len(phones) >= limit:
                break
            phones[phone] = None
        return list(phones)

    async def next_event(self, wa_id: str) -> InboxEvent | None:
        return self._peek(self._next_event, wa_id)

    def _next_event(self, wa_id: str) -> InboxEvent | None:
        found = self._next_events(wa_id, 1)
        return found[0] if found else None

    def _next_events(self, wa_id: str, limit: int) -> list[InboxEvent]:
        # `wa_id = ?`, not COALESCE(wa_id, ''): that would scan the whole
        # inbox, done events included, instead of the pending index.
        match = "wa_id = ?" if wa_id else "(wa_id IS NULL OR wa_id = ?)"
        rows = self.db.execute(
            f"SELECT * FROM inbox WHERE done_at IS NULL AND {match} "
            "ORDER BY id LIMIT ?",
            (wa_id, limit),
        )
        return [_inbox_event(row) for row in rows]

    async def next_turn(
        self, wa_id: str
    ) -> tuple[InboxEvent | None, Conversation | None]:
        return self._peek(self._next_turn, wa_id)

    def _next_turn(self, wa_id: str) -> tuple[InboxEvent | None, Conversation | None]:
        event = self._next_event(wa_id)
        if event is None or not wa_id:
            return event, None
        return event, self._load_conversation(wa_id) or Conversation(wa_id=wa_id)

    async def next_turns(self, wa_id: str, limit: int) -> Turns:
        return self._peek(self._next_turns, wa_id, limit)

    def _next_turns(self, wa_id: str, limit: int) -> Turns:
        events = self._next_events(wa_id, limit)
        conversation = None
        if events and wa_id:
            conversation = self._load_conversation(wa_id) or Conversation(wa_id)
            # Each message asks who is writing (get_link); statuses, three a
            # reply, ask nothing.
            if any(event.kind == "message" for event in events):
                self._read_link(wa_id)
        return Turns(events, conversation, drained=len(events) < limit)

    async def pending_count(self) -> int:
        return await self._read(self._pending_count)

    def _pending_count(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL")
        return row.fetchone()[0]

    # Conversations

    async def load_conversation(self, wa_id: str) -> Conversation | None:
        return self._peek(self._load_conversation, wa_id)

    def _load_conversation(self, wa_id: str) -> Conversation | None:
        row = self.db.execute(
            "SELECT * FROM conversations WHERE wa_id = ?", (wa_id,)
        ).fetchone()
        if row is None:
            return None
        return _conversation(row)

    async def expired_conversations(
        self, now: datetime, limit: int = 100
    ) -> list[Conversation]:
        return self._peek(self._expired_conversations, now, limit)

    def _expired_conversations(self, now: datetime, limit: int) -> list[Conversation]:
        # ISO-8601 UTC text sorts like the times it holds.
        rows = self.db.execute(
            "SELECT wa_id FROM conversations WHERE deadline IS NOT NULL "
            "AND deadline <= ? ORDER BY deadline LIMIT ?",
            (_ts(now), limit),
        ).fetchall()
        found = (self._load_conversation(row["wa_id"]) for row in rows)
        return [c for c in found if c is not None]

    async def commit_step(
        self,
        event_id: int,
        conversation: Conversation | None,
        replies: Sequence[NewOutbound],
    ) -> list[int]:
        return await self._run(self._commit_step, event_id, conversation, replies)

    def _commit_step(
        self,
        event_id: int,
        conversation: Conversation | None,
        replies: Sequence[NewOutbound],
    ) -> list[int]:
        now = utcnow()
        with _transaction(self.db):
            # A replayed event must not queue its replies a second time.
            marked = self.db.execute(
                "UPDATE inbox SET done_at = ? WHERE id = ? AND done_at IS NULL",
                (_ts(now), event_id),
            )
            if marked.rowcount != 1:
                raise EventDone(f"inbox event {event_id} is not pending")
            if conversation is not None:
                self._save_conversation(conversation, now)
            return self._insert_outbound(replies, now, event_id)

    def _save_conversation(self, c: Conversation, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO conversations (wa_id, flow, state, slots, flow_version, "
            "last_inbound_at, deadline, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (wa_id) DO UPDATE SET flow = excluded.flow, "
            "state = excluded.state, slots = excluded.slots, "
            "flow_version = excluded.flow_version, "
            "last_inbound_at = excluded.last_inbound_at, "
            "deadline = excluded.deadline, updated_at = excluded.updated_at",
            (
                c.wa_id,
                c.flow,
                c.state,
                _json(c.slots),
                c.flow_version,
                _ts(c.last_inbound_at),
                _ts(c.deadline),
                _ts(now),
            ),
        )

    def _insert_outbound(
        self, replies: Sequence[NewOutbound], now: datetime, inbox_id: int | None
    ) -> list[int]:
        ids = []
        for reply in replies:
            cursor = self.db.execute(
                "INSERT INTO outbox (wa_id, phone_number_id, kind, body, status, "
                "next_attempt_at, inbox_id, created_at, updated_at, fallback) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (
                    reply.wa_id,
                    reply.phone_number_id,
                    reply.kind,
                    _json(reply.body),
                    _ts(now),
                    inbox_id,
                    _ts(now),
                    _ts(now),
                    None if reply.fallback is None else _json(reply.fallback),
                ),
            )
            ids.append(cursor.lastrowid)
        return ids

    # Outbox

    async def enqueue(
        self, replies: Sequence[NewOutbound], keyed: Keyed | None = None
    ) -> list[int]:
        return await self._run(self._enqueue, replies, keyed)

    def _enqueue(
        self, replies: Sequence[NewOutbound], keyed: Keyed | None
    ) -> list[int]:
        now = utcnow()
        with _transaction(self.db):
            ids = self._insert_outbound(replies, now, None)
            if keyed is not None:
                kept = self.db.execute(
                    "INSERT INTO api_requests (idem_key, fingerprint, response, "
                    "created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (keyed.key, keyed.fingerprint, keyed.answer(ids), _ts(now)),
                )
                if kept.rowcount != 1:
                    # Raised inside the transaction: its messages go too.
                    raise KeyInUse(keyed.key)
            return ids

    async def kept_answer(self, key: str) -> KeptAnswer | None:
        return self._peek(self._kept_answer, key)

    def _kept_answer(self, key: str) -> KeptAnswer | None:
        row = self.db.execute(
            "SELECT fingerprint, response FROM api_requests WHERE idem_key = ?",
            (key,),
        ).fetchone()
        return None if row is None else KeptAnswer(row[0], row[1])

    async def due_outbox(self, limit: int = 50) -> list[OutboxItem]:
        return await self._run(self._due_outbox, limit)

    def _due_outbox(self, limit: int) -> list[OutboxItem]:
        now = utcnow()
        with _transaction(self.db):
            self.db.execute(
                "UPDATE outbox SET status = 'queued' "
                "WHERE status = 'sending' AND updated_at < ?",
                (_ts(now - SENDING_LEASE),),
            )
            # Conversation replies first, then notifications and alerts: a
            # driver's answer must not wait behind a bulk send.
            rows = self._due_rows(now, limit, replies=True)
            if len(rows) < limit:
                rows += self._due_rows(now, limit - len(rows), replies=False)
            self.db.executemany(
                "UPDATE outbox SET status = 'sending', attempts = attempts + 1, "
                "updated_at = ? WHERE id = ?",
                [(_ts(now), row["id"]) for row in rows],
            )
        # As the UPDATE above left them.
        return [_outbox_item(row, taken=True) for row in rows]

    def _due_rows(
        self, now: datetime, limit: int, *, replies: bool
    ) -> list[sqlite3.Row]:
        # Per-phone order: EARLIER_UNFINISHED (storage.base).
        # INDEXED BY (replies or the rest, migration 0007): queued items in
        # id order, read only until `limit` are found; the planner would
        # rather walk the whole outbox (18 ms a call at 100k rows) or sort
        # every due item (O(backlog)).
        index, which = (
            ("outbox_replies_queued", "IS NOT NULL")
            if replies
            else ("outbox_others_queued", "IS NULL")
        )
        return self.db.execute(
            f"SELECT * FROM outbox AS o INDEXED BY {index} "
            f"WHERE status = 'queued' AND inbox_id {which} "
            f"AND next_attempt_at <= ? AND {EARLIER_UNFINISHED} "
            "ORDER BY id LIMIT ?",
            (_ts(now), limit),
        ).fetchall()

    async def mark_sent(self, item_id: int, wamid: str | None, status: str) -> None:
        await self._run(self._update_outbox, item_id, status, wamid, None, None)

    async def mark_retry(
        self, item_id: int, next_attempt_at: datetime, error: str
    ) -> None:
        await self._run(self._retry, item_id, next_attempt_at, error)

    def _retry(self, item_id: int, next_attempt_at: datetime, error: str) -> None:
        with _transaction(self.db):
            self.db.execute(
                "UPDATE outbox SET status = 'queued', next_attempt_at = ?, "
                f"error_detail = ?, updated_at = ? WHERE id = ? AND {NOT_ADOPTED}",
                (_ts(next_attempt_at), error, _ts(utcnow()), item_id),
            )

    async def mark_failed(self, item_id: int, code: int | None, detail: str) -> None:
        await self._run(self._update_outbox, item_id, "failed", None, code, detail)

    def _update_outbox(
        self,
        item_id: int,
        status: str,
        wamid: str | None,
        code: int | None,
        detail: str | None,
        now: datetime | None = None,
    ) -> None:
        with _transaction(self.db):
            self.db.execute(
                "UPDATE outbox SET status = ?, wamid = COALESCE(?, wamid), "
                "error_code = COALESCE(?, error_code), "
                "error_detail = COALESCE(?, error_detail), updated_at = ? "
                f"WHERE id = ? AND {NOT_ADOPTED}",
                (status, wamid, code, detail, _ts(now or utcnow()), item_id),
            )

    async def adopt_status(
        self,
        item_id: int,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        row = (wamid, status, error_code, error_detail, _ts(utcnow()), item_id)
        return await self._run(self._adopt_status, row)

    def _adopt_status(self, row: tuple[Any, ...]) -> bool:
        with _transaction(self.db):
            return self.db.execute(ADOPT_STATUS, row).rowcount == 1

    async def apply_status(
        self,
        wamid: str,
        status: str,
        error_code: int | None = None,
        error_detail: str | None = None,
    ) -> bool:
        return await self._run(
            self._apply_status, wamid, status, error_code, error_detail
        )

    def _apply_status(
        self, wamid: str, status: str, code: int | None, detail: str | None
    ) -> bool:
        with _transaction(self.db):
            row = self.db.execute(
                "SELECT id, status FROM outbox WHERE wamid = ?", (wamid,)
            ).fetchone()
            if row is None:
                return False
            if advances(row["status"], status):
                self.db.execute(
                    "UPDATE outbox SET status = ?, error_code = COALESCE(?, "
                    "error_code), error_detail = COALESCE(?, error_detail), "
                    "updated_at = ? WHERE id = ?",
                    (status, code, detail, _ts(utcnow()), row["id"]),
                )
            return True

    async def _prune_batch(
        self, table: str, key: str, condition: str, column: str, before: datetime
    ) -> int:
        return await self._run(self._prune_rows, table, key, condition, column, before)

    def _prune_rows(
        self, table: str, key: str, condition: str, column: str, before: datetime
    ) -> int:
        with transaction(self.db):
            keys = [
                (row[0],)
                for row in self.db.execute(
                    f"SELECT {key} FROM {table} WHERE {condition} AND {column} < ? "
                    "LIMIT ?",
                    (_ts(before), PRUNE_BATCH),
                )
            ]
            if table == "outbox":
                self.db.executemany("DELETE FROM attempts WHERE outbox_id = ?", keys)
            self.db.executemany(f"DELETE FROM {table} WHERE {key} = ?", keys)
            return len(keys)

    async def outbox_items(self, wa_id: str | None = None) -> list[OutboxItem]:
        return await self._read(self._outbox_items, wa_id)

    def _outbox_items(
        self, db: sqlite3.Connection, wa_id: str | None
    ) -> list[OutboxItem]:
        if wa_id is None:
            rows = db.execute("SELECT * FROM outbox ORDER BY id")
        else:
            rows = db.execute(
                "SELECT * FROM outbox WHERE wa_id = ? ORDER BY id", (wa_id,)
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
        row = (item_id, attempt, outcome, error_code, detail, ms, _ts(utcnow()))
        await self._run(self._record_attempt, row)

    def _record_attempt(self, row: tuple[Any, ...]) -> None:
        with _transaction(self.db):
            self.db.execute(
                "INSERT INTO attempts (outbox_id, attempt, outcome, error_code, "
                "detail, ms, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    async def record_sent(
        self, item_id: int, wamid: str | None, status: str, attempt: int, ms: int
    ) -> None:
        now = utcnow()
        row = (item_id, attempt, "accepted", None, wamid, ms, _ts(now))
        await self._run(self._record_sent, item_id, wamid, status, row, now)

    def _record_sent(
        self,
        item_id: int,
        wamid: str | None,
        status: str,
        row: tuple[Any, ...],
        now: datetime,
    ) -> None:
        with _transaction(self.db):
            self._update_outbox(item_id, status, wamid, None, None, now)
            self._record_attempt(row)

    async def give_back(
        self,
        item_id: int,
        attempt: int,
        error: str,
        retry_at: datetime | None = None,
    ) -> None:
        await self._run(self._give_back, item_id, attempt, error, retry_at)

    def _give_back(
        self, item_id: int, attempt: int, error: str, retry_at: datetime | None
    ) -> None:
        now = utcnow()
        with _transaction(self.db):
            self.db.execute(
                "UPDATE outbox SET status = 'queued', attempts = attempts - 1, "
                "next_attempt_at = ?, error_detail = ?, updated_at = ? "
                "WHERE id = ? AND status = 'sending' AND attempts = ?",
                (_ts(retry_at or now), error, _ts(now), item_id, attempt),
            )

    async def renew_lease(self, item_id: int, attempt: int) -> bool:
        return await self._run(self._renew_lease, item_id, attempt)

    def _renew_lease(self, item_id: int, attempt: int) -> bool:
        with _transaction(self.db):
            cursor = self.db.execute(
                "UPDATE outbox SET updated_at = ? "
                "WHERE id = ? AND status = 'sending' AND attempts = ?",
                (_ts(utcnow()), item_id, attempt),
            )
            return cursor.rowcount == 1

    async def attempts_of(self, item_id: int) -> list[dict[str, Any]]:
        return await self._read(self._attempts_of, item_id)

    def _attempts_of(
        self, db: sqlite3.Connection, item_id: int
    ) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT attempt, outcome, error_code, detail, ms, at FROM attempts "
            "WHERE outbox_id = ? ORDER BY id",
            (item_id,),
        )
        return [{**dict(row), "at": _dt(row["at"])} for row in rows]

    async def last_inbound(self, wa_ids: Sequence[str]) -> dict[str, datetime]:
        if not wa_ids:
            return {}
        return self._peek(self._last_inbound, list(wa_ids))

    def _last_inbound(self, wa_ids: list[str]) -> dict[str, datetime]:
        marks = ", ".join("?" * len(wa_ids))
        rows = self.db.execute(
            "SELECT wa_id, MAX(at) AS at FROM ("
            "SELECT wa_id, last_inbound_at AS at FROM conversations "
            f"WHERE wa_id IN ({marks}) AND last_inbound_at IS NOT NULL "
            "UNION ALL SELECT wa_id, received_at FROM inbox "
            f"WHERE wa_id IN ({marks}) AND done_at IS NULL AND kind = 'message'"
            ") GROUP BY wa_id",
            [*wa_ids, *wa_ids],
        )
        return {row["wa_id"]: _dt(row["at"]) for row in rows}

    async def outbox_by_wamid(self, wamid: str) -> OutboxItem | None:
        return self._peek(self._outbox_by_wamid, wamid)

    def _outbox_by_wamid(self, wamid: str) -> OutboxItem | None:
        row = self.db.execute(
            "SELECT * FROM outbox WHERE wamid = ? ORDER BY id LIMIT 1", (wamid,)
        ).fetchone()
        return None if row is None else _outbox_item(row)

    async def outbox_with_replacement(self, item_id: int) -> list[OutboxItem]:
        return self._peek(self._outbox_with_replacement, item_id)

    def _outbox_with_replacement(self, item_id: int) -> list[OutboxItem]:
        rows = self.db.execute(
            "SELECT * FROM outbox WHERE id = ? OR fallback_of = ? ORDER BY id",
            (item_id, item_id),
        )
        return [_outbox_item(row) for row in rows]

    async def add_fallback(self, item_id: int, *, replace: bool) -> OutboxItem | None:
        return await self._run(self._add_fallback, item_id, replace)

    def _add_fallback(self, item_id: int, replace: bool) -> OutboxItem | None:
        now = _ts(utcnow())
        with _transaction(self.db):
            row = self.db.execute(
                "SELECT * FROM outbox AS o WHERE id = ? AND fallback IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM outbox WHERE fallback_of = o.id)",
                (item_id,),
            ).fetchone()
            if row is None:
                return None
            if replace:
                self.db.execute(
                    "UPDATE outbox SET status = 'replaced', updated_at = ? "
                    "WHERE id = ?",
                    (now, item_id),
                )
            status, attempts = ("sending", 1) if replace else ("queued", 0)
            cursor = self.db.execute(
                "INSERT INTO outbox (wa_id, phone_number_id, kind, body, status, "
                "attempts, next_attempt_at, inbox_id, fallback_of, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row["wa_id"],
                    row["phone_number_id"],
                    row["kind"],
                    row["fallback"],
                    status,
                    attempts,
                    now,
                    row["inbox_id"],
                    item_id,
                    now,
                    now,
                ),
            )
            added = self.db.execute(
                "SELECT * FROM outbox WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
        return _outbox_item(added)

    async def history(
        self, wa_id: str, limit: int, offset: int
    ) -> tuple[int, list[HistoryEntry]]:
        return await self._read(self._history, wa_id, limit, offset)

    def _history(
        self, db: sqlite3.Connection, wa_id: str, limit: int, offset: int
    ) -> tuple[int, list[HistoryEntry]]:
        # Read marks are requests, not messages; inbox statuses are about
        # our own messages, already in the outbox rows.
        union = (
            "SELECT 'out' AS direction, id, body, status, wamid, error_code, "
            "error_detail, created_at AS at, fallback_of FROM outbox "
            "WHERE wa_id = ? AND kind = 'message' UNION ALL "
            "SELECT 'in', id, payload, 'received', key, NULL, NULL, received_at, "
            "NULL FROM inbox WHERE wa_id = ? AND kind = 'message'"
        )
        total = db.execute(
            f"SELECT COUNT(*) FROM ({union})", (wa_id, wa_id)
        ).fetchone()[0]
        rows = db.execute(
            f"SELECT * FROM ({union}) ORDER BY at DESC, direction, id DESC "
            "LIMIT ? OFFSET ?",
            (wa_id, wa_id, limit, offset),
        )
        return total, [_history_entry(row) for row in rows]

    async def delivery_counts(self, start: datetime, end: datetime) -> DeliveryCounts:
        return await self._read(self._delivery_counts, start, end)

    def _delivery_counts(
        self, db: sqlite3.Connection, start: datetime, end: datetime
    ) -> DeliveryCounts:
        rows = db.execute(
            "SELECT status, wamid IS NOT NULL AS accepted, COUNT(*) AS n "
            "FROM outbox WHERE kind = 'message' AND created_at >= ? "
            "AND created_at < ? GROUP BY status, accepted",
            (_ts(start), _ts(end)),
        )
        return DeliveryCounts.tally(
            (row["status"], bool(row["accepted"]), row["n"]) for row in rows
        )

    async def queue_stats(self) -> QueueStats:
        return await self._read(self._queue_stats)

    def _queue_stats(self, db: sqlite3.Connection) -> QueueStats:
        pending, oldest = db.execute(
            "SELECT COUNT(*), MIN(received_at) FROM inbox WHERE done_at IS NULL"
        ).fetchone()
        queued = db.execute(
            "SELECT COUNT(*) FROM outbox WHERE status IN ('queued', 'sending')"
        ).fetchone()[0]
        return QueueStats(pending, _dt(oldest), queued)


def _create_private(path: str) -> None:
    """Create a missing database file readable by its owner only.

    It holds phone numbers, RUTs and what drivers wrote; under the usual
    umask SQLite made it (and its -wal and -shm, which follow its mode)
    readable by every local user. A file that exists keeps its mode.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _own(path: str) -> IO[bytes] | None:
    """Lock `<path>-owner` for this process, or None if another holds it.

    `tracbot chat` on the demo's database while `tracbot serve` runs must
    not take back the items the server is sending. The lock goes with the
    process, however it ends (kill -9 included).
    """
    if path == ":memory:" or fcntl is None:
        return open(os.devnull, "rb")  # noqa: SIM115 - closed at disconnect
    fd = os.open(f"{path}-owner", os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    handle = os.fdopen(fd, "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def copy_if_in_use(url: str, folder: Path) -> str | None:
    """The URL of a copy of `url`'s database made in `folder`, if another
    process (a running `tracbot serve`) owns the file; None if none does.

    Two processes on one file both run a dispatcher and a sender: `tracbot
    chat` beside `make demo` saw some of its replies taken by the demo and
    printed on the demo's console instead. The copy keeps what the file
    held (links, conversations) without sharing the queues.
    """
    path = path_of(url)
    if path == ":memory:" or not os.path.exists(path):
        return None
    owner = _own(path)
    if owner is not None:
        owner.close()
        return None

    copy = folder / Path(path).name
    _create_private(str(copy))
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return f"sqlite:///{copy}"


def _translated(exc: sqlite3.Error) -> StorageError:
    # Locked past busy_timeout, or a file that cannot be opened or written
    # (disk full, permissions) is worth trying again later; a bad statement
    # or a broken constraint is not.
    message = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(
        text in message for text in UNAVAILABLE_MESSAGES
    ):
        return StorageUnavailable(f"SQLite unavailable: {exc}")
    return StorageError(f"SQLite error: {exc}")


# One encoder for every call: json.dumps with options builds a new one each
# time.
_json = jsontext.dumps


# BEGIN IMMEDIATE … COMMIT (ROLLBACK when the block raises), or a savepoint
# when the call runs inside a group commit.
_transaction = transaction


# Rows into dataclasses (storage/rows.py); SQLite keeps times as ISO text.
_inbox_event = partial(rows.inbox_event, when=_dt)
_conversation = partial(rows.conversation, when=_dt)
_outbox_item = partial(rows.outbox_item, when=_dt)
_history_entry = partial(rows.history_entry, when=_dt)
