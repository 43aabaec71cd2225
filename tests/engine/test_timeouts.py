"""Timeouts: stored deadlines, the sweep, and a message after the deadline."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.engine.harness import Harness, demo_settings
from bot.engine.timeouts import sweep_once
from storage.base import Conversation, Link, NewInboxEvent, utcnow
from storage.sqlite import SqliteStore
from tests.engine.project import make_project
from tests.engine.test_runtime import ECO, PHONE, TEMPLATES, texts


async def save(store: SqliteStore, conversation: Conversation, key: str) -> None:
    event = NewInboxEvent(key, "notice", conversation.wa_id, "1", {"kind": "notice"})
    await store.add_events([event])
    pending = await store.next_event(conversation.wa_id)
    await store.commit_step(pending.id, conversation, [])


async def test_expired_conversations_earliest_first_with_limit(tmp_path):
    now = utcnow()
    async with SqliteStore(f"sqlite:///{tmp_path / 't.db'}") as store:
        for wa_id, minutes in [("1", -1), ("2", -5), ("3", 5), ("4", -3)]:
            deadline = now + timedelta(minutes=minutes)
            await save(
                store, Conversation(wa_id, "eco", "pedir", deadline=deadline), wa_id
            )
        await save(store, Conversation("5", "eco", "pedir"), "5")

        found = await store.expired_conversations(now, limit=10)
        assert [c.wa_id for c in found] == ["2", "4", "1"]
        assert [c.wa_id for c in await store.expired_conversations(now, 2)] == [
            "2",
            "4",
        ]

        # One event a deadline, however often or by how many sweepers.
        assert await sweep_once(store, now, "200000000000002") == 3
        assert await sweep_once(store, now, "200000000000002") == 0


async def test_message_after_the_deadline_before_the_sweep(tmp_path):
    config = make_project(tmp_path, {"eco": ECO.replace("10m", "1s")}, TEMPLATES)
    async with Harness(demo_settings(config, tmp_path)) as harness:
        await harness.send(PHONE, "eco")
        # The sweeper ran at start and sleeps 5 s: only the stored deadline
        # tells the engine this conversation expired.
        await asyncio.sleep(1.1)
        # In one message with the answer: they went as two.
        [reply] = texts(await harness.send(PHONE, "hola"))
        assert reply.startswith("Se acabó el tiempo, conductor.\n\n")
        assert "No entendí tu mensaje" in reply
        assert (await harness.conversation(PHONE)).flow is None


async def test_a_timeout_reply_has_the_values_of_any_reply(tmp_path):
    # It had the slots and an empty `name` only: `{{ driver_name }}` or
    # `{{ wa_id }}` passed `tracbot check` and sent the driver the apology.
    templates = {
        **TEMPLATES,
        "eco_expirado": "Se acabó el tiempo, {{ driver_name }} ({{ wa_id }}, "
        "{{ role }}); dijiste {{ slots.dicho|default('nada') }}.",
    }
    config = make_project(tmp_path, {"eco": ECO}, templates)
    async with Harness(demo_settings(config, tmp_path)) as harness:
        link = Link(
            PHONE, "C01", "15678234-3", "Camila Rojas", "driver", "rut", utcnow()
        )
        await harness.runtime.store.save_link(link)
        await harness.send(PHONE, "eco")
        assert texts(await harness.expire(PHONE)) == [
            f"Se acabó el tiempo, Camila Rojas ({PHONE}, driver); dijiste nada."
        ]


async def test_a_restart_notice_has_the_values_of_any_reply(tmp_path):
    # `migrate_reply` was rendered with nothing at all: `{{ name }}` sent
    # the apology, then the fresh start.
    flow = ECO + "migrate_reply: eco_reiniciado\n"
    templates = {**TEMPLATES, "eco_reiniciado": "{{ name }}, empezamos de nuevo."}
    config = make_project(tmp_path, {"eco": flow}, templates)
    async with Harness(demo_settings(config, tmp_path)) as harness:
        await harness.send(PHONE, "eco")
        conversation = await harness.conversation(PHONE)
        conversation.state, conversation.flow_version = "borrado", "old"
        store = harness.runtime.store
        await store.add_events(
            [NewInboxEvent("k.moved", "notice", PHONE, "1", {"kind": "notice"})]
        )
        pending = await store.next_event(PHONE)
        await store.commit_step(pending.id, conversation, [])

        [reply] = texts(await harness.send(PHONE, "hola"))
        assert reply.startswith("Conductor, empezamos de nuevo.\n\n")
