"""The tracbot service: one aiohttp application and its background tasks.

`create_app` wires the webhook to the store, and starts the dispatcher and
the sender as background tasks owned by the application's lifecycle
(`cleanup_ctx`): opened in order at start, closed in reverse at stop. In
demo mode the Graph API simulator runs in the same process and every
outgoing message is printed on the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from bot.api import service as api_service
from bot.business.services import Services
from bot.business.settings import business_settings
from bot.config import Settings
from bot.engine.dispatcher import Dispatcher
from bot.engine.engine import Engine
from bot.engine.reload import Reloader
from bot.engine.timeouts import run_sweeper
from bot.whatsapp import simulator as graph_simulator
from bot.whatsapp.client import GraphClient
from bot.whatsapp.sender import OnSent, Sender
from bot.whatsapp.webhook import WebhookHandler
from bot.worker import Worker, processing
from storage import Store, create_store

log = logging.getLogger("tracbot.app")

DEMO_TOKEN = "demo-token"


@dataclass
class Runtime:
    """The parts of a running service, for the CLI and for tests."""

    settings: Settings
    engine: Engine
    store: Store
    dispatcher: Dispatcher | None = None
    sender: Sender | None = None
    simulator: graph_simulator.Simulator | None = None
    graph_url: str = ""
    token: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # The processing thread, when the dispatcher and sender run on one.
    worker: Worker | None = None
    # The watcher of flows and templates (`tracbot serve` only).
    reloader: Reloader | None = None

    def wake_dispatcher(self) -> None:
        """Tell the dispatcher of new inbox events, wherever it runs."""
        if self.worker is not None:
            self.worker.wake_dispatcher()
        elif self.dispatcher is not None:
            self.dispatcher.wake()

    def wake_sender(self) -> None:
        """Tell the sender of new outbox items, wherever it runs."""
        if self.worker is not None:
            self.worker.wake_sender()
        elif self.sender is not None:
            self.sender.wake()


RUNTIME = web.AppKey("runtime", Runtime)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    on_sent: OnSent | None = None,
    background: bool = True,
) -> web.Application:
    """Build the service.

    Args:
        settings: parsed configuration.
        engine: compiled flows; loaded from the configured folders if None.
        on_sent: called after each message the Graph API accepted.
        background: start the dispatcher and sender (tests that want to
            drive them by hand pass False). They run on a thread of their
            own (bot/worker.py) when `server.processing` says `thread` and
            the database can be opened twice (not an in-memory SQLite).
    """
    engine = engine or Engine.from_dirs(
        settings.engine.flows_dir, settings.engine.templates_dir
    )
    store = create_store(settings.storage_url, **settings.storage.options())
    services = Services.create(business_settings(settings), store)
    if engine.services is None:
        engine.services = services
    runtime = Runtime(settings=settings, engine=engine, store=store)

    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(_storage(runtime))
    app.cleanup_ctx.append(_business(services))
    if background and settings.engine.max_concurrent_phones == 0:
        # A pause an operator may want (store everything, answer later), or
        # a slip that leaves every driver unanswered: either way, say so.
        log.warning(
            "engine.max_concurrent_phones is 0: webhooks are stored and "
            "nothing is answered until it is raised and tracbot restarted"
        )
    threaded = background and settings.server.processing == "thread"
    if threaded and not store.shared:
        log.info("processing on the webhook's loop: %s is private", store.url)
        threaded = False
    app.cleanup_ctx.append(_graph(runtime, on_sent, inline=not threaded))
    if threaded:
        app.cleanup_ctx.append(_worker(runtime, on_sent))
    elif background:
        app.cleanup_ctx.append(_background(runtime))

    webhook = WebhookHandler(
        store,
        app_secret=settings.whatsapp.app_secret,
        verify_token=settings.whatsapp.verify_token,
        on_stored=runtime.wake_dispatcher,
    )
    app.router.add_routes(webhook.routes())
    api_service.mount(app, runtime, webhook)
    return app


def _storage(runtime: Runtime) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await runtime.store.open()
        yield
        await runtime.store.close()

    return ctx


def _business(services: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await services.open()
        yield
        await services.close()

    return ctx


def _graph(
    runtime: Runtime, on_sent: OnSent | None, *, inline: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    # The simulator of demo mode always runs here; the dispatcher and the
    # sender only when they run on this loop (`inline`).
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = runtime.settings
        async with contextlib.AsyncExitStack() as stack:
            base_url = settings.whatsapp.api_base_url
            token = settings.whatsapp.access_token
            if settings.demo:
                runtime.simulator = graph_simulator.Simulator(token=DEMO_TOKEN)
                base_url = await stack.enter_async_context(
                    graph_simulator.serve(
                        runtime.simulator, "127.0.0.1", settings.server.simulator_port
                    )
                )
                token = DEMO_TOKEN
                log.info("demo mode: Graph API simulator at %s", base_url)
            runtime.graph_url, runtime.token = base_url, token or ""
            log.info(
                "Graph API at %s version=%s", base_url, settings.whatsapp.api_version
            )
            if not inline:
                yield
                return

            client = GraphClient(
                base_url=base_url,
                version=settings.whatsapp.api_version,
                token=token or "",
                timeout=settings.whatsapp.timeout_seconds,
            )
            await stack.enter_async_context(client)
            runtime.dispatcher, runtime.sender = processing(
                settings, runtime.store, runtime.engine, client, on_sent
            )
            yield

    return ctx


def _worker(
    runtime: Runtime, on_sent: OnSent | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        worker = Worker(
            runtime.settings,
            runtime.engine,
            runtime.graph_url,
            runtime.token,
            on_sent,
        )
        parts = await worker.start()
        runtime.worker = worker
        runtime.dispatcher, runtime.sender = parts.dispatcher, parts.sender
        yield
        await worker.stop()
        runtime.worker = None

    return ctx


def _background(runtime: Runtime) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        assert runtime.dispatcher is not None and runtime.sender is not None
        dispatcher, sender = runtime.dispatcher, runtime.sender

        runtime.tasks = [
            asyncio.create_task(dispatcher.run(), name="dispatcher"),
            asyncio.create_task(sender.run(), name="sender"),
            asyncio.create_task(
                run_sweeper(
                    runtime.store,
                    runtime.settings.whatsapp.phone_number_id,
                    dispatcher.wake,
                ),
                name="timeouts",
            ),
        ]
        yield
        for task in runtime.tasks:
            task.cancel()
        await asyncio.gather(*runtime.tasks, return_exceptions=True)

    return ctx
