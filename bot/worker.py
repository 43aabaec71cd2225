"""The processing thread: the dispatcher, the sender and the timeout sweeper
on an event loop of their own (`server.processing: thread`, the default).

On one loop, a webhook's 200 waits behind whatever else is ready to run:
under load that is dozens of conversations being advanced and replies being
sent, and the answer took tens of milliseconds (p99 35–112 ms at 1,000
webhooks/s; 5.8–8.7 ms with this thread, `python -m bench`, bench/README.md).
Here the webhook's loop only signs, parses, stores and answers; the work of
a message runs on this thread, which gives the GIL up at every statement,
send and switch interval, so an answer waits for the GIL for about a
millisecond, not for a queue.

The thread has its own store (a companion of the webhook's, with its own
connection or pool), its own business services, its own Graph API
connections and a twin of the engine that follows hot reloads. Nothing here
is shared with the webhook's loop but the database: the webhook wakes the
dispatcher through `wake_dispatcher`, the API wakes the sender through
`wake_sender`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from bot.business.services import Services
from bot.business.settings import business_settings
from bot.config import Settings
from bot.engine.dispatcher import Dispatcher
from bot.engine.engine import Engine
from bot.engine.timeouts import run_sweeper
from bot.loops import loop_factory
from bot.whatsapp.client import GraphClient, SendResult
from bot.whatsapp.sender import OnSent, Sender
from storage import OutboxItem, Store, create_store

log = logging.getLogger("tracbot.app")

# Seconds to wait for the thread to start or to stop.
START_SECONDS = 60.0
STOP_SECONDS = 30.0


@dataclass
class Parts:
    """What the thread runs, for /readyz and /metrics to read."""

    dispatcher: Dispatcher
    sender: Sender


class Worker:
    """Runs the processing of messages on a thread; see the module."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        graph_url: str,
        token: str,
        on_sent: OnSent | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.graph_url = graph_url
        self.token = token
        self.on_sent = on_sent
        self.parts: Parts | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        # Whether a dispatcher wake-up is queued on the thread's loop.
        self._wake_pending = False

    async def start(self) -> Parts:
        """Start the thread; return once its parts run.

        Raises:
            Whatever stopped the thread from starting (a store that cannot
            be opened, for one).
        """
        started: Future[Parts] = Future()
        caller = asyncio.get_running_loop()
        # The thread's tasks see the caller's context variables, as tasks
        # created on the caller's loop would (`tracbot test` traces the
        # states entered through one).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run,
            args=(self._main, started, caller),
            name="tracbot-worker",
        )
        self._thread.start()
        self.parts = await asyncio.wait_for(asyncio.wrap_future(started), START_SECONDS)
        return self.parts

    async def stop(self) -> None:
        """Stop the parts (each finishes its step) and wait for the thread."""
        if self._thread is None:
            return
        if self._stop is not None:
            self.call(self._stop.set)
        await asyncio.to_thread(self._thread.join, STOP_SECONDS)
        if self._thread.is_alive():
            log.error("the processing thread did not stop in %ss", STOP_SECONDS)
        self._thread = None

    @property
    def alive(self) -> bool:
        """Whether the thread runs (it stops only with `stop` or on an error)."""
        return self._thread is not None and self._thread.is_alive()

    def wake_dispatcher(self) -> None:
        """Tell the dispatcher of new inbox events, from any thread.

        A wake-up already on its way serves later events too: it is read on
        the thread's loop after their commits. Each one costs a write to the
        loop's self-pipe here and a read there; the webhook asked for one a
        webhook, thousands a second under load.
        """
        if self.parts is None or self._wake_pending:
            return
        self._wake_pending = True
        if not self.call(self._wake_dispatcher_here):
            self._wake_pending = False

    def _wake_dispatcher_here(self) -> None:
        # Cleared before the wake: a webhook stored after this line asks for
        # a wake-up of its own.
        self._wake_pending = False
        if self.parts is not None:
            self.parts.dispatcher.wake()

    def wake_sender(self) -> None:
        """Tell the sender of new outbox items, from any thread."""
        if self.parts is not None:
            self.call(self.parts.sender.wake)

    def call(self, fn: Callable[[], None]) -> bool:
        """Run `fn` on the thread's loop, soon; False if it has stopped."""
        loop = self._loop
        if loop is None or loop.is_closed():
            # Stopped: what it was told about is in the database already,
            # and the next start finds it.
            return False
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:
            # Closed between the check and the call: as above.
            return False
        return True

    def _main(self, started: Future[Parts], caller: asyncio.AbstractEventLoop) -> None:
        factory = loop_factory(self.settings.server.event_loop)
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                self._loop = runner.get_loop()
                runner.run(self._run(started, caller))
        except BaseException as exc:  # noqa: BLE001  (handed to `start`)
            if not started.done():
                started.set_exception(exc)
            else:
                log.exception("the processing thread stopped on an error")

    async def _run(
        self, started: Future[Parts], caller: asyncio.AbstractEventLoop
    ) -> None:
        settings = self.settings
        self._stop = asyncio.Event()
        store = create_store(
            settings.storage_url, **settings.storage.options(), companion=True
        )
        services = Services.create(business_settings(settings), store)
        engine, unfollow = self.engine.twin(services, self.call)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(unfollow)
            await stack.enter_async_context(store)
            await services.open()
            stack.push_async_callback(services.close)
            client = await stack.enter_async_context(self._client())

            dispatcher, sender = self._parts(store, engine, client, caller)
            tasks = [
                asyncio.create_task(dispatcher.run(), name="dispatcher"),
                asyncio.create_task(sender.run(), name="sender"),
                asyncio.create_task(
                    run_sweeper(
                        store, settings.whatsapp.phone_number_id, dispatcher.wake
                    ),
                    name="timeouts",
                ),
            ]
            started.set_result(Parts(dispatcher, sender))
            stopping = asyncio.create_task(self._stop.wait(), name="stop")
            try:
                done, _ = await asyncio.wait(
                    [stopping, *tasks], return_when=asyncio.FIRST_COMPLETED
                )
                # Each part outlives the errors it meets; one that ended
                # anyway ends the thread, so that /readyz says so instead
                # of "ready" over an inbox nobody reads.
                for task in tasks:
                    if task in done:
                        log.error(
                            "processing part %s ended: %r; processing stops "
                            "(restart tracbot)",
                            task.get_name(),
                            None if task.cancelled() else task.exception(),
                        )
            finally:
                for task in (*tasks, stopping):
                    task.cancel()
                await asyncio.gather(*tasks, stopping, return_exceptions=True)

    def _client(self) -> GraphClient:
        return GraphClient(
            base_url=self.graph_url,
            version=self.settings.whatsapp.api_version,
            token=self.token,
            timeout=self.settings.whatsapp.timeout_seconds,
        )

    def _parts(
        self,
        store: Store,
        engine: Engine,
        client: GraphClient,
        caller: asyncio.AbstractEventLoop,
    ) -> tuple[Dispatcher, Sender]:
        on_sent = _on(caller, self.on_sent)
        return processing(self.settings, store, engine, client, on_sent)


def processing(
    settings: Settings,
    store: Store,
    engine: Engine,
    client: GraphClient,
    on_sent: OnSent | None,
) -> tuple[Dispatcher, Sender]:
    """The dispatcher and the sender of a store, wired to each other."""
    dispatcher = Dispatcher(
        store,
        engine,
        phone_number_ids=[settings.whatsapp.phone_number_id],
        mark_read=settings.whatsapp.mark_read,
        typing_indicator=settings.whatsapp.typing_indicator,
        max_concurrent=settings.engine.max_concurrent_phones,
        poll_seconds=settings.engine.poll_seconds,
        gather_seconds=settings.engine.gather_seconds,
        text_fallback=settings.templates.get("text"),
    )
    sender = Sender(store, client, settings.sender, on_sent)
    # A committed step wakes the sender, so a reply leaves at once instead
    # of at the next poll, and tells it when the phone last wrote.
    dispatcher.on_step = sender.wake
    dispatcher.window_starts = sender.starts
    return dispatcher, sender


def _on(loop: asyncio.AbstractEventLoop, on_sent: OnSent | None) -> OnSent | None:
    """`on_sent`, called on the loop that gave it (the caller's objects live
    there: a demo's console, a chat's queue)."""
    if on_sent is None:
        return None

    def call(item: OutboxItem, result: SendResult | None) -> None:
        with contextlib.suppress(RuntimeError):  # that loop has closed
            loop.call_soon_threadsafe(on_sent, item, result)

    return call
