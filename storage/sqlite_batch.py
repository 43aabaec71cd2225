"""Group commit for the SQLite backend: many store calls, one transaction.

Store calls are queued and run on the event loop itself, in batches: the
calls queued while the loop was busy run in one `BEGIN IMMEDIATE … COMMIT`
from a single loop callback, and every caller gets its own result only
after that COMMIT (so a webhook's 200 still follows the durable insert).

Why on the loop and not on a thread: the hot calls are indexed look-ups
and small writes that take SQLite a few microseconds, and in WAL mode with
`synchronous=NORMAL` a COMMIT writes to the page cache without an fsync
(the checkpointer thread does the syncing, storage/sqlite_checkpoint.py).
A hop to a database thread cost more than the work: a future, a wake-up of
the loop through its self-pipe, and the GIL passed back and forth between
two threads that share a core, which made webhook answers wait for the GIL
for up to its 5 ms switch interval. Reads that can scan (history, metrics,
queue stats) do not come here: they run on a reader thread of their own
(storage/sqlite.py).

Each call stays atomic on its own. A batch is optimistic: when one of its
calls raises, the whole batch is rolled back and its calls run again one by
one, each in a transaction of its own, so the failing call fails alone and
the others commit as if they had never met it.

A batch takes at most `MAX_CALLS` calls, so that it never holds the loop
(and the webhooks behind it) for long; the rest run in the next callback.
The first webhook insert of a loop turn does not wait for a batch at all
(storage/sqlite.py). A batch that meets another process's lock fails whole
instead of trying each call alone, which would wait for the lock each time.

Two stores of one process on one file (the webhook's and the processing
thread's, bot/worker.py) take turns through a lock of the process before
SQLite's: SQLite's own wait sleeps 1, 2, 5, 10… ms between looks, and a
writer that commits all the time (the processing thread under load) kept
the other out past its 50 ms, so a webhook got a 503 under plain load
(once in 20,000 in `python -m bench`). The lock hands the file over as soon
as it is free.

Another process holding the file (an operator's `sqlite3` session left in a
transaction, a migration run by hand) costs the loop one busy wait, not one
per call: after a BEGIN finds the file locked past the busy timeout, the
next ones of this process look without waiting until one gets in (one
in a quarter of a second still waits, for a holder that lets go often). Each
waited the full timeout on the loop before, so at 500 webhooks/s answers
queued behind each other for seconds and /readyz could not answer; now a
webhook gets its 503 at once and the first one after the release is stored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
# (future, result, error): how one call ended.
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


# Calls in one batch, at most; the cap keeps a batch (and so the loop
# callback that runs it) short.
MAX_CALLS = 32

# Seconds to wait for this process's other writer before failing as locked:
# its transactions are short, so only a stuck one makes this wait run out.
TURN_SECONDS = 2.0

# While another process holds the file, how often a BEGIN waits for it in
# full; the others look without waiting (see `begin`).
WAIT_AGAIN_SECONDS = 0.25


class Turns:
    """This process's writers to one file: whose turn it is to write, and
    whether another process held the file at the last look."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held_elsewhere = False
        # When a BEGIN may wait for the other process again (see `begin`).
        self.wait_again_at = 0.0
        # Link writes of this process's stores to the file: a link read
        # before one no longer answers (storage/sqlite_links.py).
        self.links_written = 0


_turns: dict[str, Turns] = {}
_turns_guard = threading.Lock()


class Connection(sqlite3.Connection):
    """A connection whose write transactions take turns with the others of
    this process on the same file (see the module docstring)."""

    turn: Turns | None = None


def share_turns(db: Connection, path: str) -> None:
    """Make `db` take turns with this process's other connections to `path`."""
    key = os.path.realpath(path)
    with _turns_guard:
        db.turn = _turns.setdefault(key, Turns())


@contextlib.contextmanager
def turn(db: sqlite3.Connection) -> Iterator[None]:
    """Hold this process's turn to write to `db`'s file."""
    turns = getattr(db, "turn", None)
    if turns is None:
        yield
        return
    if not turns.lock.acquire(timeout=TURN_SECONDS):
        raise sqlite3.OperationalError(
            "database is locked by another connection of this process"
        )
    try:
        yield
    finally:
        turns.lock.release()


def begin(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE; while another process holds the file, without waiting
    for it (see the module docstring). Call with the turn held."""
    turns: Turns | None = getattr(db, "turn", None)
    if turns is None:
        db.execute("BEGIN IMMEDIATE")
        return

    # While the file is held elsewhere, a BEGIN waits its timeout once every
    # WAIT_AGAIN_SECONDS: a process that holds it most of the time, in short
    # transactions, would otherwise let no look without a wait get in.
    now = time.monotonic()
    looking = turns.held_elsewhere and now < turns.wait_again_at
    if looking:
        [waits] = db.execute("PRAGMA busy_timeout").fetchone()
        db.execute("PRAGMA busy_timeout=0")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _locked(exc):
            if not looking:
                turns.wait_again_at = time.monotonic() + WAIT_AGAIN_SECONDS
            turns.held_elsewhere = True
        raise
    finally:
        if looking:
            db.execute(f"PRAGMA busy_timeout={int(waits)}")
    turns.held_elsewhere = False


def transaction(db: sqlite3.Connection) -> contextlib.AbstractContextManager[None]:
    """One store call's writes in a transaction of their own, or, within a
    batch (or another call), in the enclosing transaction."""
    return _Transaction(db)


class _Transaction:
    # A class, not a generator: nearly every call runs inside a batch, where
    # this does nothing, and @contextmanager's generator cost about a
    # microsecond each time, four times a message.
    __slots__ = ("_db", "_own")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._own: contextlib.AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        # Within a transaction, rolled back whole by its owner if the call
        # raises (see the module).
        if not self._db.in_transaction:
            self._own = _own_transaction(self._db)
            self._own.__enter__()

    def __exit__(self, *exc_info: Any) -> bool | None:
        if self._own is None:
            return None
        return self._own.__exit__(*exc_info)


@contextlib.contextmanager
def _own_transaction(db: sqlite3.Connection) -> Iterator[None]:
    with turn(db):
        begin(db)
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


class GroupCommit:
    """Runs queued calls on the event loop, a batch per transaction."""

    def __init__(self, db: Callable[[], sqlite3.Connection]) -> None:
        self.db = db
        self._queue: collections.deque[Job] = collections.deque()
        # Whether a batch callback is scheduled on the loop.
        self._scheduled = False
        self._idle: asyncio.Event | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the next batch; return once it is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((fn, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._batch, loop)
        return await future

    async def idle(self) -> None:
        """Wait until no call is queued (before closing)."""
        while self._scheduled:
            self._idle = self._idle or asyncio.Event()
            await self._idle.wait()

    def _batch(self, loop: asyncio.AbstractEventLoop) -> None:
        # A loop callback: everything queued since the last one, up to the cap.
        jobs = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_CALLS))]
        try:
            outcomes = self._commit(jobs)
        except BaseException as exc:  # noqa: BLE001  (handed to every caller)
            with contextlib.suppress(sqlite3.Error):
                if self.db().in_transaction:
                    self.db().execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, _, future in jobs]
        _settle(outcomes)

        if self._queue:
            loop.call_soon(self._batch, loop)
            return
        self._scheduled = False
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    def _commit(self, jobs: list[Job]) -> list[Outcome]:
        # A call whose caller was cancelled meanwhile still runs: it may be
        # the record of a message Meta already accepted (a sender stopped
        # mid-send), which must not be lost to a shutdown.
        if len(jobs) == 1:
            return self._alone(jobs)
        db = self.db()
        try:
            with turn(db):
                results = self._together(db, jobs)
        except Exception as exc:  # noqa: BLE001  (each call is run again below)
            if _locked(exc):
                # Another process holds the file: each call alone would
                # wait for the lock again, holding the loop each time.
                raise
            return self._alone(jobs)
        return results

    def _together(self, db: sqlite3.Connection, jobs: list[Job]) -> list[Outcome]:
        begin(db)
        results = []
        try:
            for fn, args, future in jobs:
                results.append((future, fn(*args), None))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return results

    def _alone(self, jobs: list[Job]) -> list[Outcome]:
        # Each call in its own transaction (`transaction()`), as without
        # group commit.
        outcomes: list[Outcome] = []
        for fn, args, future in jobs:
            try:
                outcomes.append((future, fn(*args), None))
            except Exception as exc:  # noqa: BLE001  (handed to its caller)
                outcomes.append((future, None, exc))
        return outcomes


def _locked(exc: BaseException) -> bool:
    """Whether `exc` is SQLite saying another connection holds the lock."""
    message = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in message or "busy" in message
    )


def _settle(outcomes: list[Outcome]) -> None:
    # Answer the callers; a cancelled caller's call has run all the same.
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
