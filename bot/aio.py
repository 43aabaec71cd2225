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
