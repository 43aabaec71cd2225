"""Group commit for the SQLite backend: many store calls, one transaction.

Store calls are queued on the event loop and run on the single database
thread in batches: whatever is queued when the thread gets free runs in one
`BEGIN IMMEDIATE … COMMIT`, and every caller gets its own result only after
that COMMIT (so a webhook's 200 still follows the durable insert). Under
load this turns thirty inserts, thirty commits and thirty thread hops into
one of each; with a single caller it is the plain one-call transaction.

Each call stays atomic on its own: a method that writes does so inside
`transaction()`, which is a SAVEPOINT within the batch, so one call that
fails rolls back only its own rows. An error that makes SQLite abandon the
whole transaction (disk full, I/O error) fails every call of the batch that
had written before it, since their rows went with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
# (future, result, error): how one call ended, handed back to the loop.
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One store call's writes: a transaction, or a savepoint inside a batch."""
    if db.in_transaction:
        db.execute("SAVEPOINT call")
        try:
            yield
        except BaseException:
            # A failure that already ended the transaction leaves nothing
            # to roll back to.
            if db.in_transaction:
                db.execute("ROLLBACK TO call")
                db.execute("RELEASE call")
            raise
        db.execute("RELEASE call")
        return

    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class GroupCommit:
    """Runs queued calls on one database thread, a batch per transaction."""

    def __init__(
        self, executor: ThreadPoolExecutor, db: Callable[[], sqlite3.Connection]
    ) -> None:
        self.executor = executor
        self.db = db
        self._queue: collections.deque[Job] = collections.deque()
        # Touched on the event loop only: whether a batch is queued or running.
        self._busy = False
        self._idle: asyncio.Event | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the next batch; return once it is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((fn, args, future))
        if not self._busy:
            self._busy = True
            self.executor.submit(self._batch, loop)
        return await future

    async def idle(self) -> None:
        """Wait until no call is queued or running (before closing)."""
        while self._busy:
            self._idle = self._idle or asyncio.Event()
            await self._idle.wait()

    def _batch(self, loop: asyncio.AbstractEventLoop) -> None:
        # On the database thread. The loop only appends, we only pop.
        jobs = [self._queue.popleft() for _ in range(len(self._queue))]
        try:
            outcomes = self._commit(jobs)
        except BaseException as exc:  # noqa: BLE001  (handed to every caller)
            outcomes = [(future, None, exc) for _, _, future in jobs]
        loop.call_soon_threadsafe(self._settle, loop, outcomes)

    def _commit(self, jobs: list[Job]) -> list[Outcome]:
        db = self.db()
        failed: list[Outcome] = []
        held: list[Outcome] = []
        # A call whose caller was cancelled meanwhile still runs: it may be
        # the record of a message Meta already accepted (a sender stopped
        # mid-send), which must not be lost to a shutdown.
        for fn, args, future in jobs:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            try:
                held.append((future, fn(*args), None))
            except Exception as exc:  # noqa: BLE001  (handed to its caller)
                failed.append((future, None, exc))
                if not db.in_transaction:
                    # SQLite gave up the whole transaction: the calls before
                    # this one lost their rows too.
                    failed += [(f, None, exc) for f, _, _ in held]
                    held = []
        if db.in_transaction:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                return failed + [(f, None, exc) for f, _, _ in held]
        return failed + held

    def _settle(self, loop: asyncio.AbstractEventLoop, outcomes: list[Outcome]) -> None:
        # On the event loop: answer the callers, then start the next batch.
        for future, result, error in outcomes:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        if self._queue:
            self.executor.submit(self._batch, loop)
            return
        self._busy = False
        if self._idle is not None:
            self._idle.set()
            self._idle = None
