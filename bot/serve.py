"""`tracbot serve`: run the service until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from bot.app import create_app
from bot.config import Settings
from bot.console import banner
from bot.whatsapp.client import SendResult
from storage.base import OutboxItem

log = logging.getLogger("tracbot.app")

LOOPBACK = "127.0.0.1"


async def serve(
    settings: Settings, host: str | None = None, port: int | None = None
) -> None:
    """Serve the webhook and run the bot until a stop signal."""
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    if settings.demo and host != LOOPBACK:
        # Demo secrets are public; a demo must not be reachable from outside.
        log.warning("demo mode binds to %s only (asked for %s)", LOOPBACK, host)
        host = LOOPBACK

    on_sent = _print_message if settings.demo else None
    runner = web.AppRunner(create_app(settings, on_sent=on_sent))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    _announce(settings, host, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await runner.cleanup()


def _print_message(item: OutboxItem, result: SendResult | None) -> None:
    if item.kind == "message":
        print(banner(item.wa_id, item.body), flush=True)


def _announce(settings: Settings, host: str, port: int) -> None:
    url = f"http://{host}:{port}/webhook"
    if settings.demo:
        print(
            f"tracbot demo listening on {url}\n"
            "No WHATSAPP_API_TOKEN is set: replies go to the built-in Graph API\n"
            "simulator and are printed here. In another terminal, talk to the\n"
            "bot as a driver with:\n\n"
            "    .venv/bin/tracbot chat +56911112222\n\n"
            "Stop with Ctrl-C.",
            flush=True,
        )
    else:
        log.info("listening url=%s storage=%s", url, settings.storage_url.split(":")[0])
