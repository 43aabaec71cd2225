"""Group commit for the SQLite backend: many store calls, one transaction.

Store calls are queued on the event loop and run on the single database
thread in batches: whatever is queued when the thread gets free runs in one
`BEGIN IMMEDIATE … COMMIT`, and every caller gets its own result only after
that COMMIT (so a webhook's 200 still follows the durable insert). Under
load this turns thirty inserts, thirty commits and thirty thread hops into
one of each; with a single caller it is the plain one-call transaction.

Each call stays atomic on its own. A batch is optimistic: when one of its
calls raises, the whole batch is rolled back and its calls run again one by
one, each in a transaction of its own, so the failing call fails alone and
the others commit as if they had never met it.

Webhook inserts go first (`urgent`): a batch takes every queued insert and
at most `MAX_CALLS` other calls, so that the 200 of a webhook never waits
behind a long batch of the dispatcher's and the sender's calls.
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


# Calls of the dispatcher and the sender in one batch, at most; the cap keeps
# a batch (and so the wait of a webhook insert queued behind it) short.
MAX_CALLS = 32


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One store call's writes in a transaction of their own, or, within a
    batch (or another call), in the enclosing transaction."""
    if db.in_transaction:
        # Rolled back whole by its owner if this raises (see the module).
        yield
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
        self._urgent: collections.deque[Job] = collections.deque()
        self._queue: collections.deque[Job] = collections.deque()
        # Touched on the event loop only: whether a batch is queued or running.
        self._busy = False
        self._idle: asyncio.Event | None = None

    async def run(
        self, fn: Callable[..., Any], *args: Any, urgent: bool = False
    ) -> Any:
        """Run `fn(*args)` in the next batch; return once it is committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        (self._urgent if urgent else self._queue).append((fn, args, future))
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
        jobs = [self._urgent.popleft() for _ in range(len(self._urgent))]
        jobs += [self._queue.popleft() for _ in range(min(len(self._queue), MAX_CALLS))]
        try:
            outcomes = self._commit(jobs)
        except BaseException as exc:  # noqa: BLE001  (handed to every caller)
            with contextlib.suppress(sqlite3.Error):
                if self.db().in_transaction:
                    self.db().execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, _, future in jobs]
        loop.call_soon_threadsafe(self._settle, loop, outcomes)

    def _commit(self, jobs: list[Job]) -> list[Outcome]:
        # A call whose caller was cancelled meanwhile still runs: it may be
        # the record of a message Meta already accepted (a sender stopped
        # mid-send), which must not be lost to a shutdown.
        if len(jobs) == 1:
            return self._alone(jobs)
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        results = []
        try:
            for fn, args, future in jobs:
                results.append((future, fn(*args), None))
            db.execute("COMMIT")
        except Exception:  # noqa: BLE001  (each call is run again below)
            if db.in_transaction:
                db.execute("ROLLBACK")
            return self._alone(jobs)
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

    def _settle(self, loop: asyncio.AbstractEventLoop, outcomes: list[Outcome]) -> None:
        # On the event loop: answer the callers, then start the next batch.
        for future, result, error in outcomes:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        if self._queue or self._urgent:
            self.executor.submit(self._batch, loop)
            return
        self._busy = False
        if self._idle is not None:
            self._idle.set()
            self._idle = None
