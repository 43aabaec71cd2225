"""A phone's link read with its next events (storage/sqlite_links.py).

The processing thread asks who is writing for every message; the SQLite
store reads the link with the phone's batch of events and answers from it,
for that batch only. What it must never do is answer with a link that is
no longer the one stored: its own writes drop the answer at once, another
store of the process at once too, another process's with the phone's next
batch or after a short while.
"""

from __future__ import annotations

import sqlite3

import pytest

from storage import NewInboxEvent, sqlite_links
from storage.base import Link, utcnow
from storage.sqlite import SqliteStore

PHONE_NUMBER_ID = "106540352242922"
CAMILA = "56911120011"


def event(key: str) -> NewInboxEvent:
    return NewInboxEvent(key, "message", CAMILA, PHONE_NUMBER_ID, {"id": key})


def link(driver_id: str = "d-17") -> Link:
    return Link(
        CAMILA, driver_id, "12345678-5", "Camila Rojas", "driver", "rut", utcnow()
    )


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/links.db"


async def test_the_link_read_with_the_turns_is_the_stored_one(url) -> None:
    async with SqliteStore(url) as store:
        await store.save_link(link())
        await store.add_events([event("m1"), event("m2")])

        turns = await store.next_turns(CAMILA, 8)

        assert len(turns.events) == 2
        assert await store.get_link(CAMILA) == await store.link_of_driver("d-17")
        assert (await store.get_link(CAMILA)).driver_id == "d-17"
        assert await store.get_link("56999999999") is None


async def test_a_link_this_store_writes_is_seen_at_once(url) -> None:
    # A driver who links with their RUT in the first message of a batch is
    # a driver for the second.
    async with SqliteStore(url) as store:
        await store.add_events([event("m1"), event("m2")])
        await store.next_turns(CAMILA, 8)
        assert await store.get_link(CAMILA) is None

        await store.save_link(link())
        assert (await store.get_link(CAMILA)).driver_id == "d-17"

        await store.move_link(CAMILA, "56911120099")
        assert await store.get_link(CAMILA) is None

        await store.save_link(link("d-18"))
        assert await store.remove_link(CAMILA)
        assert await store.get_link(CAMILA) is None


async def test_the_webhook_stores_link_write_is_seen_at_once(url) -> None:
    # The backend's API unlinks a phone through the webhook's store while
    # the processing thread's store holds the link read with a batch.
    async with SqliteStore(url) as webhook, SqliteStore(url, companion=True) as store:
        await webhook.save_link(link())
        await webhook.add_events([event("m1"), event("m2")])
        await store.next_turns(CAMILA, 8)
        assert (await store.get_link(CAMILA)).driver_id == "d-17"

        assert await webhook.remove_link(CAMILA)
        assert await store.get_link(CAMILA) is None

        await store.next_turns(CAMILA, 8)
        await webhook.save_link(link("d-18"))
        assert (await store.get_link(CAMILA)).driver_id == "d-18"


async def test_another_process_link_is_seen_with_the_next_batch_or_soon(
    url, tmp_path, monkeypatch
) -> None:
    async with SqliteStore(url) as store:
        await store.save_link(link())
        await store.add_events([event("m1")])
        await store.next_turns(CAMILA, 8)
        elsewhere = sqlite3.connect(tmp_path / "links.db", isolation_level=None)
        try:
            elsewhere.execute("UPDATE links SET driver_id = 'd-18'")

            # Within its batch a message gets the link read with the batch:
            # one read a batch, not one a message.
            assert (await store.get_link(CAMILA)).driver_id == "d-17"
            await store.add_events([event("m2")])
            await store.next_turns(CAMILA, 8)
            assert (await store.get_link(CAMILA)).driver_id == "d-18"

            monkeypatch.setattr(sqlite_links, "LINK_READ_SECONDS", 0.0)
            await store.next_turns(CAMILA, 8)
            elsewhere.execute("UPDATE links SET driver_id = 'd-19'")
            assert (await store.get_link(CAMILA)).driver_id == "d-19"
        finally:
            elsewhere.close()
