"""Linking a number with the RUT through the whole service: the order of
quick messages, RUTs already linked, the attempts log and admin numbers."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path

from bot.app import create_app
from bot.config import Settings
from tests.support import demo_settings, runtime_of, sent_texts, settle, signed_headers

NEW_PHONE = "56911113400"


def _text_body(wa_id: str, text: str, n: int) -> bytes:
    message = {
        "from": wa_id,
        "id": f"wamid.linking.{wa_id}.{n}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": "56220000000",
            "phone_number_id": "200000000000002",
        },
        "contacts": [{"profile": {"name": "Conductor"}, "wa_id": wa_id}],
        "messages": [message],
    }
    change = {"field": "messages", "value": value}
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000001", "changes": [change]}],
    }
    return json.dumps(body, ensure_ascii=False).encode()


async def _client(aiohttp_client, settings: Settings):
    client = await aiohttp_client(create_app(settings))
    counter = iter(range(1, 1000))

    async def say(wa_id: str, *texts: str, wait: bool = True) -> None:
        for text in texts:
            body = _text_body(wa_id, text, next(counter))
            response = await client.post(
                "/webhook", data=body, headers=signed_headers(body)
            )
            assert response.status == 200
        if wait:
            await settle(runtime_of(client))

    return runtime_of(client), say


def _attempts(tmp_path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(tmp_path / "tracbot.db")
    return db.execute(
        "SELECT wa_id, rut, outcome FROM link_attempts ORDER BY id"
    ).fetchall()


async def test_two_messages_before_the_first_is_answered(aiohttp_client, tmp_path):
    runtime, say = await _client(aiohttp_client, demo_settings(tmp_path))
    await say(NEW_PHONE, "vincular")
    await say(NEW_PHONE, "12.345.678-5", "si")

    texts = sent_texts(runtime, NEW_PHONE)
    assert len(texts) == 3
    assert "*Pedro Soto*" in texts[1] and "quedó vinculado" in texts[2]
    link = await runtime.store.get_link(NEW_PHONE)
    assert (link.driver_id, link.rut, link.method) == ("C14", "12345678-5", "rut")
    # The name shown, then the link made.
    assert _attempts(tmp_path) == [
        (NEW_PHONE, "12345678-5", "found"),
        (NEW_PHONE, "12345678-5", "ok"),
    ]


async def test_a_rut_linked_to_another_number_is_refused(aiohttp_client, tmp_path):
    runtime, say = await _client(aiohttp_client, demo_settings(tmp_path))
    # Camila writes first: her phone is on file, so it is linked to her.
    await say("56911120011", "estado")
    await say(NEW_PHONE, "vincular", "15.678.234-3")

    last = sent_texts(runtime, NEW_PHONE)[-1]
    assert "ya está vinculado a otro número" in last
    assert await runtime.store.get_link(NEW_PHONE) is None
    assert (await runtime.store.get_link("56911120011")).driver_id == "C01"
    assert _attempts(tmp_path) == [(NEW_PHONE, "15678234-3", "taken")]


async def test_wrong_attempts_are_recorded_and_limited(aiohttp_client, tmp_path):
    runtime, say = await _client(aiohttp_client, demo_settings(tmp_path))
    await say(NEW_PHONE, "vincular", "11.111.111-1", "12.345.678-5", "no")
    await say(NEW_PHONE, "vincular", "22.333.444-4")

    # The "no" is written down; the name shown before it is what counts.
    outcomes = [outcome for _, _, outcome in _attempts(tmp_path)]
    assert outcomes == ["unknown", "found", "denied", "invalid"]
    assert "demasiados intentos" in sent_texts(runtime, NEW_PHONE)[-1]

    # Paused for everything, a correct RUT included, until the hour passes.
    await say(NEW_PHONE, "vincular")
    assert "demasiados intentos" in sent_texts(runtime, NEW_PHONE)[-1]
    assert await runtime.store.get_link(NEW_PHONE) is None


async def test_names_cannot_be_looked_up_without_limit(aiohttp_client, tmp_path):
    # A RUT, its driver's name shown, CANCELAR, again: the "no" that counted
    # as a wrong attempt was never given, and any number could read the
    # names of every RUT it tried.
    runtime, say = await _client(aiohttp_client, demo_settings(tmp_path))
    for rut in ("12.345.678-5", "15.678.234-3", "10.000.013-K"):
        await say(NEW_PHONE, "vincular", rut, "cancelar")
    await say(NEW_PHONE, "vincular")

    texts = sent_texts(runtime, NEW_PHONE)
    assert sum("Encontré a" in text for text in texts) == 2
    assert "demasiados intentos" in texts[-1]


async def test_a_thanks_at_the_question_asks_it_again(aiohttp_client, tmp_path):
    # Small talk never ends a question left open: "gracias" ended the
    # linking with "¡De nada!", and the "sí" after it was a new message.
    runtime, say = await _client(aiohttp_client, demo_settings(tmp_path))
    await say(NEW_PHONE, "vincular", "12.345.678-5", "gracias")
    assert "Sí, soy yo" in str(runtime.simulator.received[-1]["body"])
    assert (await runtime.store.load_conversation(NEW_PHONE)).state == "confirmar"

    await say(NEW_PHONE, "👍")
    assert "quedó vinculado" in sent_texts(runtime, NEW_PHONE)[-1]
    assert (await runtime.store.get_link(NEW_PHONE)).driver_id == "C14"


async def test_configured_admin_number_gets_the_admin_commands(
    aiohttp_client, tmp_path
):
    settings = demo_settings(tmp_path)
    business = {**settings.raw["business"], "admins": ["+56 9 1111 3400"]}
    settings = dataclasses.replace(settings, raw={**settings.raw, "business": business})
    runtime, say = await _client(aiohttp_client, settings)
    await say(NEW_PHONE, "ayuda", "resumen")

    ayuda, resumen = sent_texts(runtime, NEW_PHONE)
    assert "• RESUMEN" in ayuda and "• ESTADO" in ayuda
    assert "Mensajes recibidos: 2" in resumen
