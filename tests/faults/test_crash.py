"""`kill -9` of the server in the middle of a load, then a restart.

Every reply arrives, and exactly once, except a reply whose request was
on the wire when the process died: Meta may have accepted it, and the Cloud
API has no idempotency key to ask, so it is sent again rather than risk
losing it. Those are the items the dead server left `sending`; the test
counts them in the database and allows no other duplicate.
"""

from __future__ import annotations

import asyncio

from tests.faults.harness import (
    FULL,
    SCALE,
    reads_per_wamid,
    replies,
    text_body,
    wait_for,
)

MESSAGES = 200 * SCALE
PHONES = 100 * SCALE
AFTER_RESTART = 60.0 if FULL else 20.0


async def post_all(stack, http, bodies, statuses):
    """Post every body not yet acknowledged, 16 at a time."""
    slots = asyncio.Semaphore(16)

    async def one(index):
        async with slots:
            statuses[index] = await stack.post(http, bodies[index])

    waiting = [i for i, status in enumerate(statuses) if status != 200]
    await asyncio.gather(*(one(i) for i in waiting))


async def test_kill_9_mid_load_then_restart_replies_once(stack_factory, http):
    stack = stack_factory()
    bodies = [text_body("crash", i, PHONES) for i in range(MESSAGES)]
    statuses: list[int | str] = [0] * MESSAGES

    # Kill the server once a quarter of the replies went out, while
    # webhooks are still arriving.
    posting = asyncio.create_task(post_all(stack, http, bodies, statuses))
    await wait_for(http, stack, lambda r: len(replies(r)) >= MESSAGES // 4)
    stack.bot.kill9()
    await posting
    in_flight = [row for row in stack.outbox() if row["status"] == "sending"]

    # Meta retries whatever was not answered 200.
    stack.start_bot()
    await post_all(stack, http, bodies, statuses)
    assert statuses == [200] * MESSAGES

    requests = await wait_for(
        http, stack, lambda r: len(replies(r)) >= MESSAGES, timeout=AFTER_RESTART
    )
    await asyncio.sleep(1.0)
    requests = await stack.sim_requests(http)

    per_phone = {}
    for reply in replies(requests):
        per_phone[reply["body"]["to"]] = per_phone.get(reply["body"]["to"], 0) + 1
    assert len(per_phone) == PHONES
    assert min(per_phone.values()) == MESSAGES // PHONES
    extra_replies = sum(per_phone.values()) - MESSAGES
    reads = reads_per_wamid(requests)
    assert len(reads) == MESSAGES and min(reads.values()) == 1
    extra_reads = sum(reads.values()) - MESSAGES
    assert extra_replies + extra_reads <= len(in_flight)
