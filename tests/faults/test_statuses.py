"""Status webhooks in every order end in the right final status.

For every ordering of every non-empty subset of sent, delivered, read and
failed, one reply is sent and its statuses are posted in that order. Read
is final once seen; failed is final unless a later delivered or read comes
from another device (CLOUD_API.md §3); otherwise the furthest step wins.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from bench import procs
from bench.webhooks import phone
from bot.whatsapp.simulator_webhooks import status_webhook
from tests.faults.harness import replies, replies_per_phone, text_body, wait_for

STATUSES = ("sent", "delivered", "read", "failed")
ORDERS = [
    order
    for size in range(1, len(STATUSES) + 1)
    for order in itertools.permutations(STATUSES, size)
]


def expected(order: tuple[str, ...]) -> str:
    if "read" in order:
        return "read"
    if "failed" in order:
        late_delivery = "delivered" in order and order.index("delivered") > order.index(
            "failed"
        )
        return "delivered" if late_delivery else "failed"
    return "delivered" if "delivered" in order else "sent"


def status_body(wamid: str, status: str, to: str) -> bytes:
    body = status_webhook(
        waba_id="100000000000001",
        display_phone_number="56220000000",
        phone_number_id=procs.PHONE_NUMBER_ID,
        wamid=wamid,
        status=status,
        to=to,
    )
    if status == "failed":
        error = {
            "code": 131047,
            "title": "Re-engagement message",
            "error_data": {"details": "Message failed to send."},
        }
        body["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"] = [error]
    return json.dumps(body, separators=(",", ":")).encode()


async def test_every_order_of_statuses_ends_in_the_right_status(stack_factory, http):
    stack = stack_factory(overrides={"whatsapp.mark_read": False})
    phones = len(ORDERS)

    for i in range(phones):
        assert await stack.post(http, text_body("st", i, phones)) == 200
    requests = await wait_for(http, stack, lambda r: len(replies(r)) >= phones)
    wamid_of = {r["body"]["to"]: r["wamid"] for r in replies(requests)}

    async def post_in_order(i: int, order: tuple[str, ...]) -> None:
        to = phone(i)
        for status in order:
            assert await stack.post(http, status_body(wamid_of[to], status, to)) == 200

    await asyncio.gather(*(post_in_order(i, o) for i, o in enumerate(ORDERS)))

    # A second message of every phone is handled after its statuses (per
    # phone order): once it is answered, every status was applied.
    for i in range(phones):
        assert await stack.post(http, text_body("st2", i, phones)) == 200
    await wait_for(http, stack, lambda r: min(replies_per_phone(r).values()) >= 2)

    final = {row["wamid"]: row["status"] for row in stack.outbox()}
    got = {order: final[wamid_of[phone(i)]] for i, order in enumerate(ORDERS)}
    assert got == {order: expected(order) for order in ORDERS}
