"""The event loop `tracbot serve` runs on (`server.event_loop`).

uvloop runs the same asyncio code on libuv: sockets, timers and callbacks
cost less, and this service spends much of its time there (two HTTP
exchanges a message, one in and one out). `auto` uses it when it is
installed (it is a dependency on Linux and macOS) and the stdlib loop
otherwise; `asyncio` keeps the stdlib loop; `uvloop` insists on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bot.errors import ConfigError

log = logging.getLogger("tracbot.app")

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `choice`, None for the stdlib loop.

    Raises:
        ConfigError: `uvloop` was asked for and is not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "server.event_loop is uvloop, but uvloop is not installed "
                "(pip install uvloop, or set server.event_loop: asyncio)"
            ) from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        loop = runner.get_loop()
        log.info("event loop %s", type(loop).__module__.split(".")[0])
        return runner.run(main)
