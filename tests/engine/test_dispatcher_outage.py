"""The dispatcher's log while the store takes reads but refuses writes (a
full disk, a lock held elsewhere): one line now and then, not two a second.
Each failed step was followed by "inbox available again", said by the read
that found the phone's event still pending, and the next step failed again.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from bot.engine.dispatcher import Dispatcher
from bot.engine.engine import Engine
from storage import NewInboxEvent
from storage.sqlite import SqliteStore
from tests.support import ROOT, LogLines


async def test_writes_refused_for_a_while_are_one_line_then_one_more(tmp_path: Path):
    path = tmp_path / "t.db"
    engine = Engine.from_dirs(ROOT / "flows", ROOT / "message_templates")
    payload = {"kind": "message", "wamid": "w1", "wa_id": "561", "phone_number_id": "1"}
    payload |= {"timestamp": 0, "type": "text", "text": "ayuda", "raw": {}}
    listener = LogLines()
    logger = logging.getLogger("tracbot.dispatcher")
    logger.addHandler(listener)
    async with SqliteStore(f"sqlite:///{path}") as store:
        await store.add_events([NewInboxEvent("w1", "message", "561", "1", payload)])
        dispatcher = Dispatcher(store, engine, mark_read=False, poll_seconds=0.05)

        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # reads go on, writes wait
        running = asyncio.create_task(dispatcher.run())
        try:
            await asyncio.sleep(1.5)
            holder.execute("ROLLBACK")
            for _ in range(100):
                if await store.pending_count() == 0:
                    break
                await asyncio.sleep(0.05)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            holder.close()
            logger.removeHandler(listener)
        assert await store.pending_count() == 0

    failed = [line for line in listener.lines if "storage failed" in line]
    assert len(failed) == 1, listener.lines
    assert "inbox available again" not in listener.lines
    assert listener.lines.count("storage takes the steps again") == 1
