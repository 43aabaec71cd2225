"""The processing thread (`server.processing`, bot/worker.py).

Each test runs the real app on loopback with a SQLite file and the Graph API
simulator, and checks where the work of a message ran and what came of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

from bot.app import create_app
from bot.config import Settings, load_settings
from bot.engine.engine import Engine
from bot.engine.harness import Harness, demo_settings
from bot.errors import ConfigError
from bot.worker import Worker
from storage.base import utcnow
from storage.errors import StorageError
from tests import support
from tests.engine.project import make_project

PHONE = "56911130001"
ECHO = """
name: eco
start: [eco]
states:
  pedir:
    reply: eco_pedir
"""
TEMPLATES = {"eco_pedir": "¿Qué repito?"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = make_project(tmp_path, {"eco": ECHO}, TEMPLATES)
    return demo_settings(config, config.parent)


def texts(bodies: list[dict]) -> list[str]:
    return [b["text"]["body"] for b in bodies]


def processing(settings: Settings, mode: str) -> Settings:
    return dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, processing=mode)
    )


async def test_messages_are_handled_on_the_worker_thread(settings):
    sent_on: list[tuple[str, int]] = []
    harness = Harness(settings)
    # on_sent belongs to the caller's loop (a chat's queue): it runs there.
    harness.app = create_app(
        settings,
        on_sent=lambda item, result: sent_on.append((item.kind, threading.get_ident())),
    )
    harness.runner = web.AppRunner(harness.app)

    async with harness:
        worker = harness.runtime.worker
        assert worker is not None
        assert worker.parts is not None
        assert harness.runtime.dispatcher is worker.parts.dispatcher
        thread = worker._thread
        assert thread is not None and thread.is_alive()
        assert thread is not threading.current_thread()

        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]
        await asyncio.sleep(0.05)  # the on_sent call crosses to this loop
        here = threading.get_ident()
        assert ("message", here) in sent_on
        assert {thread for _, thread in sent_on} == {here}

    # Stopped with the app: each part finished, the thread is gone.
    assert not thread.is_alive()
    assert harness.runtime.worker is None


async def test_the_sender_learns_when_a_phone_wrote_from_its_committed_step(
    settings,
):
    # It asks the store about a window only for phones it knows nothing
    # recent of (bot/whatsapp/templates.py, WindowStarts).
    async with Harness(settings) as harness:
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]
        worker = harness.runtime.worker
        assert worker is not None and worker.parts is not None
        starts = worker.parts.sender.starts
        assert starts.open(PHONE, utcnow())
        assert not starts.open("56911130002", utcnow())


async def test_inline_processing_runs_on_the_webhook_loop(settings):
    async with Harness(processing(settings, "inline")) as harness:
        assert harness.runtime.worker is None
        assert harness.runtime.dispatcher is not None
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]


async def test_an_in_memory_database_keeps_processing_inline(settings):
    # A second connection would open another, empty, database.
    memory = dataclasses.replace(settings, storage_url="sqlite://")
    async with Harness(memory) as harness:
        assert harness.runtime.worker is None
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]


async def test_a_worker_that_cannot_open_its_store_fails_its_start(settings, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the database's folder should be")
    broken = dataclasses.replace(
        settings, storage_url=f"sqlite:///{blocked / 'tracbot.db'}"
    )
    worker = Worker(broken, _engine(settings), "http://127.0.0.1:9", "token")
    with pytest.raises((StorageError, OSError)):
        await worker.start()
    await worker.stop()
    assert worker.parts is None


def _engine(settings: Settings) -> Engine:
    return Engine.from_dirs(settings.engine.flows_dir, settings.engine.templates_dir)


def test_an_unknown_processing_mode_names_the_setting(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  processing: process\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "server.processing" in str(caught.value)
    assert "thread, inline" in str(caught.value)


def test_the_default_is_the_thread(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: 8080\n", encoding="utf-8")
    assert load_settings(path, env={}).server.processing == "thread"


async def test_a_wake_up_waits_the_gather_time_before_the_work(settings):
    # The dispatcher's and the sender's waits both come before the reply.
    slow = dataclasses.replace(
        settings,
        engine=dataclasses.replace(settings.engine, gather_seconds=0.2),
        sender=dataclasses.replace(settings.sender, gather_seconds=0.2),
    )
    async with Harness(slow) as harness:
        started = time.monotonic()
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]
        assert time.monotonic() - started >= 0.4


def test_gather_times_are_read_in_milliseconds(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "engine:\n  gather_ms: 25\nsender:\n  gather_ms: 0\n", encoding="utf-8"
    )
    settings = load_settings(path, env={})
    assert settings.engine.gather_seconds == 0.025
    assert settings.sender.gather_seconds == 0.0

    path.write_text("sender:\n  gather_ms: -5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "sender.gather_ms" in str(caught.value)


async def test_readyz_says_when_the_thread_has_stopped(settings):
    async with Harness(settings) as harness:
        base = harness.url.removesuffix("/webhook")
        session = harness._session
        assert session is not None
        async with session.get(f"{base}/readyz") as ready:
            assert ready.status == 200

        worker = harness.runtime.worker
        assert worker is not None
        await worker.stop()
        async with session.get(f"{base}/readyz") as ready:
            body = await ready.json()
        assert ready.status == 503
        assert "processing: the thread has stopped (see the log)" in body["problems"]


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_a_gather_time_that_never_ends_is_refused(tmp_path, value) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"engine:\n  gather_ms: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "engine.gather_ms" in str(caught.value)
    assert "finite" in str(caught.value)


async def test_no_phones_at_once_stores_webhooks_answers_nothing_and_says_so(
    settings, caplog, aiohttp_client
):
    paused = dataclasses.replace(
        settings,
        engine=dataclasses.replace(settings.engine, max_concurrent_phones=0),
    )
    with caplog.at_level("WARNING", "tracbot"):
        client = await aiohttp_client(create_app(paused))
    runtime = support.runtime_of(client)

    assert await support.driver_says(client, PHONE, "eco") == 200
    await asyncio.sleep(0.3)
    assert runtime.simulator.received == []
    assert await runtime.store.pending_count() == 1
    assert "max_concurrent_phones is 0" in caplog.text

    ready = await client.get("/readyz")
    assert ready.status == 503
    [problem] = (await ready.json())["problems"]
    assert problem.startswith("processing: paused by engine.max_concurrent_phones")


async def test_a_paused_config_still_answers_conversation_tests(tmp_path):
    # `tracbot test` and `tracbot chat` are there for answers: a pause meant
    # for the server made every case wait 10 s and fail.
    config = make_project(tmp_path, {"eco": ECHO}, TEMPLATES)
    text = config.read_text("utf-8").replace(
        "  poll_seconds: 0.05\n", "  poll_seconds: 0.05\n  max_concurrent_phones: 0\n"
    )
    config.write_text(text, "utf-8")
    assert load_settings(config, env={}).engine.max_concurrent_phones == 0

    async with Harness(demo_settings(config, config.parent)) as harness:
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]
