"""Two stores of one process on one SQLite file take turns to write.

The webhook's store and the processing thread's (bot/worker.py) each write
from their own thread and loop. SQLite's own wait, which sleeps between
looks, let a writer that commits all the time keep the other out past its
50 ms; the process's lock (storage/sqlite_batch.py) hands the file over as
soon as it is free.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

from storage import NewInboxEvent
from storage.errors import StorageError
from storage.sqlite import SqliteStore

PHONE_NUMBER_ID = "106540352242922"
BUSY_WRITERS = 24
SECONDS = 1.5


def event(key: str) -> NewInboxEvent:
    return NewInboxEvent(key, "message", "561", PHONE_NUMBER_ID, {"id": key})


async def write_without_pause(url: str, stop: threading.Event) -> int:
    """The processing thread under load: one transaction after another."""
    written = 0

    async def writer(number: int) -> None:
        nonlocal written
        while not stop.is_set():
            await store.add_events([event(f"busy-{number}-{written}")])
            written += 1

    async with SqliteStore(url, companion=True) as store:
        await asyncio.gather(*(writer(n) for n in range(BUSY_WRITERS)))
    return written


async def test_a_writer_that_never_pauses_does_not_lock_the_other_out(tmp_path):
    path = tmp_path / "t.db"
    url = f"sqlite:///{path}"
    async with SqliteStore(url) as webhook_store:
        stop = threading.Event()
        busy: list[int] = []
        thread = threading.Thread(
            target=lambda: busy.append(asyncio.run(write_without_pause(url, stop)))
        )
        thread.start()

        # The webhook's side: one insert every few milliseconds, as Meta posts.
        failures: list[StorageError] = []
        stored = 0
        loop = asyncio.get_running_loop()
        ends = loop.time() + SECONDS
        while loop.time() < ends:
            try:
                await webhook_store.add_events([event(f"webhook-{stored}")])
                stored += 1
            except StorageError as exc:
                failures.append(exc)
            await asyncio.sleep(0.003)

        stop.set()
        await asyncio.to_thread(thread.join)

    assert failures == []
    assert busy and busy[0] > stored  # the other side really kept writing
    with sqlite3.connect(path) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM inbox")}
    assert {f"webhook-{n}" for n in range(stored)} <= keys
