"""WAL checkpoints of the SQLite backend, off the commit path.

SQLite copies the write-ahead log back into the database file (and fsyncs
it) inside whichever COMMIT makes the log pass its threshold. On the store's
database thread that stalls every queued call, webhook inserts included,
for as long as the disk takes: tens of milliseconds, often enough to be the
p99 of the webhook's answer. A thread of its own, with a connection of its
own, checkpoints every `interval` instead. Even a PASSIVE checkpoint holds
up a COMMIT that comes while it runs (measured on ext4: the longest COMMIT
stall follows the longest checkpoint), so the interval is short and each
checkpoint small: at 20 a second a stall stays under about 3 ms, at 2 a
second it reached 10–20 ms, the p99 of the webhook's answer at 1,000/s.
The store's own connection keeps a far higher threshold as a safety net,
should this thread fall behind.

The same thread notices when the file it checkpoints is no longer the one
the store opened (deleted or replaced under a running server): the server
would go on writing to a file nobody can open again, and lose it all at the
next start. It says so once, loudly, and `problem` tells /readyz.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable

log = logging.getLogger("tracbot.storage")

# Pages of WAL after which a COMMIT checkpoints by itself (4 KiB pages):
# ten times SQLite's default, reached only if the checkpointer falls behind.
SAFETY_NET_PAGES = 10_000

# Seconds between checkpoints (see the module docstring for why so short).
INTERVAL = 0.05

# At most one line of failed checkpoints in this many seconds.
FAILURE_LOG_SECONDS = 10.0


class Checkpointer:
    """A thread that checkpoints one SQLite file's WAL now and then."""

    def __init__(
        self,
        path: str,
        interval: float = INTERVAL,
        on_second: Callable[[], bool] | None = None,
    ) -> None:
        self.path = path
        self.interval = interval
        # Called about once a second until it returns True (the store's
        # claim of a file another process owned at its start).
        self.on_second = on_second
        self.runs = 0
        # Set when the file at `path` is no longer the one opened.
        self.problem: str | None = None
        self._identity = _identity(path)
        # Checkpoints failed in a row, and when the next may be logged.
        self._failures = 0
        self._next_failure_log = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="tracbot-sqlite-checkpoint", daemon=True
        )

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            ticks = 0
            while not self._stop.wait(self.interval):
                self._check_file()
                ticks += 1
                if self.on_second is not None and ticks * self.interval >= 1.0:
                    ticks = 0
                    if self.on_second():
                        self.on_second = None
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                except sqlite3.Error as exc:
                    # The store's own threshold still bounds the log.
                    self._failed(exc)
                else:
                    self._worked()
        finally:
            db.close()

    def _failed(self, exc: sqlite3.Error) -> None:
        # Twenty a second on a full disk: the first, then one every
        # FAILURE_LOG_SECONDS with how many, not 365 lines in 15 s.
        self._failures += 1
        now = time.monotonic()
        if now < self._next_failure_log:
            return
        self._next_failure_log = now + FAILURE_LOG_SECONDS
        hint = ""
        if "disk" in str(exc).lower():
            folder = os.path.dirname(os.path.abspath(self.path))
            hint = f" (is the disk of {folder} full?)"
        log.warning(
            "background WAL checkpoint failed: %s%s; %d failed so far (one line "
            "every %g s at most)",
            exc,
            hint,
            self._failures,
            FAILURE_LOG_SECONDS,
        )

    def _worked(self) -> None:
        if self._failures:
            log.warning("WAL checkpoints work again after %d failures", self._failures)
            self._failures = 0
            self._next_failure_log = 0.0

    def _check_file(self) -> None:
        now = _identity(self.path)
        if now == self._identity or self.problem is not None:
            return
        what = "deleted" if now is None else "replaced by another file"
        self.problem = (
            f"the database file {self.path} was {what} while in use: writes "
            "go to a file that is gone at the next start; stop, restore it "
            "from a backup, and start again"
        )
        log.critical("%s", self.problem)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
