"""WAL checkpoints of the SQLite backend run off the commit path
(storage/sqlite_checkpoint.py): the log is copied into the database file
while the store is open, without a COMMIT doing it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from storage import NewInboxEvent
from storage.sqlite import SqliteStore
from storage.sqlite_checkpoint import Checkpointer
from tests.support import LogLines

PHONE_NUMBER_ID = "106540352242922"


def size(path: Path) -> int:
    """Bytes of the database file itself (the WAL is a file beside it)."""
    return path.stat().st_size


async def test_the_log_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with SqliteStore(f"sqlite:///{path}") as store:
        empty = size(path)
        body = {"text": "x" * 2000}
        for i in range(200):  # ~100 pages of WAL: far below the safety net
            events = [NewInboxEvent(f"k{i}", "message", "561", PHONE_NUMBER_ID, body)]
            await store.add_events(events)

        # The rows reach the database file itself within a few intervals.
        for _ in range(50):
            if size(path) > empty + 200 * 2000:
                break
            await asyncio.sleep(0.1)
        assert size(path) > empty + 200 * 2000
        assert store._checkpointer is not None and store._checkpointer.runs > 0
        assert await store.pending_count() == 200


def test_failing_checkpoints_are_one_line_now_and_then(tmp_path: Path) -> None:
    # On a full disk they failed twenty times a second, a WARNING each:
    # 365 lines in 15 s, the file's folder named in none of them.
    path = tmp_path / "t.db"
    sqlite3.connect(path).close()
    checkpointer = Checkpointer(str(path))
    listener = LogLines(logging.WARNING)
    lines = listener.lines
    logger = logging.getLogger("tracbot.storage")
    logger.addHandler(listener)
    try:
        for _ in range(100):
            checkpointer._failed(sqlite3.OperationalError("disk I/O error"))
        checkpointer._worked()
    finally:
        logger.removeHandler(listener)

    assert len(lines) == 2, lines
    assert f"(is the disk of {tmp_path} full?)" in lines[0]
    assert lines[1] == "WAL checkpoints work again after 100 failures"
