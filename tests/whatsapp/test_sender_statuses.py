"""Status webhooks from the payload corpus applied to the message log."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bot.whatsapp.events import StatusUpdate
from bot.whatsapp.messages import template_body
from bot.whatsapp.payloads import parse_body
from bot.whatsapp.statuses import record_status
from storage.base import NewOutbound
from storage.sqlite import SqliteStore
from tests.support import corpus

NUMBER = "200000000000002"
OUT_HELP_CAMILA = "wamid.HBgLNTY5MTExMjAwMTEVAgARGBI3MjA3MEUyQTRDMDU2QTI0NkEA"
OUT_TEXT_FRANCISCA = "wamid.HBgLNTY5MTExMjAwMTUVAgARGBJBMEREQTlERjVCMTg5MUE0QTMA"


@pytest.fixture
async def store(tmp_path):
    async with SqliteStore(f"sqlite:///{tmp_path}/statuses.db") as store:
        yield store


def statuses(name: str) -> list[StatusUpdate]:
    parsed = parse_body(json.loads(corpus(name)))
    return [event for event in parsed.events if isinstance(event, StatusUpdate)]


async def sent(store, wa_id: str, wamid: str, fallback: dict | None = None) -> int:
    body = {"to": wa_id, "type": "text", "text": {"body": "hola"}}
    [item_id] = await store.enqueue(
        [NewOutbound(wa_id, NUMBER, "message", body, fallback=fallback)]
    )
    await store.due_outbox()
    await store.mark_sent(item_id, wamid, "accepted")
    return item_id


@pytest.mark.parametrize(
    "order",
    [
        [
            "status_sent_pmp.json",
            "status_delivered.json",
            "status_read_no_pricing.json",
        ],
        [
            "status_read_no_pricing.json",
            "status_delivered.json",
            "status_sent_pmp.json",
        ],
        [
            "status_delivered.json",
            "status_read_no_pricing.json",
            "status_sent_pmp.json",
        ],
    ],
)
async def test_status_only_moves_forward_whatever_the_order(store, order):
    item_id = await sent(store, "56911120011", OUT_HELP_CAMILA)
    seen = []

    for name in order:
        for status in statuses(name):
            assert await record_status(store, status)
        [item] = await store.outbox_items()
        seen.append(item.status)

    assert seen[-1] == "read"
    ranks = ["accepted", "sent", "delivered", "read"]
    assert [ranks.index(s) for s in seen] == sorted(ranks.index(s) for s in seen)
    assert item.id == item_id


async def test_failed_131047_keeps_code_and_sends_template_once(store):
    fallback = template_body("56911120015", "mensaje_tracmin", "es", ["hola"])
    item_id = await sent(store, "56911120015", OUT_TEXT_FRANCISCA, fallback)
    [status] = statuses("status_failed_131047.json")

    assert await record_status(store, status)
    assert await record_status(store, status)  # a redelivery, or a replay

    original, template = await store.outbox_items()
    assert original.status == "failed" and original.error_code == 131047
    assert original.error_detail.startswith("Message failed to send because more")
    assert template.fallback_of == item_id and template.status == "queued"
    assert template.body["type"] == "template"


@pytest.mark.parametrize("reached", ["delivered", "read"])
async def test_a_late_131047_after_delivery_sends_no_template(store, reached):
    # The template went out: the driver got again what they had read.
    fallback = template_body("56911120015", "mensaje_tracmin", "es", ["hola"])
    await sent(store, "56911120015", OUT_TEXT_FRANCISCA, fallback)
    [failed] = statuses("status_failed_131047.json")
    before = dataclasses.replace(failed, status=reached, errors=())

    assert await record_status(store, before)
    assert await record_status(store, failed)

    [original] = await store.outbox_items()
    assert original.status == ("read" if reached == "read" else "failed")


async def test_unknown_wamid_is_skipped_and_the_rest_applies(store):
    # One body: a status for a message we never sent, and a message.
    parsed = parse_body(json.loads(corpus("messages_and_statuses_one_post.json")))
    [status] = [e for e in parsed.events if isinstance(e, StatusUpdate)]

    assert await record_status(store, status) is False
    assert len(parsed.events) == 2
    assert await store.outbox_items() == []
