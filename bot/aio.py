"""Small asyncio helpers shared by the background loops."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass, whichever comes first.

    Until Python 3.12, `asyncio.wait_for` can swallow a cancellation that
    lands just as the event is set (CPython gh-86296), and a loop asked to
    stop would go on polling; `asyncio.timeout` re-raises it.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def gather(seconds: float) -> None:
    """After a wake-up, let what comes in the next `seconds` join the work.

    Messages that arrive apart each paid for a sweep, a take, a transaction
    and a round of wake-ups of their own: at 600 messages/s that cost a
    third more CPU than the same messages handled a few at a time
    (`python -m bench --rows rate_600`). A few milliseconds of waiting
    lets them share all of it; a driver does not notice them.
    """
    if seconds > 0:
        await asyncio.sleep(seconds)
