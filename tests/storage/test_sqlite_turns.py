"""Two stores of one process on one SQLite file take turns to write.

The webhook's store and the processing thread's (bot/worker.py) each write
from their own thread and loop. SQLite's own wait, which sleeps between
looks, let a writer that commits all the time keep the other out past its
50 ms; the process's lock (storage/sqlite_batch.py) hands the file over as
soon as it is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading

from storage import NewInboxEvent, sqlite_batch
from storage.errors import StorageError
from storage.sqlite import LOOP_BUSY_MS, SqliteStore

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


def begins(statements: list[str]) -> list[str]:
    """Each BEGIN of a trace, with whether it waited for the lock."""
    out, looking = [], False
    for sql in statements:
        if sql == "PRAGMA busy_timeout=0":
            looking = True
        elif sql == "BEGIN IMMEDIATE":
            out.append("looked" if looking else "waited")
        elif sql.startswith("PRAGMA busy_timeout="):
            looking = False
    return out


async def test_a_file_held_by_another_process_is_waited_for_once(tmp_path, monkeypatch):
    # An operator's `sqlite3` session left in a transaction: each store call
    # used to wait SQLite's whole busy timeout on the webhook's loop.
    monkeypatch.setattr(sqlite_batch, "WAIT_AGAIN_SECONDS", 60.0)
    path = tmp_path / "t.db"
    url = f"sqlite:///{path}"
    async with (
        SqliteStore(url) as webhook_store,
        SqliteStore(url, companion=True) as processing_store,
    ):
        traces: dict[str, list[str]] = {"webhook": [], "processing": []}
        webhook_store.db.set_trace_callback(traces["webhook"].append)
        processing_store.db.set_trace_callback(traces["processing"].append)

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        failed = 0
        for n in range(3):
            try:
                await webhook_store.add_events([event(f"held-{n}")])
            except StorageError:
                failed += 1
        try:
            await processing_store.add_events([event("held-p")])
        except StorageError:
            failed += 1
        other.execute("ROLLBACK")
        other.close()

        await webhook_store.add_events([event("after-1")])
        await webhook_store.add_events([event("after-2")])
        # Each look put the store's own wait back.
        for store in (webhook_store, processing_store):
            [waits] = store.db.execute("PRAGMA busy_timeout").fetchone()
            assert waits == LOOP_BUSY_MS

    assert failed == 4
    # One wait for the whole process; every look after it is without one,
    # the other store's too, until a BEGIN gets in; then waits again.
    assert begins(traces["webhook"]) == [
        "waited",
        "looked",
        "looked",
        "looked",
        "waited",
    ]
    assert begins(traces["processing"]) == ["looked"]
    with sqlite3.connect(path) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM inbox")}
    assert keys == {"after-1", "after-2"}


async def test_while_held_elsewhere_one_begin_waits_again_now_and_then(
    tmp_path, monkeypatch
):
    # A holder that lets go often (short transactions back to back) leaves
    # gaps that only a wait finds.
    monkeypatch.setattr(sqlite_batch, "WAIT_AGAIN_SECONDS", 0.2)
    path = tmp_path / "t.db"
    async with SqliteStore(f"sqlite:///{path}") as store:
        trace: list[str] = []
        store.db.set_trace_callback(trace.append)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        for n, pause in enumerate((0, 0, 0.3, 0)):
            await asyncio.sleep(pause)
            with contextlib.suppress(StorageError):
                await store.add_events([event(f"held-{n}")])
        other.execute("ROLLBACK")
        other.close()

    assert begins(trace) == ["waited", "looked", "waited", "looked"]
