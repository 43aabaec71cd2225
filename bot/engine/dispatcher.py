"""The dispatcher: inbox events through the engine, in order per phone.

One task per phone with pending events, many phones at once. A phone's task
takes its events oldest first, one at a time, and commits each step (new
conversation state, replies, done mark) in one transaction (DESIGN.md,
steps 2-7). Whatever was stored but not processed before a stop is simply
still pending at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

from bot.aio import gather, wait_event
from bot.engine import timeouts
from bot.engine.engine import Engine
from bot.engine.outbound import read_mark, text_messages
from bot.engine.replies import APOLOGY
from bot.errors import RenderError
from bot.logs import Repeated, mask
from bot.whatsapp.events import InboundMessage, Notice, StatusUpdate, from_json
from bot.whatsapp.payloads import UNANSWERABLE
from bot.whatsapp.statuses import record_status
from bot.whatsapp.templates import TemplateSpec, WindowStarts, window_open
from storage.base import Conversation, InboxEvent, NewOutbound, Store, utcnow
from storage.crash import crash_point
from storage.errors import EventDone, StorageError

log = logging.getLogger("tracbot.dispatcher")

# Events of one phone read in one trip to the store. While the phone's task
# holds its claim, the conversation it saved is the stored one, so it is
# carried from one event of the trip to the next.
TURNS_PER_TRIP = 8

# Meta retries a webhook for up to seven days (CLOUD_API.md §3).
REDELIVERY_HORIZON = timedelta(days=7)


class Dispatcher:
    """Feeds inbox events to the engine; see the module docstring."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        *,
        phone_number_ids: Collection[str] | None = None,
        mark_read: bool = True,
        typing_indicator: bool = True,
        max_concurrent: int = 64,
        poll_seconds: float = 1.0,
        gather_seconds: float = 0.0,
        on_step: Callable[[], None] = lambda: None,
        text_fallback: TemplateSpec | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.phone_number_ids = set(phone_number_ids or ())
        self.mark_read = mark_read
        self.typing_indicator = typing_indicator
        self.max_concurrent = _capped(max_concurrent, store)
        self.poll_seconds = poll_seconds
        self.gather_seconds = gather_seconds
        self.on_step = on_step
        # Carries a reply when the window turns out closed (templates.text).
        self.text_fallback = text_fallback
        # Where a committed window start goes (the sender's, bot/worker.py).
        self.window_starts: WindowStarts | None = None
        self._wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Storage errors repeat while an outage lasts: logged once a while,
        # the inbox's reads and a phone's steps apart (on a full disk the
        # reads work: one throttle said "available again" between each two
        # failed steps, two lines a second).
        self._inbox_down = Repeated(log)
        self._steps_down = Repeated(log)
        # So may an error nothing expected (a bug, an error no store
        # translated): logged with its traceback, and processing goes on.
        self._unexpected = Repeated(log)
        # Messages the engine failed on (the driver got the apology): in
        # all, and since the last one it handled.
        self.engine_failures = 0
        self.failing_in_a_row = 0

    def wake(self) -> None:
        """Tell the dispatcher that new events are in the inbox."""
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until cancelled; workers are awaited on the way out."""
        try:
            while True:
                try:
                    await self._sweep()
                except Exception:
                    # It ended the dispatcher for good (an asyncpg login
                    # error), while the webhook kept storing and /readyz
                    # said ready.
                    self._unexpected.failed("dispatch failed, retrying", exc_info=True)
                await wait_event(self._wake, self.poll_seconds)
                await gather(self.gather_seconds)
                self._wake.clear()
        finally:
            await self._stop_workers()

    async def drain(self) -> None:
        """Process until the inbox is empty (for tests and `tracbot chat`)."""
        while True:
            await self._sweep()
            if self._workers:
                await asyncio.gather(*self._workers.values(), return_exceptions=True)
                continue
            if await self.store.pending_count() == 0:
                return

    async def _sweep(self) -> None:
        free = self.max_concurrent - len(self._workers)
        if free <= 0:
            return
        try:
            phones = await self.store.pending_phones(limit=free + len(self._workers))
        except StorageError as exc:
            self._inbox_down.failed("inbox unavailable, retrying: %s", exc)
            return
        self._inbox_down.succeeded("inbox available again")
        for wa_id in phones:
            if wa_id in self._workers or len(self._workers) >= self.max_concurrent:
                continue
            task = asyncio.create_task(self._work(wa_id), name=f"phone-{mask(wa_id)}")
            self._workers[wa_id] = task
            task.add_done_callback(lambda _t, key=wa_id: self._done(key))

    def _done(self, wa_id: str) -> None:
        self._workers.pop(wa_id, None)
        self._wake.set()

    async def _stop_workers(self) -> None:
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self, wa_id: str) -> None:
        try:
            async with self.store.claim(wa_id) as mine:
                if not mine:
                    return
                drained = False
                while not drained:
                    # A few events and the phone's conversation in one trip;
                    # `drained` spares the trip that would find none left.
                    turns = await self.store.next_turns(wa_id, TURNS_PER_TRIP)
                    conversation, drained = turns.conversation, turns.drained
                    for event in turns.events:
                        await self.process(event, conversation)
                        if event.kind != "message":
                            # A timeout saves a conversation of its own:
                            # the next message loads the stored one.
                            conversation = None
            self._steps_down.succeeded("storage takes the steps again")
        except EventDone:
            # Two processes on one SQLite file took this phone at once: the
            # other's step counted, this one's wrote nothing. Not a failure.
            log.info("phone=%s: its event was handled by another process", mask(wa_id))
        except StorageError as exc:
            # The event stays pending; the next sweep tries again.
            self._steps_down.failed(
                "storage failed phone=%s, will retry: %s", mask(wa_id), exc
            )
            await asyncio.sleep(self.poll_seconds)
        except Exception:
            # The same for an error nothing expected, shown in full.
            self._unexpected.failed(
                "processing failed phone=%s, will retry", mask(wa_id), exc_info=True
            )
            await asyncio.sleep(self.poll_seconds)

    async def process(
        self, event: InboxEvent, conversation: Conversation | None = None
    ) -> None:
        """Handle one inbox event and commit its outcome.

        `conversation` is the phone's, loaded with the event, if it was.
        """
        item = from_json(event.payload)
        if isinstance(item, InboundMessage):
            await self._message(event, item, conversation)
        elif isinstance(item, StatusUpdate):
            await self._status(event, item)
        elif isinstance(item, Notice) and timeouts.is_timeout(item) and event.wa_id:
            await self._timeout(event, item, event.wa_id)
        elif isinstance(item, Notice) and item.topic == UNANSWERABLE:
            # Kept, not answered: there is no phone number to reply to (a
            # user known only by a business-scoped id) or no message id.
            sender = item.body.get("from") or item.body.get("from_user_id")
            log.warning(
                "message without a sender phone number or id recorded, not "
                "answered sender=%s type=%s",
                mask(str(sender or "")),
                item.body.get("type") or "-",
            )
            await self.store.commit_step(event.id, None, [])
        else:
            log.info("notice recorded topic=%s", item.topic)
            await self.store.commit_step(event.id, None, [])
        self.on_step()

    async def _message(
        self,
        event: InboxEvent,
        message: InboundMessage,
        loaded: Conversation | None = None,
    ) -> None:
        if (
            self.phone_number_ids
            and message.phone_number_id not in self.phone_number_ids
        ):
            log.warning(
                "message to an unconfigured number phone_number_id=%s recorded, "
                "not answered",
                message.phone_number_id,
            )
            await self.store.commit_step(event.id, None, [])
            return

        conversation = loaded
        if conversation is None or conversation.wa_id != message.wa_id:
            conversation = await self.store.load_conversation(message.wa_id)
            conversation = conversation or Conversation(wa_id=message.wa_id)
        if message.opens_window:
            conversation.last_inbound_at = _window_start(message, conversation)

        replies = await self._replies(message, conversation)
        outbound: list[NewOutbound] = []
        if self.mark_read and message.opens_window:
            outbound.append(read_mark(message, self.typing_indicator))
        if message.opens_window:
            outbound += text_messages(
                message.wa_id, message.phone_number_id, replies, self.text_fallback
            )
        elif replies and window_open(conversation.last_inbound_at, utcnow()):
            # Free inside a window another message opened; with no template
            # to fall back on, since the answer to a poll or an unknown type
            # is worth no paid template.
            outbound += text_messages(message.wa_id, message.phone_number_id, replies)
        elif replies:
            log.info(
                "reply to a message of type %s not sent: it opens no 24-hour "
                "window and none is open phone=%s",
                message.type,
                mask(message.wa_id),
            )

        crash_point("after_engine")
        await self.store.commit_step(event.id, conversation, outbound)
        crash_point("after_commit")
        if self.window_starts is not None and conversation.last_inbound_at:
            self.window_starts.learn(message.wa_id, conversation.last_inbound_at)
        if log.isEnabledFor(logging.INFO):  # masking costs time at any level
            log.info(
                "message handled wamid=…%s phone=%s type=%s flow=%s state=%s "
                "replies=%d",
                message.wamid[-6:],
                mask(message.wa_id),
                message.type,
                conversation.flow or "-",
                conversation.state or "-",
                len(replies),
            )

    async def _replies(
        self, message: InboundMessage, conversation: Conversation
    ) -> list[str]:
        before = (conversation.flow, conversation.state, dict(conversation.slots))
        try:
            replies = (await self.engine.handle(message, conversation)).replies
        except StorageError:
            raise
        except Exception as exc:
            # A bug in a flow's action must not stop this phone's queue or
            # show the driver a traceback: apologise, keep the old state.
            if isinstance(exc, RenderError):
                # The template's file, line and error say it all: its
                # traceback through the state machine was 80 lines a message.
                log.error("reply failed wamid=…%s error=%s", message.wamid[-6:], exc)
            else:
                log.exception("engine failed wamid=…%s", message.wamid[-6:])
            conversation.flow, conversation.state, conversation.slots = before
            # /readyz and /metrics show it: a business database gone bad
            # gave every driver the apology while readiness said "ready".
            self.engine_failures += 1
            self.failing_in_a_row += 1
            return [APOLOGY]
        self.failing_in_a_row = 0
        return replies

    async def _timeout(self, event: InboxEvent, notice: Notice, wa_id: str) -> None:
        conversation = await self.store.load_conversation(wa_id)
        if conversation is None or not timeouts.still_due(notice, conversation):
            await self.store.commit_step(event.id, None, [])
            return
        replies = await self.engine.expire(conversation)
        phone_number_id = notice.phone_number_id or event.phone_number_id or ""
        outbound = text_messages(wa_id, phone_number_id, replies, self.text_fallback)
        await self.store.commit_step(event.id, conversation, outbound)

    async def _status(self, event: InboxEvent, status: StatusUpdate) -> None:
        # Forward-only status, and the template fallback of a 131047.
        await record_status(self.store, status)
        await self.store.commit_step(event.id, None, [])


def _window_start(message: InboundMessage, conversation: Conversation) -> datetime:
    """When the driver last wrote, as far as the 24-hour window goes.

    The message's own time, not its arrival: Meta redelivers for days after
    an outage, and a window counted from a late arrival sent free-form
    replies that Meta refuses (131047). A time ahead of our clock counts as
    now, and so does one older than Meta redelivers for, which no
    redelivery carries (a body replayed by hand, the corpus of the tests).
    An older message never moves a later start back.
    """
    now = utcnow()
    sent = now
    if message.timestamp > 0:
        with contextlib.suppress(OverflowError, OSError, ValueError):
            sent = min(now, datetime.fromtimestamp(message.timestamp, UTC))
    if now - sent > REDELIVERY_HORIZON:
        sent = now
    before = conversation.last_inbound_at
    return sent if before is None or before < sent else before


def _capped(wanted: int, store: Store) -> int:
    # Each phone's task holds a claim, which on a server backend is a pooled
    # connection: more tasks than the pool can serve would only wait for
    # connections and time out.
    limit = store.max_claims
    if limit is None or wanted <= limit:
        return wanted
    # INFO: the shipped settings (64 phones, a pool of 20) meet this at
    # every start on PostgreSQL; a WARNING there was noise.
    log.info(
        "engine.max_concurrent_phones=%d lowered to %d: each phone in progress "
        "holds a database connection (raise storage.pool_max for more)",
        wanted,
        limit,
    )
    return limit
