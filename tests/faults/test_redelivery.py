"""Meta delivers at least once: the same wamid five times is one reply."""

from __future__ import annotations

import asyncio

from tests.faults.harness import (
    reads_per_wamid,
    replies_per_phone,
    text_body,
    wait_for,
)
from tests.support import corpus

CAMILA = "56911120011"
CAMILA_WAMID = "wamid.HBgLNTY5MTExMjAwMTEVAgASGBQwNTgxMERENjg3NkZDMDQ2MkUxRAA="


async def test_same_wamid_five_times_gives_one_reply(stack_factory, http):
    stack = stack_factory()
    body = corpus("text_simple.json")

    # Two in a row, then three at the same time, as Meta's retries overlap.
    first = [await stack.post(http, body) for _ in range(2)]
    rest = await asyncio.gather(*(stack.post(http, body) for _ in range(3)))
    assert first + list(rest) == [200] * 5

    # A later message of the same phone is handled after every copy (per
    # phone order), so its reply means the copies were all handled.
    later = text_body("dup", 1, 1, text="hola").replace(
        b'"56990000000"', f'"{CAMILA}"'.encode()
    )
    assert await stack.post(http, later) == 200
    requests = await wait_for(http, stack, lambda r: replies_per_phone(r)[CAMILA] >= 2)

    assert replies_per_phone(requests)[CAMILA] == 2
    assert reads_per_wamid(requests)[CAMILA_WAMID] == 1
