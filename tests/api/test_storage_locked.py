"""An SQLite file locked by another process (a `sqlite3` session held open,
a migration run by hand): webhooks get 503 and nothing is lost, /readyz
says why, the server stays responsive, and a reply Meta accepted while the
lock was held is recorded once the lock is gone, never sent twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import storage.sqlite as sqlite_backend
from bot.app import create_app
from bot.whatsapp import store_trouble
from storage.base import NewOutbound
from storage.errors import StorageUnavailable
from storage.sqlite import SqliteStore
from tests import support
from tests.support import demo_settings, runtime_of, settle

CAMILA = "56911120011"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def driver_says(client, text: str, secret: str | None = None) -> int:
    return await support.driver_says(client, CAMILA, text, secret)


async def test_a_locked_database_gives_503_and_readyz_says_so(tmp_path, aiohttp_client):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)

    with locked(tmp_path / "tracbot.db"):
        assert await driver_says(client, "ayuda") == 503
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        body = await ready.json()

    assert ready.status == 503
    assert any("could not be stored" in p for p in body["problems"]), body

    assert await driver_says(client, "ayuda") == 200
    await settle(runtime)
    assert (await client.get("/readyz")).status == 200
    assert len(runtime.simulator.received) >= 1


async def test_a_reply_accepted_while_the_database_is_locked_is_recorded_once(
    tmp_path, aiohttp_client
):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    simulator = runtime.simulator
    simulator.delay = 0.5

    assert await driver_says(client, "ayuda") == 200
    await simulator.wait_for(1)  # the reply is on the wire
    with locked(tmp_path / "tracbot.db"):
        # Meta answers while the lock is held; the record must wait for it.
        await asyncio.sleep(1.0)
    await settle(runtime)

    texts = [r for r in simulator.received if r["body"].get("type") != "template"]
    assert len([r for r in texts if r["body"].get("to") == CAMILA]) == 1
    [item] = [i for i in await runtime.store.outbox_items(CAMILA) if i.kind != "read"]
    assert item.status == "accepted" and item.wamid


async def test_a_second_process_on_the_file_leaves_the_first_ones_sends(
    tmp_path: Path,
):
    url = f"sqlite:///{tmp_path}/shared.db"
    body = {"to": CAMILA, "type": "text", "text": {"body": "hola"}}

    async with SqliteStore(url) as first:
        await first.enqueue([NewOutbound(CAMILA, "1", "message", body)])
        [taken] = await first.due_outbox()
        # `tracbot chat` opening the demo's file while the demo sends.
        async with SqliteStore(url) as second:
            [seen] = await second.outbox_items()
            assert seen.status == "sending"
        assert (await first.outbox_items())[0].status == "sending"
    # The first is gone: what it left `sending` goes back to the queue.
    async with SqliteStore(url) as third:
        assert [i.status for i in await third.outbox_items()] == ["queued"]
    assert taken.id == seen.id


async def test_a_database_file_deleted_under_the_server_shows_in_readyz(
    tmp_path, aiohttp_client
):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    assert (await client.get("/readyz")).status == 200

    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"tracbot.db{suffix}").unlink(missing_ok=True)

    for _ in range(50):  # the checkpointer looks every half second
        ready = await client.get("/readyz")
        if ready.status == 503:
            break
        await asyncio.sleep(0.1)
    body = await ready.json()
    assert ready.status == 503
    assert any("was deleted while in use" in p for p in body["problems"]), body


async def test_readyz_forgets_a_failed_webhook_after_a_while(
    tmp_path, aiohttp_client, monkeypatch
):
    # Taken out of rotation for it, a server gets no webhook to clear it.
    monkeypatch.setattr(store_trouble, "PROBLEM_SECONDS", 0.3)
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))

    with locked(tmp_path / "tracbot.db"):
        assert await driver_says(client, "ayuda") == 503
    assert (await client.get("/readyz")).status == 503

    await asyncio.sleep(0.5)
    assert (await client.get("/readyz")).status == 200


def trouble_lines(caplog) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "tracbot.webhook" and "answered 503" in r.getMessage()
    ]


async def test_webhooks_refused_for_a_lock_are_logged_once_a_while(
    tmp_path, aiohttp_client, caplog, monkeypatch
):
    # A lock at 500 webhooks/s wrote 500 identical ERROR lines a second, and
    # one that comes and goes a "stored again" line each time it went.
    monkeypatch.setattr(store_trouble, "REPORT_SECONDS", 0.3)
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    with caplog.at_level(logging.WARNING, "tracbot.webhook"):
        for _ in range(3):  # on, off, on, off…
            with locked(tmp_path / "tracbot.db"):
                for _ in range(2):
                    assert await driver_says(client, "ayuda") == 503
            assert await driver_says(client, "ayuda") == 200
        lines = trouble_lines(caplog)
        assert [level for level, _ in lines] == ["ERROR"]
        assert "database is locked" in lines[0][1]

        # Stored again for a whole period: said once, with the count.
        await asyncio.sleep(0.8)
        lines = trouble_lines(caplog)
        assert [level for level, _ in lines] == ["ERROR", "WARNING"]
        assert "6 answered 503 in all" in lines[1][1]

        # A period after that line, the next refusal is told at once.
        await asyncio.sleep(0.4)
        with locked(tmp_path / "tracbot.db"):
            assert await driver_says(client, "ayuda") == 503
        lines = trouble_lines(caplog)
        assert [level for level, _ in lines] == ["ERROR", "WARNING", "ERROR"]
        assert "1 answered 503 so far" in lines[2][1]


async def test_a_file_locked_at_start_says_which_and_what_to_do(tmp_path, monkeypatch):
    # `tracbot serve` ended with "database is locked", naming no file.
    monkeypatch.setattr(sqlite_backend, "OPEN_BUSY_MS", 200)
    url = f"sqlite:///{tmp_path}/t.db"
    async with SqliteStore(url):
        pass  # made and migrated
    with locked(tmp_path / "t.db"), pytest.raises(StorageUnavailable) as caught:
        async with SqliteStore(url):
            pass
    assert str(tmp_path / "t.db") in str(caught.value)
    assert "locked by another process" in str(caught.value)


async def test_the_api_answers_503_in_json_while_the_database_is_locked(
    tmp_path, aiohttp_client, caplog
):
    # It answered aiohttp's text/plain 500, with a traceback in the log.
    settings = demo_settings(tmp_path, TRACBOT_API_TOKEN_BACKEND="backend-token")
    client = await aiohttp_client(create_app(settings))
    headers = {"Authorization": "Bearer backend-token"}
    body = {"phone": "+56911120011", "message": "hola"}

    with locked(tmp_path / "tracbot.db"):
        response = await client.post(
            "/api/whatsapp/send_text", json=body, headers=headers
        )
        assert response.status == 503
        assert (await response.json())["error"].startswith("storage unavailable")
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"

    response = await client.post("/api/whatsapp/send_text", json=body, headers=headers)
    assert response.status == 202


async def test_nothing_is_taken_once_the_database_file_is_deleted(
    tmp_path, aiohttp_client
):
    # /readyz said 503, but webhooks got 200 and API calls 202 for writes
    # into a file that was gone at the next start: lost without a trace.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"tracbot.db{suffix}").unlink(missing_ok=True)
    for _ in range(50):  # the checkpointer looks every 50 ms
        if "while in use" in await (await client.get("/readyz")).text():
            break
        await asyncio.sleep(0.1)

    webhook = await support.driver_says(client, CAMILA, "hola")
    sent = await client.post(
        "/api/whatsapp/send_text",
        json={"phone": "+56911120011", "message": "después"},
        headers={"Authorization": "Bearer demo-backend-token"},
    )

    assert webhook == 503
    assert sent.status == 503
    scrape = await (await client.get("/metrics")).text()
    assert "tracbot_ready 0" in scrape.splitlines()
    assert (await sent.json())["error"] == "storage unavailable, try again shortly"
