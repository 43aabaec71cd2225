"""Account links in the embedded SQLite backend (issue 4).

A mixin of `SqliteStore`: each method runs as one function in the store's
group commit, like every other method of that backend; the count of the
metrics runs on its reader thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from storage import rows
from storage.base import Link, utcnow
from storage.sqlite_batch import transaction


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# How long a phone's link, read with its next events (`next_turns`), answers
# `get_link`: the messages of that batch. Read alone for each message, after
# the webhooks' commits had emptied this connection's page cache, it cost
# 16 of the processing thread's 246 µs a message under load (bench/README.md,
# thirteenth pass). A link written by a store of this process (the
# processing thread's, the API's on the webhook's) drops every such answer
# at once; one written by another process is seen with the phone's next
# batch, or after this long.
LINK_READ_SECONDS = 0.5
LINKS_READ_MAX = 1024


class LinksMixin:
    """The link methods of `storage.base.Store`, for `SqliteStore`."""

    # Provided by SqliteStore.
    db: sqlite3.Connection
    # wa_id -> (monotonic time it answers until, the process's link writes
    # when read, the link read).
    _links_read: dict[str, tuple[float, int, Link | None]]
    _run: Callable[..., Awaitable[Any]]
    _read: Callable[..., Awaitable[Any]]
    _peek: Callable[..., Any]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # A savepoint when the call runs inside a group commit.
        with transaction(self.db):
            yield

    async def get_link(self, wa_id: str) -> Link | None:
        read = self._links_read.get(wa_id)
        if read is not None:
            until, written, link = read
            if time.monotonic() < until and written == self._links_written():
                return link
        return self._peek(self._one_link, "wa_id", wa_id)

    def _read_link(self, wa_id: str) -> None:
        """Read a phone's link for the batch of its events being taken."""
        written = self._links_written()
        link = self._one_link("wa_id", wa_id)
        if len(self._links_read) >= LINKS_READ_MAX:
            self._links_read.clear()
        until = time.monotonic() + LINK_READ_SECONDS
        self._links_read[wa_id] = (until, written, link)

    def _links_written(self) -> int:
        turns = getattr(self.db, "turn", None)
        return 0 if turns is None else turns.links_written

    def _link_written(self) -> None:
        # Counted before a link write and again once it is committed: a read
        # between the two may have found the old link.
        self._links_read.clear()
        turns = getattr(self.db, "turn", None)
        if turns is not None:
            turns.links_written += 1

    async def link_of_driver(self, driver_id: str) -> Link | None:
        return self._peek(self._one_link, "driver_id", driver_id)

    def _one_link(self, column: str, value: str) -> Link | None:
        # `column` is one of two literals above, never user input.
        row = self.db.execute(
            f"SELECT * FROM links WHERE {column} = ?", (value,)
        ).fetchone()
        return None if row is None else _link(row)

    async def save_link(self, link: Link) -> None:
        await self._run(self._save_link, link)
        self._link_written()

    def _save_link(self, link: Link) -> None:
        self._link_written()
        with self._transaction():
            self.db.execute(
                "INSERT INTO links (wa_id, driver_id, rut, name, role, method, "
                "linked_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (wa_id) DO UPDATE SET driver_id = excluded.driver_id, "
                "rut = excluded.rut, name = excluded.name, role = excluded.role, "
                "method = excluded.method, linked_at = excluded.linked_at",
                (
                    link.wa_id,
                    link.driver_id,
                    link.rut,
                    link.name,
                    link.role,
                    link.method,
                    _ts(link.linked_at),
                ),
            )

    async def remove_link(self, wa_id: str) -> bool:
        removed = await self._run(self._remove_link, wa_id)
        self._link_written()
        return removed

    def _remove_link(self, wa_id: str) -> bool:
        self._link_written()
        with self._transaction():
            gone = self.db.execute("DELETE FROM links WHERE wa_id = ?", (wa_id,))
            return gone.rowcount > 0

    async def move_link(self, old_wa_id: str, new_wa_id: str) -> bool:
        moved = await self._run(self._move_link, old_wa_id, new_wa_id)
        self._link_written()
        return moved

    def _move_link(self, old_wa_id: str, new_wa_id: str) -> bool:
        self._link_written()
        with self._transaction():
            # The new number may have been linked (by phone) meanwhile; the
            # account that moved there is the one that counts.
            self.db.execute("DELETE FROM links WHERE wa_id = ?", (new_wa_id,))
            cursor = self.db.execute(
                "UPDATE links SET wa_id = ? WHERE wa_id = ?", (new_wa_id, old_wa_id)
            )
            return cursor.rowcount > 0

    async def move_conversation(self, old_wa_id: str, new_wa_id: str) -> bool:
        return await self._run(self._move_conversation, old_wa_id, new_wa_id)

    def _move_conversation(self, old_wa_id: str, new_wa_id: str) -> bool:
        with self._transaction():
            # A conversation the new number started itself stays; an idle
            # row of it (its window) gives way to the one that moves.
            busy = self.db.execute(
                "SELECT 1 FROM conversations WHERE wa_id = ? AND flow IS NOT NULL",
                (new_wa_id,),
            ).fetchone()
            if busy is not None:
                return False
            self.db.execute("DELETE FROM conversations WHERE wa_id = ?", (new_wa_id,))
            cursor = self.db.execute(
                "UPDATE conversations SET wa_id = ? WHERE wa_id = ?",
                (new_wa_id, old_wa_id),
            )
            return cursor.rowcount > 0

    async def add_link_attempt(self, wa_id: str, rut: str, outcome: str) -> None:
        await self._run(self._add_attempt, wa_id, rut, outcome)

    def _add_attempt(self, wa_id: str, rut: str, outcome: str) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO link_attempts (wa_id, rut, outcome, at) "
                "VALUES (?, ?, ?, ?)",
                (wa_id, rut, outcome, _ts(utcnow())),
            )

    async def failed_link_attempts(self, wa_id: str, since: datetime) -> int:
        return self._peek(self._failed_attempts, wa_id, since)

    def _failed_attempts(self, wa_id: str, since: datetime) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM link_attempts "
            "WHERE wa_id = ? AND at >= ? AND outcome NOT IN ('ok', 'denied')",
            (wa_id, _ts(since)),
        ).fetchone()
        return row[0]

    async def inbound_count(self, start: datetime, end: datetime) -> int:
        return await self._read(self._inbound_count, start, end)

    def _inbound_count(
        self, db: sqlite3.Connection, start: datetime, end: datetime
    ) -> int:
        row = db.execute(
            "SELECT COUNT(*) FROM inbox WHERE kind = 'message' "
            "AND received_at >= ? AND received_at < ?",
            (_ts(start), _ts(end)),
        ).fetchone()
        return row[0]


def _link(row: sqlite3.Row) -> Link:
    return rows.link(row, datetime.fromisoformat)
