"""`tracbot serve`: run the service until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal

from aiohttp import web

from bot.app import RUNTIME, create_app
from bot.config import Settings
from bot.console import banner
from bot.engine.check import check_project, format_problems
from bot.engine.reload import Reloader
from bot.errors import ConfigError, FlowError
from bot.whatsapp.client import SendResult
from storage.base import OutboxItem

log = logging.getLogger("tracbot.app")

LOOPBACK = "127.0.0.1"
# New container objects, less those freed, that start a young collection
# (default 700), and collections of the middle generation between two full
# ones (default 10).
YOUNG_COLLECTION_AFTER = 10_000
FULL_COLLECTION_AFTER = 1000


async def serve(
    settings: Settings, host: str | None = None, port: int | None = None
) -> None:
    """Serve the webhook and run the bot until a stop signal.

    Raises:
        FlowError: a flow or template is invalid (the checker's report).
        ConfigError: the address cannot be listened on (port in use).
    """
    engine_dirs = (settings.engine.flows_dir, settings.engine.templates_dir)
    problems = check_project(*engine_dirs)
    if problems:
        raise FlowError("invalid flows, not starting:\n" + format_problems(problems))
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    if settings.demo and host != LOOPBACK:
        # Demo secrets are public; a demo must not be reachable from outside.
        log.warning("demo mode binds to %s only (asked for %s)", LOOPBACK, host)
        host = LOOPBACK

    simulator_port = settings.server.simulator_port
    if settings.demo and simulator_port and simulator_port == port:
        raise ConfigError(f"--simulator-port {port} is the server's port too")

    on_sent = _print_message if settings.demo else None
    app = create_app(settings, on_sent=on_sent)
    # No access log: tracbot logs what a webhook did itself, and aiohttp's
    # check of whether its own logger wants a line cost each request ~1 %
    # of the webhook thread's CPU for lines nobody configured.
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
    except OSError as exc:
        # Demo mode's simulator listens while the app sets up; any other
        # error there (a storage folder that cannot be made) is its own.
        if not (settings.demo and exc.errno in BIND_ERRORS):
            raise
        await runner.cleanup()
        problem = _bind_problem(exc, LOOPBACK, simulator_port, "--simulator-port")
        raise ConfigError(problem) from None
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(_bind_problem(exc, host, port)) from None
    _announce(settings, host, port)
    simulator = app[RUNTIME].simulator
    if simulator is not None:
        # Demo mode: the simulator tells of each message's delivery as Meta
        # does, signed, so that history and metrics show sent, delivered
        # and read (they stayed `accepted`, a delivery rate of 0).
        simulator.webhook_url = f"http://{LOOPBACK}:{port}/webhook"
        simulator.app_secret = settings.whatsapp.app_secret
    _settle_heap()

    # Edited flows and templates are picked up by polling, or at once on HUP.
    reloader = app[RUNTIME].reloader = Reloader(app[RUNTIME].engine, *engine_dirs)
    watcher = asyncio.create_task(reloader.run(), name="reload")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await runner.cleanup()


def _settle_heap() -> None:
    """Keep the garbage collector off what lives as long as the process.

    Modules, compiled flows, templates and the app stay until the end. A
    full collection walks every object it tracks with the GIL held: with
    them in, one paused both loops for 20–50 ms under load, longer than a
    webhook's answer should take. Frozen, collections walk only what came
    after. Full collections also come less often (after 1,000 collections
    of the middle generation instead of 10): the objects of a message die
    young, and the bench's memory rows show the resident size still flat.

    Young collections wait for 10,000 new objects instead of 700. The
    objects of a message are freed when it is done, but a batch of messages
    in progress keeps thousands alive at once, so at 700 a collection came
    every few messages and walked them all: 2.3 % of the server's CPU under
    load (perf), 0.02 % at 10,000.
    """
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, middle, FULL_COLLECTION_AFTER)


# What a listening socket fails with when its address is taken or not ours.
BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


def _bind_problem(
    exc: OSError, host: str, port: int, option: str = "--port or server.port"
) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use ({option})"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: no such address here (--host)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


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
