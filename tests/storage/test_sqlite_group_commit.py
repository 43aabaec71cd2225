"""Group commit of the SQLite backend (storage/sqlite_batch.py).

Calls queued together share one transaction; each must still be answered
only after its rows are committed, and one call's failure must not undo or
fail the others of its batch. Webhook inserts commit at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from storage import NewInboxEvent, NewOutbound
from storage.errors import StorageError, StorageUnavailable
from storage.sqlite import SqliteStore

PHONE_NUMBER_ID = "106540352242922"


def event(key: str, wa_id: str = "561") -> NewInboxEvent:
    return NewInboxEvent(key, "message", wa_id, PHONE_NUMBER_ID, {"id": key})


def reply(wa_id: str, text: str) -> NewOutbound:
    body = {"type": "text", "text": {"body": text}}
    return NewOutbound(wa_id, PHONE_NUMBER_ID, "message", body)


@pytest.fixture
async def store(tmp_path: Path):
    async with SqliteStore(f"sqlite:///{tmp_path}/t.db") as opened:
        yield opened


def committed_keys(path: str) -> set[str]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as other:
        return {row[0] for row in other.execute("SELECT key FROM inbox")}


async def test_each_caller_is_answered_after_its_rows_are_committed(
    store: SqliteStore,
) -> None:
    seen_at_answer: dict[str, bool] = {}

    async def webhook(key: str) -> None:
        await store.add_events([event(key, f"56{len(key)}")])
        seen_at_answer[key] = key in committed_keys(store.path)

    await asyncio.gather(*(webhook(f"k{i}") for i in range(50)))
    assert seen_at_answer == {f"k{i}": True for i in range(50)}


async def test_a_failing_call_leaves_the_rest_of_its_batch_committed(
    store: SqliteStore,
) -> None:
    await store.add_events([event("done")])
    first = await store.next_event("561")
    await store.commit_step(first.id, None, [reply("561", "una vez")])

    # Queued together: new events, a replayed step (refused), more events.
    results = await asyncio.gather(
        store.add_events([event("a", "562")]),
        store.commit_step(first.id, None, [reply("561", "dos veces")]),
        store.add_events([event("b", "563")]),
        return_exceptions=True,
    )

    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], StorageError)
    assert committed_keys(store.path) == {"done", "a", "b"}
    assert [i.body["text"]["body"] for i in await store.outbox_items()] == ["una vez"]


async def test_close_waits_for_queued_calls(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/t.db")
    await store.open()
    calls = [
        asyncio.ensure_future(store.add_events([event(f"q{i}")])) for i in range(20)
    ]
    await asyncio.sleep(0)
    await store.close()
    assert [await c for c in calls] == [1] * 20
    assert len(committed_keys(store.path)) == 20


async def test_a_call_whose_caller_was_cancelled_still_commits(
    store: SqliteStore,
) -> None:
    # A sender stopped right after Meta accepted a message must still
    # record it, or the message would go out again after a restart.
    first = asyncio.ensure_future(store.enqueue([reply("566", "antes")]))
    stopped = asyncio.ensure_future(store.enqueue([reply("567", "detenido")]))
    await asyncio.sleep(0)  # both queued for the next batch
    stopped.cancel()
    assert len(await first) == 1
    with pytest.raises(asyncio.CancelledError):
        await stopped
    texts = {i.body["text"]["body"] for i in await store.outbox_items()}
    assert texts == {"antes", "detenido"}


async def test_a_webhook_insert_does_not_wait_for_a_batch(
    store: SqliteStore,
) -> None:
    # Queued calls wait for the next loop callback; the insert a webhook's
    # 200 waits for is committed before add_events returns control.
    queued = asyncio.ensure_future(store.enqueue([reply("568", "en cola")]))
    await asyncio.sleep(0)
    insert = asyncio.ensure_future(store.add_events([event("now", "569")]))
    await asyncio.sleep(0)  # one step of the task: no batch ran in between

    assert insert.done() and insert.result() == 1
    assert "now" in committed_keys(store.path)
    assert len(await queued) == 1


async def test_a_burst_of_webhook_inserts_shares_the_next_batch(
    store: SqliteStore,
) -> None:
    # The first insert of a turn of the loop commits at once; the others of
    # the same turn wait one turn and share a COMMIT.
    first = asyncio.ensure_future(store.add_events([event("b1", "570")]))
    second = asyncio.ensure_future(store.add_events([event("b2", "571")]))
    await asyncio.sleep(0)  # both tasks take their first step in this turn

    assert first.done() and not second.done()
    assert await second == 1
    assert {"b1", "b2"} <= committed_keys(store.path)


async def test_a_batch_under_another_process_lock_fails_whole_then_recovers(
    store: SqliteStore,
) -> None:
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        results = await asyncio.gather(
            *(store.enqueue([reply(f"58{n}", "en cola")]) for n in range(10)),
            return_exceptions=True,
        )
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert all(isinstance(r, StorageUnavailable) for r in results), results
    assert await store.outbox_items() == []
    assert len(await store.enqueue([reply("589", "después")])) == 1
