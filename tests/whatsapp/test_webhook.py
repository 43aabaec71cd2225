"""The webhook over real HTTP: handshake, signatures, redelivery, restart."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time

import pytest
from aiohttp import web

from bot.app import create_app
from tests.support import (
    VERIFY_TOKEN,
    corpus,
    demo_settings,
    driver_says,
    runtime_of,
    sent_texts,
    settle,
    signed_headers,
)

CAMILA = "56911120011"


async def test_handshake_echoes_the_challenge_with_the_right_token(
    aiohttp_client, tmp_path
):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    response = await client.get("/webhook", params=params)
    assert response.status == 200
    assert await response.text() == "1158201444"
    assert response.content_type == "text/plain"


async def test_handshake_refuses_a_wrong_token(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": "not-the-token",
        "hub.challenge": "1158201444",
    }
    response = await client.get("/webhook", params=params)
    assert response.status == 403
    assert "1158201444" not in await response.text()


async def test_handshake_without_a_challenge_says_so(aiohttp_client, tmp_path):
    # It answered an empty 200, which looks like a verified endpoint.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}
    response = await client.get("/webhook", params=params)
    assert response.status == 400
    assert await response.text() == "hub.challenge missing"


async def test_tampered_body_is_refused_and_not_stored(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    body = corpus("text_simple.json")
    headers = signed_headers(body)
    tampered = body.replace(b"Ayuda", b"Ayudo")

    response = await client.post("/webhook", data=tampered, headers=headers)

    assert response.status == 401
    runtime = runtime_of(client)
    assert await runtime.store.pending_count() == 0
    assert await runtime.store.outbox_items() == []


async def test_missing_signature_is_refused(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    response = await client.post(
        "/webhook",
        data=corpus("text_simple.json"),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 401
    assert await runtime_of(client).store.pending_count() == 0


async def test_signature_with_another_secret_is_refused(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    body = corpus("text_simple.json")
    response = await client.post(
        "/webhook", data=body, headers=signed_headers(body, "another-secret")
    )
    assert response.status == 401


async def test_redelivered_message_gets_one_reply(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus("text_simple.json")

    for _ in range(3):
        response = await client.post(
            "/webhook", data=body, headers=signed_headers(body)
        )
        assert response.status == 200
        await settle(runtime)

    assert len(sent_texts(runtime, CAMILA)) == 1
    messages = [i for i in await runtime.store.outbox_items(CAMILA)]
    assert [i.kind for i in messages] == ["read", "message"]


async def test_ayuda_is_answered_and_marked_read(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus("text_simple.json")

    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)

    [reply] = sent_texts(runtime, CAMILA)
    assert reply.startswith("📱 *Comandos Disponibles:*")
    assert "AYUDA" in reply
    reads = [
        r["body"]
        for r in runtime.simulator.received
        if r["body"] and r["body"].get("status") == "read"
    ]
    inbound = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]
    assert [r["message_id"] for r in reads] == [inbound["id"]]


async def test_event_stored_before_a_crash_is_processed_after_restart(
    aiohttp_client, tmp_path
):
    settings = demo_settings(tmp_path)
    body = corpus("text_simple.json")

    # First life: the webhook stores the event, but nothing processes it
    # before the process goes away.
    first = await aiohttp_client(create_app(settings, background=False))
    response = await first.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    assert await runtime_of(first).store.pending_count() == 1
    await first.close()

    # Second life on the same database: the stored event is answered once.
    second = await aiohttp_client(create_app(settings))
    runtime = runtime_of(second)
    await settle(runtime)
    assert len(sent_texts(runtime, CAMILA)) == 1
    assert await runtime.store.pending_count() == 0


async def test_body_over_the_limit_is_refused_and_counted(aiohttp_client, tmp_path):
    app: web.Application = create_app(demo_settings(tmp_path))
    client = await aiohttp_client(app)
    body = b'{"object": "whatsapp_business_account", "pad": "' + b"x" * (5 * 1024**2)
    body += b'"}'
    headers = signed_headers(body)
    response = await client.post("/webhook", data=io.BytesIO(body), headers=headers)
    assert response.status == 413
    # The operator's count of answers has it (it had only 200 and 401).
    metrics = await (await client.get("/metrics")).text()
    assert 'tracbot_webhook_requests_total{outcome="413"} 1' in metrics


SIGNED = signed_headers(corpus("text_simple.json"))["X-Hub-Signature-256"].encode()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # A body that is not the gzip it says: aiohttp's RequestPayloadError.
        ([b"Content-Encoding: gzip", b"X-Hub-Signature-256: " + SIGNED], b"400"),
        # compare_digest raised TypeError on non-ASCII text.
        ([b"X-Hub-Signature-256: sha256=zz\xe9"], b"401"),
        ([b"X-Hub-Signature-256: " + "sha256=zzé".encode()], b"401"),
    ],
)
async def test_hostile_bytes_get_an_answer_not_a_crash(
    aiohttp_client, tmp_path, caplog, headers, status
):
    # Each answered 500, "Server got itself in trouble", with a traceback.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    assert await raw_post(client, headers, corpus("text_simple.json")) == status
    # Our warning says it all: no traceback of aiohttp's after it (it went
    # on reading the body it could not decode, once the answer had left).
    await asyncio.sleep(0.05)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []

    assert await runtime_of(client).store.pending_count() == 0
    metrics = await (await client.get("/metrics")).text()
    count = f'tracbot_webhook_requests_total{{outcome="{status.decode()}"}} 1'
    assert count in metrics


async def raw_post(client, headers: list[bytes], body: bytes) -> bytes:
    """POST bytes no HTTP client would send; return the answer's status."""
    head = [
        b"POST /webhook HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
        *headers,
    ]
    reader, writer = await asyncio.open_connection(
        client.server.host, client.server.port
    )
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    status = (await reader.readline()).split()[1]
    writer.close()
    return status


def without_phone(name: str, key: str, field: str) -> bytes:
    """A corpus body whose first message or status names its user by the
    business-scoped id alone, as users with a username may arrive."""
    data = json.loads(corpus(name))
    value = data["entry"][0]["changes"][0]["value"]
    item = value[key][0]
    item[f"{field}_user_id"] = "CL.4820193746518203"
    del item["from" if field == "from" else "recipient_id"]
    value.pop("contacts", None)
    return json.dumps(data).encode()


async def test_a_message_without_a_phone_number_is_stored_not_lost(
    aiohttp_client, tmp_path, caplog
):
    # It was dropped at the parser: nothing stored, a 200 all the same.
    caplog.set_level(logging.WARNING, logger="tracbot")
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = without_phone("text_simple.json", "messages", "from")

    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    await settle(runtime)

    # Stored (a redelivery adds nothing), handled, and nothing sent to nobody.
    again = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert again.status == 200
    assert await runtime.store.pending_count() == 0
    assert runtime.simulator.received == []
    [warning] = [
        r.getMessage() for r in caplog.records if "not answered" in r.getMessage()
    ]
    assert "sender=…8203" in warning and "type=text" in warning
    assert "4820193746518203" not in warning


async def test_a_status_naming_its_recipient_by_user_id_moves_the_message(
    aiohttp_client, tmp_path
):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus("text_simple.json")
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)
    [reply] = [i for i in await runtime.store.outbox_items(CAMILA) if i.kind != "read"]

    status = json.loads(
        without_phone("status_read_no_pricing.json", "statuses", "recipient")
    )
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = reply.wamid
    body = json.dumps(status).encode()
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    await settle(runtime)

    [after] = [i for i in await runtime.store.outbox_items(CAMILA) if i.id == reply.id]
    assert after.status == "read"


def sent_at(name: str, timestamp: int) -> bytes:
    data = json.loads(corpus(name))
    data["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = str(timestamp)
    return json.dumps(data).encode()


async def test_the_window_counts_from_when_the_driver_wrote_not_from_arrival(
    aiohttp_client, tmp_path
):
    # Meta redelivers for days after an outage: a message written three days
    # ago opened the window at its arrival, and the free-form reply would be
    # refused with 131047.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    written = int(time.time()) - 3 * 24 * 3600
    body = sent_at("text_simple.json", written)

    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)

    conversation = await runtime.store.load_conversation(CAMILA)
    assert conversation.last_inbound_at.timestamp() == written
    sends = [r["body"] for r in runtime.simulator.received if r["body"]]
    assert [b["type"] for b in sends if b.get("to") == CAMILA] == ["template"]

    # A newer message opens it; the old one redelivered after it moves nothing.
    now = int(time.time())
    newer = sent_at("text_simple.json", now).replace(b"wamid.", b"wamid.N", 1)
    await client.post("/webhook", data=newer, headers=signed_headers(newer))
    await settle(runtime)
    older = body.replace(b"wamid.", b"wamid.O", 1)
    await client.post("/webhook", data=older, headers=signed_headers(older))
    await settle(runtime)
    conversation = await runtime.store.load_conversation(CAMILA)
    assert abs(conversation.last_inbound_at.timestamp() - now) <= 1


async def test_a_lone_half_emoji_deep_inside_a_body_is_a_200(aiohttp_client, tmp_path):
    # Deep enough for the decoder, too deep for the walk that mends the
    # half emoji: a 500 with a 1,500-line traceback, for a signed body.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    depth = sys.getrecursionlimit() - 100
    body = b'{"a":"\\ud800","b":' + b"[" * depth + b"]" * depth + b"}"
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200


async def test_a_number_change_takes_the_conversation_along(aiohttp_client, tmp_path):
    # The link moved and the conversation stayed behind: a driver asked for
    # her location had to start over from the new number.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    old, new = "56911120019", "56911120029"  # as in system_number_changed.json
    assert await driver_says(client, old, "ubicacion") == 200
    await settle(runtime)
    asked = await runtime.store.load_conversation(old)
    assert asked.flow == "ubicacion" and asked.state is not None

    body = corpus("system_number_changed.json")
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)

    moved = await runtime.store.load_conversation(new)
    assert (moved.flow, moved.state) == ("ubicacion", asked.state)
    assert (await runtime.store.load_conversation(old)).flow is None
