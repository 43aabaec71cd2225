"""The Graph API refusing in storms: nothing lost, the rate never exceeded.

The simulator answers bursts of 130429 (throughput), HTTP 429 and 500 from
a proxy, and 131000; then, in another test, a 190 (expired token) that
must hold the queue until an operator restarts with a valid token.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.faults.harness import (
    SCALE,
    replies,
    replies_per_phone,
    text_body,
    wait_for,
)

RATE = 20
STORMY = {
    "whatsapp.mark_read": False,
    "sender.rate_per_second": RATE,
    "sender.max_attempts": 100,
    "sender.backoff_seconds": 0.05,
    "sender.backoff_max_seconds": 0.3,
}


def busiest_second(requests: list[dict]) -> int:
    """The most requests that arrived within any one second."""
    times = sorted(r["at"] for r in requests)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_error_storms_lose_nothing_and_keep_the_rate(stack_factory, http):
    stack = stack_factory(overrides=STORMY)
    phones = 20 * SCALE
    storm = {130429: 5 * SCALE, 429: 5 * SCALE, 500: 5 * SCALE, 131000: 3 * SCALE}
    for code, times in storm.items():
        await stack.sim_control(http, "fail", {"code": code, "times": times})

    for i in range(phones):
        assert await stack.post(http, text_body("storm", i, phones)) == 200
    requests = await wait_for(
        http, stack, lambda r: len(replies(r)) >= phones, timeout=60 * SCALE
    )

    refused = Counter(r["code"] or r["status"] for r in requests if not r["wamid"])
    assert refused == storm
    assert set(replies_per_phone(requests).values()) == {1}
    assert len(replies_per_phone(requests)) == phones
    # The limiter spaces every attempt, refused ones included.
    assert busiest_second(requests) <= RATE + 1


async def test_expired_token_holds_the_queue_until_a_restart(stack_factory, http):
    stack = stack_factory(overrides=STORMY)
    phones = 5
    await stack.sim_control(http, "fail", {"code": 190, "times": 1})

    for i in range(phones):
        assert await stack.post(http, text_body("token", i, phones)) == 200
    await wait_for(http, stack, lambda r: any(x["code"] == 190 for x in r))

    # Held, not burnt: every reply is in the outbox, none given up. The
    # dispatcher may still be committing the last ones when the 190 comes.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len(stack.outbox()) >= phones:
            break
        await asyncio.sleep(0.1)
    statuses = Counter(row["status"] for row in stack.outbox())
    assert statuses["failed"] == 0
    assert statuses["queued"] + statuses["sending"] + statuses["accepted"] == phones

    stack.bot.stop()
    stack.start_bot()
    requests = await wait_for(http, stack, lambda r: len(replies(r)) >= phones)
    assert set(replies_per_phone(requests).values()) == {1}
