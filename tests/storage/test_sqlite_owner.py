"""Which process owns a SQLite file: a server started while a `tracbot chat`
held it takes it once the chat lets go, so later chats work on a copy."""

from __future__ import annotations

import asyncio
import fcntl
import stat
from pathlib import Path

from storage.base import NewInboxEvent
from storage.sqlite import SqliteStore, copy_if_in_use


async def test_a_store_owns_the_file_once_its_first_owner_lets_go(tmp_path):
    url = f"sqlite:///{tmp_path / 'tracbot.db'}"
    # flock is per open file: this handle stands for the other process.
    holder = (tmp_path / "tracbot.db-owner").open("ab")  # noqa: ASYNC230, SIM115
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    store = SqliteStore(url)
    await store.open()
    try:
        assert store._owner is None
        holder.close()

        # The checkpointer's thread looks about once a second.
        for _ in range(60):
            if store._owner is not None:
                break
            await asyncio.sleep(0.1)
        assert store._owner is not None
        # Before, the next chat found the file free and shared its queues.
        (tmp_path / "copy").mkdir()
        copy = copy_if_in_use(url, tmp_path / "copy")
        assert copy == f"sqlite:///{tmp_path / 'copy' / 'tracbot.db'}"
    finally:
        await store.close()
    assert copy_if_in_use(url, tmp_path) is None


async def test_a_new_database_is_readable_by_its_owner_only(tmp_path):
    # It held phone numbers, RUTs and drivers' words, readable by every
    # local user (0644 under the usual umask), -wal and -shm as well.
    path = tmp_path / "private.db"
    async with SqliteStore(f"sqlite:///{path}") as store:
        await store.add_events([NewInboxEvent("k1", "message", "561", "1", {})])
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-owner")]
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    assert modes == {f.name: 0o600 for f in files}
