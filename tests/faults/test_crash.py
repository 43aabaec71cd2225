"""`kill -9` of the server in the middle of a load, then a restart.

Every reply arrives, and exactly once. The replies the dead server had on
the wire may have reached Meta: they wait RESEND_WAIT after the restart,
and the statuses of those Meta had (posted again by the simulator while
the server was down, as Meta does) find them by their callback data, so
they are not sent again. Read marks carry no callback data: one the dead
server had on the wire may go twice, and no other.
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
# RESEND_WAIT (30 s), then the rest of the load.
AFTER_RESTART = 90.0 if FULL else 60.0


async def post_all(stack, http, bodies, statuses):
    """Post every body not yet acknowledged, 16 at a time."""
    slots = asyncio.Semaphore(16)

    async def one(index):
        async with slots:
            statuses[index] = await stack.post(http, bodies[index])

    waiting = [i for i, status in enumerate(statuses) if status != 200]
    await asyncio.gather(*(one(i) for i in waiting))


async def test_kill_9_mid_load_then_restart_replies_once(stack_factory, http):
    # A Graph API that takes its time: the kill finds replies on the wire.
    stack = stack_factory(statuses=True, graph_delay=0.3)
    bodies = [text_body("crash", i, PHONES) for i in range(MESSAGES)]
    statuses: list[int | str] = [0] * MESSAGES

    # Kill the server once a quarter of the replies went out, while
    # webhooks are still arriving.
    posting = asyncio.create_task(post_all(stack, http, bodies, statuses))
    await wait_for(http, stack, lambda r: len(replies(r)) >= MESSAGES // 4)
    stack.bot.kill9()
    await posting
    in_flight = [row for row in stack.outbox() if row["status"] == "sending"]
    assert [row for row in in_flight if row["kind"] == "message"], "none in flight"

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
    assert sum(per_phone.values()) == MESSAGES
    reads = reads_per_wamid(requests)
    assert len(reads) == MESSAGES and min(reads.values()) == 1
    extra_reads = sum(reads.values()) - MESSAGES
    assert extra_reads <= len([row for row in in_flight if row["kind"] == "read"])
