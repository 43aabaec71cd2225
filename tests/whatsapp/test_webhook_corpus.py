"""Every body of shared/webhooks/, posted signed as its exact bytes.

For each: 200, every event recorded, no error logged, and the replies a
driver may read: one per user message to our number, none for statuses,
reactions, system messages or other fields, and never an empty, `None`,
templated or over-long text.
"""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from bot.app import create_app
from bot.whatsapp.events import InboundMessage, to_json
from bot.whatsapp.limits import MAX_TEXT
from bot.whatsapp.payloads import parse_body
from storage.base import NewInboxEvent
from tests.support import (
    WEBHOOKS,
    corpus,
    demo_settings,
    driver_says,
    runtime_of,
    sent_texts,
    settle,
    signed_headers,
)

BODIES = sorted(
    p.name for p in WEBHOOKS.glob("*.json") if not p.name.startswith("graph_")
)
OUR_NUMBER = "200000000000002"
SILENT_TYPES = {"reaction", "system"}


def expected_replies(name: str) -> int:
    """One reply per user message sent to our number; nothing else.

    Each body meets a fresh bot: a message that opens no 24-hour window (a
    poll, an unknown type) finds none open, and its reply would be a paid
    template, so it gets none.
    """
    events = parse_body(json.loads(corpus(name))).events
    return sum(
        1
        for e in events
        if isinstance(e, InboundMessage)
        and e.type not in SILENT_TYPES
        and e.opens_window
        and e.phone_number_id == OUR_NUMBER
    )


def template_texts(runtime) -> list[str]:
    """The parameters of the templates the simulator accepted."""
    return [
        parameter["text"]
        for request in runtime.simulator.received
        if request["status"] == 200 and request["body"].get("type") == "template"
        for component in request["body"]["template"].get("components", [])
        for parameter in component["parameters"]
    ]


def test_the_corpus_is_there():
    # Without the shared corpus every parametrized test below would vanish.
    assert len(BODIES) >= 29


@pytest.mark.parametrize("name", BODIES)
async def test_corpus_body(name, aiohttp_client, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tracbot")
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus(name)

    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    await settle(runtime)

    # Every event is in the inbox: storing them again adds nothing.
    events = parse_body(json.loads(body)).events
    assert events, f"{name} parsed into no events"
    again = [
        NewInboxEvent(e.key, e.kind, e.wa_id, e.phone_number_id, to_json(e))
        for e in events
    ]
    assert await runtime.store.add_events(again) == 0

    texts = sent_texts(runtime) + template_texts(runtime)
    assert len(texts) == expected_replies(name)
    for text in texts:
        assert text.strip()
        assert len(text) <= MAX_TEXT
        for leak in ("None", "{{", "}}", "Traceback", "{%"):
            assert leak not in text

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


async def test_a_poll_is_answered_free_in_an_open_window_and_never_as_a_template(
    aiohttp_client, tmp_path
):
    # With no window open, the answer to a poll went out as a paid template.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus("unsupported_type.json")
    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)
    assert sent_texts(runtime) == template_texts(runtime) == []

    # Once the driver has written, the window is open: the answer is free.
    assert await driver_says(client, "56911120026", "hola") == 200
    again = body.replace(b"wamid.HBgLNTY5", b"wamid.HBgLNTZ5")
    await client.post("/webhook", data=again, headers=signed_headers(again))
    await settle(runtime)
    assert len(sent_texts(runtime, "56911120026")) == 2
    assert template_texts(runtime) == []


async def test_very_long_text_is_stored_whole_and_not_echoed(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus("text_very_long.json")
    original = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]

    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)

    [event] = parse_body(json.loads(body)).events
    assert len(event.text) == len(original["text"]["body"]) > MAX_TEXT
    [reply] = sent_texts(runtime)
    assert original["text"]["body"][:200] not in reply


async def test_batch_gets_one_reply_per_message(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus("batch_two_messages_one_post.json")

    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)

    messages = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"]
    wa_id = messages[0]["from"]
    reads = {
        r["body"]["message_id"]
        for r in runtime.simulator.received
        if r["body"] and r["body"].get("status") == "read"
    }
    assert reads == {m["id"] for m in messages}
    assert len(sent_texts(runtime, wa_id)) == 2


async def test_second_business_number_is_recorded_but_not_answered(
    aiohttp_client, tmp_path
):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    body = corpus("two_entries.json")

    await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)

    senders = {r["phone_number_id"] for r in runtime.simulator.received}
    assert senders == {OUR_NUMBER}
    recipients = {
        r["body"]["to"] for r in runtime.simulator.received if "to" in r["body"]
    }
    entries = json.loads(body)["entry"]
    second = entries[1]["changes"][0]["value"]["messages"][0]["from"]
    assert second not in recipients


async def test_messages_of_one_post_are_queued_in_timestamp_order(
    aiohttp_client, tmp_path
):
    # No dispatcher runs: the inbox order itself is what is checked, since
    # it is the order in which a phone's messages are processed.
    app = create_app(demo_settings(tmp_path), background=False)
    client = await aiohttp_client(app)
    store = runtime_of(client).store
    data = json.loads(corpus("batch_two_messages_one_post.json"))
    messages = data["entry"][0]["changes"][0]["value"]["messages"]
    messages.reverse()
    body = json.dumps(data).encode()

    await client.post("/webhook", data=body, headers=signed_headers(body))

    by_time = sorted(messages, key=lambda m: int(m["timestamp"]))
    assert [m["id"] for m in messages] != [m["id"] for m in by_time]
    order = []
    while (event := await store.next_event(messages[0]["from"])) is not None:
        order.append(event.payload["wamid"])
        await store.commit_step(event.id, None, [])
    assert order == [m["id"] for m in by_time]


@pytest.mark.parametrize("escaped", [True, False], ids=["escaped", "raw utf-8"])
async def test_half_an_emoji_loses_neither_message_of_its_post(
    aiohttp_client, tmp_path, escaped
):
    # `hola` ends in the first half of a surrogate pair, alone: as JSON's
    # `\ud83d` escape, or as the three bytes a careless encoder writes.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    data = json.loads(corpus("batch_two_messages_one_post.json"))
    messages = data["entry"][0]["changes"][0]["value"]["messages"]
    messages[0]["text"]["body"] = "hola \ud83d"
    if escaped:
        body = json.dumps(data).encode()
    else:
        body = json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")

    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime)

    assert response.status == 200
    with sqlite3.connect(tmp_path / "tracbot.db") as db:
        payloads = db.execute("SELECT payload FROM inbox WHERE kind = 'message'")
        texts = [json.loads(payload)["text"] for (payload,) in payloads]
    assert sorted(texts) == ["guia", "hola \ufffd"]
    assert len(sent_texts(runtime, messages[0]["from"])) == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_nul_in_a_wamid_or_a_phone_is_stored_not_refused_forever(
    aiohttp_client, tmp_path, request, backend
):
    # PostgreSQL refuses NUL in text: a 503 for that POST every time Meta
    # sent it again, and /readyz not ready while it was the last webhook.
    env = {}
    if backend == "postgresql":
        env["TRACBOT_STORAGE_URL"] = request.getfixturevalue("postgres_db").dsn
    client = await aiohttp_client(create_app(demo_settings(tmp_path, **env)))
    data = json.loads(corpus("text_simple.json"))
    value = data["entry"][0]["changes"][0]["value"]
    value["messages"][0]["id"] = "wamid.nul\u0000"
    value["messages"][0]["from"] = value["contacts"][0]["wa_id"] = "5691111\u00008888"
    body = json.dumps(data).encode()
    assert b"\\u0000" in body

    response = await client.post("/webhook", data=body, headers=signed_headers(body))

    assert response.status == 200
    assert (await client.get("/readyz")).status == 200
