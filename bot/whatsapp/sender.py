"""The sender: drains the outbox through the Graph API (DESIGN.md, step 8).

Items leave at no more than the configured rate per `phone_number_id`; the
store hands out a phone's items in order (a later one waits while an older
one is unfinished; a conversation reply waits only for older replies, not
for the phone's queued notifications), many phones at once. Before a request leaves,
its body is checked against the Cloud API limits, and a free-form message
to a phone whose 24-hour window is closed goes out as its template instead.
What the Graph API refuses is classified (graph_errors.py):

- throughput and transient errors are retried with exponential backoff and
  jitter; a throughput error also pauses and slows that number;
- 131056 (pair rate limit) is retried after a pause for that phone only;
- authentication errors hold every send, keeping the queue, and probe now
  and then until a valid token is configured;
- 131047 (window closed) sends the template fallback, once;
- anything else is permanent and never retried.

A request that never left (no connection, a URL that cannot work) costs no
attempt: an outage of the Graph API, however long, fails no reply. One that
left and got no answer (a timeout, a cut connection) may be Meta's: it goes
again only after a wait, and not at all if its status webhook, which echoes
the send's outbox id, comes first (statuses.py). After a
few failures in a row without an answer the queue waits, one probe at a
time asking whether the Graph API answers again.

Items go out each on its own, up to `max_in_flight` requests at once, a
free slot filled as soon as the Graph API answers (the record of the answer
goes on outside the slot). Read marks are best effort: one attempt, never
retried; a slow one never holds a reply (the store does not make a phone's
messages wait behind them either).

Every request and its outcome go to the attempts log. An item whose slot
comes long after it was taken first asks the store whether it is still
its take (renewing the outbox lease), so that one taken again after its
lease ran out is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.aio import gather, wait_event
from bot.config import SenderSettings
from bot.logs import Repeated, mask
from bot.metrics import Counter, Histogram
from bot.whatsapp.client import GraphClient, SendResult
from bot.whatsapp.graph_errors import (
    AUTH,
    RETRY,
    RETRY_RECIPIENT,
    TEMPLATE,
    GraphError,
)
from bot.whatsapp.limits import LimitError, check
from bot.whatsapp.statuses import callback_data
from bot.whatsapp.templates import WindowStarts, window_open
from storage.base import RESEND_WAIT, OutboxItem, Store, utcnow
from storage.errors import StorageError

log = logging.getLogger("tracbot.sender")

OnSent = Callable[[OutboxItem, SendResult | None], None]

# Waits between quick tries to record a send Meta accepted; after them the
# record is owed, written before the next take once the store answers.
RECORD_RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0)

# The `message_status` of a template Meta accepted but holds back.
HELD = frozenset({"held_for_quality_assessment", "paused"})

# Requests on the wire at once, at most: aiohttp's default connection limit,
# so that no request waits for a connection inside its own timeout.
MAX_IN_FLIGHT = 100

# Items taken from the queue at most as many as leave in this many seconds
# at the pace of the moment, far inside the outbox's two-minute lease.
TAKE_AHEAD_SECONDS = 10.0
# A throughput error pauses the whole number this long at most, whatever the
# failed item's own backoff: taken items wait the pause out while `sending`,
# and with the take above they stay well inside the lease.
MAX_PAUSE_SECONDS = 30.0
# An item whose slot comes this long after it was taken asks the store first
# whether it is still its take (renewing the lease): slowed further after the
# take, it may have waited past the lease and been taken again.
RENEW_AFTER_SECONDS = 30.0

# Codes that mean the number as a whole sends too fast (CLOUD_API.md §9).
THROUGHPUT_CODES = frozenset({4, 80007, 130429})

# Meta's pair limit is about one message every six seconds to one user.
PAIR_PAUSE_SECONDS = 6.0

# How long a send that got no answer (a timeout, a cut connection) waits
# before going again: as long as one a dead process left (storage.base).
UNANSWERED_WAIT_SECONDS = RESEND_WAIT.total_seconds()

# This many failures in a row without an answer from the Graph API (refused
# connection, timeout, bad URL, an answer from something else) make the
# service not ready, and the queue waits while one probe at a time asks
# whether it answers again.
UNREACHABLE_AFTER = 3
# The longest wait between two probes of an unreachable Graph API.
PROBE_MAX_SECONDS = 30.0


@dataclass(slots=True)
class _Pace:
    """The recent sends of one phone number and how fast it may go."""

    sent: deque[float] = field(default_factory=deque)
    # When requests really left: a busy loop can wake a sleeper late.
    left: deque[float] = field(default_factory=deque)
    next_at: float = 0.0
    paused_until: float = 0.0
    factor: float = 1.0


class RateLimiter:
    """Keeps each key (a phone_number_id) under `rate` requests a second.

    Requests are spaced `1/rate` apart, and a sliding window caps any
    second at `rate`. Meta counts at its end, where network and event-loop
    jitter can bunch requests, so the window is a tenth longer than a
    second: under full load we send at about 90 % of the limit.
    `slow_down` halves the rate after a throughput error and `pause` stops
    the key for a while; each success wins back a little.
    """

    def __init__(self, rate: float, window: float = 1.1) -> None:
        self.rate = rate
        self.window = window
        self._paces: dict[str, _Pace] = {}

    def capacity(self, seconds: float) -> int | None:
        """How many requests may leave within `seconds` at the pace of now
        (the slowest number's); None without a limit."""
        if self.rate <= 0:
            return None
        factor = min((pace.factor for pace in self._paces.values()), default=1.0)
        return max(1, int(self.rate * factor * seconds))

    async def wait(self, key: str) -> None:
        """Return when a request for `key` may leave.

        Each caller reserves the next free slot before sleeping, so callers
        leave in the order they came and never two in one slot.
        """
        if self.rate <= 0:
            return
        pace = self._paces.setdefault(key, _Pace())
        now = time.monotonic()
        at = self._slot(pace, now)
        pace.sent.append(at)
        pace.next_at = at + 1.0 / (self.rate * pace.factor)
        if at > now:
            await asyncio.sleep(at - now)

        # Slots were reserved in advance; if the loop woke an earlier one
        # late, keeping to the slot could bunch it with later ones at
        # Meta's end. The window holds for the times requests really left.
        while True:
            # The factor may have won back rate while this one slept.
            limit = max(1, int(self.rate * pace.factor))
            now = time.monotonic()
            while pace.left and pace.left[0] <= now - self.window:
                pace.left.popleft()
            if len(pace.left) < limit:
                break
            await asyncio.sleep(pace.left[0] + self.window - now)
        pace.left.append(now)

    def pause(self, key: str, seconds: float) -> None:
        """Send nothing for `key` during `seconds`."""
        pace = self._paces.setdefault(key, _Pace())
        pace.paused_until = max(pace.paused_until, time.monotonic() + seconds)

    def paused_for(self, key: str) -> float:
        """Seconds until `key` may send again after a pause; 0 if none."""
        pace = self._paces.get(key)
        if pace is None:
            return 0.0
        return max(0.0, pace.paused_until - time.monotonic())

    def slow_down(self, key: str) -> None:
        """Halve the rate of `key`, down to one request a second."""
        pace = self._paces.setdefault(key, _Pace())
        pace.factor = max(pace.factor / 2, 1.0 / max(self.rate, 1.0))

    def succeeded(self, key: str) -> None:
        """Win back some of the rate lost to `slow_down`."""
        pace = self._paces.get(key)
        if pace is not None and pace.factor < 1.0:
            pace.factor = min(1.0, pace.factor + 0.02)

    def _slot(self, pace: _Pace, now: float) -> float:
        while pace.sent and pace.sent[0] <= now - self.window:
            pace.sent.popleft()
        at = max(now, pace.paused_until, pace.next_at)

        # Reserved slots are in time order: the one `limit` places back
        # must have left the window before this one may start.
        limit = max(1, int(self.rate * pace.factor))
        if len(pace.sent) >= limit and pace.sent[-limit] > at - self.window:
            at = pace.sent[-limit] + self.window
        return at


class SendMetrics:
    """What the sender reports to `/metrics`."""

    def __init__(self) -> None:
        self.latency = Histogram(
            "tracbot_send_latency_seconds", "Graph API request duration."
        )
        self.attempts = Counter(
            "tracbot_send_attempts_total", "Graph API requests by outcome.", "outcome"
        )
        self.errors = Counter(
            "tracbot_send_errors_total",
            "Graph API errors by code (none: network or timeout).",
            "code",
        )


class _Slot:
    """One of the sender's `max_in_flight` places, held by one taken item
    until the Graph API accepts it (or its delivery ends); freed once."""

    __slots__ = ("_sender",)

    def __init__(self, sender: Sender) -> None:
        self._sender: Sender | None = sender
        sender._on_wire += 1

    def free(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender._on_wire -= 1
            sender._wake.set()


class Sender:
    """Delivers outbox items; see the module docstring."""

    def __init__(
        self,
        store: Store,
        client: GraphClient,
        settings: SenderSettings,
        on_sent: OnSent | None = None,
        poll_seconds: float = 0.5,
        batch: int = 100,
        max_in_flight: int = MAX_IN_FLIGHT,
        auth_probe_seconds: float = 60.0,
        pair_pause_seconds: float = PAIR_PAUSE_SECONDS,
        renew_after_seconds: float = RENEW_AFTER_SECONDS,
        unanswered_wait_seconds: float = UNANSWERED_WAIT_SECONDS,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.on_sent = on_sent
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.auth_probe_seconds = auth_probe_seconds
        self.pair_pause_seconds = pair_pause_seconds
        self.renew_after_seconds = renew_after_seconds
        self.unanswered_wait_seconds = unanswered_wait_seconds
        self.limiter = RateLimiter(settings.rate_per_second)
        self.metrics = SendMetrics()
        self.held = False
        # Consecutive failures that never reached the Graph API, and why
        # the last one failed: /readyz reports them.
        self.network_failures = 0
        self.network_reason = ""
        self._probe_at = 0.0
        # Items taken and not yet answered by the Graph API (see `_free`).
        self._on_wire = 0
        # When phones last wrote, as the dispatcher committed it (`_take`).
        self.starts = WindowStarts()
        self._wake = asyncio.Event()
        self._outbox_down = Repeated(log)
        # Store writes an outage kept from landing, by item id: the record
        # of a send Meta accepted, or the give-back of an item not sent.
        # Written before the next take, so that the lease never hands out
        # again (and sends twice) what this process still holds.
        self._owed: dict[int, Callable[[], Awaitable[None]]] = {}

    def wake(self) -> None:
        """Tell the sender that new items are queued."""
        self._wake.set()

    @property
    def unreachable(self) -> bool:
        """Whether the recent attempts all failed before reaching Meta."""
        return self.network_failures >= UNREACHABLE_AFTER

    async def run(self) -> None:
        """Send until cancelled, up to `max_in_flight` items at once.

        A free slot is filled as soon as it frees, instead of waiting for a
        whole round to finish: with a slow Graph API, a round of a hundred
        items took as long as its slowest answer.
        """
        flying: set[asyncio.Task[None]] = set()
        try:
            while True:
                free = self._free(flying)
                taken = 0
                if free > 0:
                    try:
                        taken = self._launch(await self._take(free), flying)
                    except Exception:
                        # The sender must outlive any one bad item or query.
                        log.exception("send round failed")
                if free > 0 and taken < free:
                    # Fewer than asked for: nothing else is due now. New
                    # items, or a finished one (its phone's next item may
                    # go now and a slot is free), wake us.
                    await wait_event(self._wake, self.poll_seconds)
                    await gather(self.settings.gather_seconds)
                else:
                    await self._slots_back(flying)
                self._wake.clear()
        finally:
            # Items on the wire finish and are recorded (_attempt); the
            # rest go back to the queue.
            for task in flying:
                task.cancel()
            await asyncio.gather(*flying, return_exceptions=True)
            with contextlib.suppress(StorageError):
                await self._settle_owed()
            if self._owed:
                log.warning(
                    "stopped with %d outbox updates the store never took "
                    "(ids %s): sent ones may be sent again after the lease",
                    len(self._owed),
                    sorted(self._owed)[:20],
                )

    async def _slots_back(self, flying: set[asyncio.Task[None]]) -> None:
        """After a take that filled every free slot (more may be due): wait
        until a quarter of the slots is free again, or for the gather after
        the first one frees. A fixed gather here left the loop idle while
        replies waited, once the load stopped (bench/README.md, thirteenth
        pass); taking at every freed slot made a take a reply."""
        target = max(1, (self._free(flying) + self._on_wire) // 4)
        if self._free(flying) >= target:
            return
        await wait_event(self._wake, self.poll_seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.gather_seconds
        while self._free(flying) < target:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            await wait_event(self._wake, left)

    def _free(self, flying: set[asyncio.Task[None]]) -> int:
        """How many items to take now.

        A slot is held from the take until the Graph API answers, not until
        the answer is recorded: under load a record waits for its group
        commit behind the loop's other work, and slots held that long kept
        the sender at a third of what the engine produced, the rest sent
        after the load, in rounds with the loop idle between them
        (bench/README.md, thirteenth pass).

        No more than can leave within TAKE_AHEAD_SECONDS at the pace now: a
        taken item is `sending`, and one that waited for its slot past the
        outbox lease (a number slowed to 1/s by 130429 storms, 100 items
        taken) was taken again by the lease and sent twice.
        """
        most = self.max_in_flight
        capacity = self.limiter.capacity(TAKE_AHEAD_SECONDS)
        if capacity is not None:
            # The items on their way count, those on the wire too: at a pace
            # that slow, few are.
            most = min(most, capacity)
        return most - self._on_wire

    def _launch(
        self, taken: list[tuple[OutboxItem, bool]], flying: set[asyncio.Task[None]]
    ) -> int:
        now = time.monotonic()
        for item, window_closed in taken:
            slot = _Slot(self)
            task = asyncio.create_task(self._deliver(item, window_closed, now, slot))
            flying.add(task)
            task.add_done_callback(self._landed(flying))
        return len(taken)

    def _landed(
        self, flying: set[asyncio.Task[None]]
    ) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            flying.discard(task)
            self._wake.set()

        return done

    async def send_due(self) -> int:
        """Send every item due now, all at once; return how many were taken."""
        taken = await self._take(self.batch)
        now = time.monotonic()
        await asyncio.gather(*(self._deliver(i, closed, now) for i, closed in taken))
        return len(taken)

    async def _take(self, limit: int) -> list[tuple[OutboxItem, bool]]:
        """Items due now, each with whether its window is closed."""
        if self.held or self.unreachable:
            # One probe now and then tells whether the token works again,
            # or the Graph API answers again; the queue waits untouched.
            if time.monotonic() < self._probe_at:
                return []
            limit = 1
        try:
            await self._settle_owed()
            items = await self.store.due_outbox(limit=limit)
        except StorageError as exc:
            self._outbox_down.failed("outbox unavailable, retrying: %s", exc)
            return []
        self._outbox_down.succeeded("outbox available again")
        if not items and self.unreachable and not self.held:
            await self._forget_failures()
        now = utcnow()
        # Only about phones not known to have written in the last 24 hours.
        starts = self.starts
        phones = {i.wa_id for i in items if _free_form(i)}
        asked = [wa_id for wa_id in sorted(phones) if not starts.open(wa_id, now)]
        try:
            windows = await self.store.last_inbound(asked) if asked else {}
        except (StorageError, asyncio.CancelledError) as exc:
            # Taken, not sent: back in the queue now rather than after the
            # lease, so a clean stop leaves nothing `sending`.
            await asyncio.shield(self._release(items))
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._outbox_down.failed("outbox unavailable, retrying: %s", exc)
            return []

        return [
            (item, _free_form(item) and not _open(item.wa_id, windows, starts, now))
            for item in items
        ]

    async def _forget_failures(self) -> None:
        # A probe with nothing to send. Once no reply waits at all, failures
        # of replies given up are no longer news: /readyz stopped at 503
        # until some new reply happened to be sent. The next send finds out
        # afresh.
        try:
            stats = await self.store.queue_stats()
        except StorageError:
            return
        if stats.outbox_queued == 0:
            log.info(
                "Graph API failures forgotten after %d in a row: no reply waits",
                self.network_failures,
            )
            self.network_failures = 0

    async def _settle_owed(self) -> None:
        """Write what an outage kept from the store, oldest first; raise
        StorageError (leaving the rest owed) while the store still fails."""
        for item_id, write in list(self._owed.items()):
            await write()
            del self._owed[item_id]
            log.info("outbox update written after the outage id=%s", item_id)

    def _owe(self, item: OutboxItem, write: Callable[[], Awaitable[None]]) -> None:
        self._owed[item.id] = write
        self._wake.set()

    async def _release(self, items: list[OutboxItem]) -> None:
        with contextlib.suppress(StorageError):
            for item in items:
                await self.store.give_back(item.id, item.attempts, "not sent")

    async def _deliver(
        self,
        item: OutboxItem,
        window_closed: bool,
        taken_at: float,
        slot: _Slot | None = None,
    ) -> None:
        try:
            if item.kind == "message" and not await self._within_limits(item):
                return
            if window_closed and item.fallback is not None:
                replacement = await self._template_instead(item, "window closed")
                if replacement is not None:
                    item, taken_at = replacement, time.monotonic()
            await self._attempt(item, taken_at, slot)
        except StorageError as exc:
            # Not sent (a send Meta accepted owes its record instead, see
            # _record_sent): back to the queue once the store answers, not
            # `sending` until the lease ends, two minutes later.
            if item.id not in self._owed:
                self._owe(
                    item,
                    lambda item=item: self.store.give_back(
                        item.id, item.attempts, "not sent: the store was unavailable"
                    ),
                )
            log.error(
                "outbox update failed id=%s, given back once the store answers: %s",
                item.id,
                exc,
            )
        finally:
            if slot is not None:
                slot.free()

    async def _within_limits(self, item: OutboxItem) -> bool:
        try:
            check(item.body)
        except LimitError as exc:
            log.error("message refused before sending id=%s: %s", item.id, exc)
            await self.store.mark_failed(item.id, None, f"limit: {exc}")
            await self._log(item, "refused", 0, None, str(exc))
            return False
        return True

    async def _template_instead(self, item: OutboxItem, why: str) -> OutboxItem | None:
        replacement = await self.store.add_fallback(item.id, replace=True)
        if replacement is not None:
            log.info(
                "template instead id=%s template_id=%s phone=%s reason=%s",
                item.id,
                replacement.id,
                mask(item.wa_id),
                why,
            )
        return replacement

    async def _attempt(
        self, item: OutboxItem, taken_at: float, slot: _Slot | None = None
    ) -> None:
        try:
            await self.limiter.wait(item.phone_number_id)
            if not await self._still_taken(item, taken_at):
                return
        except asyncio.CancelledError:
            # Stopped before the request left: queue the item again now,
            # rather than leave it `sending` until its lease runs out, and
            # without counting the take (restarts spent its attempts).
            stopped = self.store.give_back(item.id, item.attempts, "stopped")
            await asyncio.shield(stopped)
            raise

        started = time.monotonic()
        request = asyncio.ensure_future(self._request(item))
        try:
            result = await asyncio.shield(request)
        except GraphError as exc:
            await self._failed(item, exc, self._elapsed(started))
            return
        except asyncio.CancelledError:
            await self._finish_on_stop(item, request, started)
            raise
        if slot is not None:
            slot.free()
        await self._succeeded(item, result, started)

    async def _still_taken(self, item: OutboxItem, taken_at: float) -> bool:
        if time.monotonic() - taken_at < self.renew_after_seconds:
            return True
        if await self.store.renew_lease(item.id, item.attempts):
            return True

        # Its lease ran out while it waited: the queue has it again, and
        # whoever takes it next sends it. Sending here too would send it twice.
        log.warning(
            "not sent id=%s kind=%s phone=%s attempt=%d: its lease ran out while "
            "it waited for its slot, the queue has it again",
            item.id,
            item.kind,
            mask(item.wa_id),
            item.attempts,
        )
        return False

    async def _finish_on_stop(
        self,
        item: OutboxItem,
        request: asyncio.Future[SendResult | None],
        started: float,
    ) -> None:
        # Stopping mid-request: a request on the wire may reach Meta, so it
        # is let finish (the client timeout bounds the wait) and its outcome
        # recorded; re-queueing it blind would send the reply twice.
        try:
            result = await request
        except GraphError as exc:
            await self.store.mark_retry(item.id, utcnow(), str(exc))
            return
        await self._succeeded(item, result, started)

    async def _succeeded(
        self, item: OutboxItem, result: SendResult | None, started: float
    ) -> None:
        ms = self._elapsed(started)
        self.limiter.succeeded(item.phone_number_id)
        if self.network_failures:
            log.warning(
                "Graph API reachable again after %d failures", self.network_failures
            )
            self.network_failures = 0
        if self.held:
            self.held = False
            log.warning("access token accepted again: sending resumed")
        status = "accepted" if result else "sent"
        if result is not None and result.message_status in HELD:
            # Meta took the template but holds it back: the message log
            # says so, not "accepted" as if it were on its way.
            status = result.message_status
            log.warning(
                "template held by Meta id=%s phone=%s message_status=%s: it may "
                "not be delivered",
                item.id,
                mask(item.wa_id),
                status,
            )
        wamid = result.wamid if result else None
        # The status and the attempts log in one store call: one round trip.
        self.metrics.attempts.inc("accepted")
        await self._record_sent(item, wamid, status, ms)
        # DEBUG: one line per message; failures and pauses stay at WARNING.
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "sent id=%s kind=%s phone=%s ms=%d",
                item.id,
                item.kind,
                mask(item.wa_id),
                ms,
            )
        if self.on_sent is not None:
            self.on_sent(item, result)

    async def _record_sent(
        self, item: OutboxItem, wamid: str | None, status: str, ms: int
    ) -> None:
        # Meta has the message: if the record were given up, the lease would
        # send it again. A store briefly unavailable (a lock) is waited for;
        # a longer outage leaves the record owed, written before this
        # sender takes anything again (an outage past the lease sent every
        # reply in flight twice).
        async def record() -> None:
            await self.store.record_sent(item.id, wamid, status, item.attempts, ms)

        for delay in (*RECORD_RETRY_SECONDS, None):
            try:
                await record()
                return
            except StorageError as exc:
                if delay is None:
                    self._owe(item, record)
                    log.warning(
                        "sent id=%s but not recorded: recorded once the store "
                        "answers: %s",
                        item.id,
                        exc,
                    )
                    return
                log.warning(
                    "sent id=%s but not recorded yet, trying again in %gs: %s",
                    item.id,
                    delay,
                    exc,
                )
            await asyncio.sleep(delay)

    async def _request(self, item: OutboxItem) -> SendResult | None:
        if item.kind == "read":
            await self.client.mark_read(
                item.phone_number_id,
                item.body["message_id"],
                typing=bool(item.body.get("typing")),
            )
            return None
        # Echoed in its statuses: they find the item even when this answer
        # is lost (statuses.py).
        body = {**item.body, "biz_opaque_callback_data": callback_data(item.id)}
        return await self.client.send(item.phone_number_id, body)

    async def _failed(self, item: OutboxItem, exc: GraphError, ms: int) -> None:
        self.metrics.errors.inc(str(exc.code) if exc.code is not None else "none")
        status = exc.http_status
        if (
            exc.code is None
            and exc.action != AUTH
            and (exc.unsent or status is None or 200 <= status < 300)
        ):
            # No answer from the Graph API itself: no connection, no answer
            # in time, or an answer from something else (a proxy, a wrong
            # path). A proxy refusing one body (a firewall's 403) answers the
            # others: it says nothing of whether the Graph API is there.
            self.network_failures += 1
            self.network_reason = str(exc)
            probe_in = min(self._backoff(self.network_failures), PROBE_MAX_SECONDS)
            self._probe_at = max(self._probe_at, time.monotonic() + probe_in)
        action = exc.action
        if item.kind == "read":
            action = "dropped"
        # The log line, the attempts log and /metrics say what happens next
        # (a last retry gives up: `give_up`, which an alert can count).
        last = item.attempts >= self.settings.max_attempts and not exc.unsent
        shown = "give_up" if exc.retryable and last and action != "dropped" else action
        await self._log(item, shown, ms, exc.code, exc.described())
        log.warning(
            "send failed id=%s kind=%s phone=%s code=%s action=%s attempt=%d: %s",
            item.id,
            item.kind,
            mask(item.wa_id),
            exc.code,
            shown,
            item.attempts,
            exc.described(),
        )
        if item.kind == "read":
            # Best effort: a late read receipt is worth less than the queue.
            await self.store.mark_failed(item.id, exc.code, exc.described())
        elif exc.action == AUTH:
            await self._hold(item, exc)
        elif exc.action in (RETRY, RETRY_RECIPIENT):
            await self._retry(item, exc)
        elif exc.action == TEMPLATE:
            await self._window_closed(item, exc)
        else:
            await self.store.mark_failed(item.id, exc.code, exc.described())

    async def _window_closed(self, item: OutboxItem, exc: GraphError) -> None:
        # The replacement is written with the item's new status in one
        # transaction: the outbox never looks finished in between.
        replacement = await self._template_instead(item, "131047")
        if replacement is not None:
            await self._attempt(replacement, time.monotonic())
            return
        await self.store.mark_failed(item.id, exc.code, exc.described())
        log.error(
            "no template fallback configured for id=%s phone=%s: the window is "
            "closed and the message is not delivered (set templates.text; a "
            "text part over 1024 characters carries none)",
            item.id,
            mask(item.wa_id),
        )

    async def _hold(self, item: OutboxItem, exc: GraphError) -> None:
        # Every send would fail the same way: keep the queue for when a
        # valid token is configured instead of burning the messages.
        if not self.held:
            log.critical(
                "access token refused (code %s): sending held, messages kept "
                "queued; configure a valid WHATSAPP_API_TOKEN and restart (one "
                "message tries the token again every %g s, should Meta take it "
                "back)",
                exc.code,
                self.auth_probe_seconds,
            )
        self.held = True
        self._probe_at = time.monotonic() + self.auth_probe_seconds
        await self.store.mark_retry(item.id, utcnow(), exc.described())

    async def _retry(self, item: OutboxItem, exc: GraphError) -> None:
        if exc.unsent:
            # Nothing reached the Graph API: its outage (or a wrong URL, which
            # /readyz names) costs no attempt, so replies wait for it however
            # long it lasts instead of failing after a couple of minutes.
            # While it is unreachable, one probe at a time goes (`_take`).
            delay = min(self._backoff(self.network_failures), PROBE_MAX_SECONDS)
            retry_at = utcnow() + timedelta(seconds=delay)
            await self.store.give_back(
                item.id, item.attempts, exc.described(), retry_at
            )
            return
        if item.attempts >= self.settings.max_attempts:
            log.error("giving up id=%s after %d attempts", item.id, item.attempts)
            await self.store.mark_failed(item.id, exc.code, exc.described())
            return

        delay = self._backoff(item.attempts)
        if exc.maybe_sent:
            # Sent again at once, a slow Graph API delivered it twice or
            # thrice; Meta's status for it, if it has it, stops the retry.
            delay = max(delay, self.unanswered_wait_seconds)
            log.info(
                "no answer for id=%s phone=%s: Meta may have it; sent again in "
                "%.0f s unless its status webhook says it arrived",
                item.id,
                mask(item.wa_id),
                delay,
            )
        if exc.action == RETRY_RECIPIENT:
            # Only this phone waits: its later items queue behind this one.
            delay = max(delay, self.pair_pause_seconds * random.uniform(1.0, 1.5))
        elif exc.code in THROUGHPUT_CODES:
            self.limiter.slow_down(item.phone_number_id)
            # The whole number waits, taken items too: never near their lease.
            self.limiter.pause(item.phone_number_id, min(delay, MAX_PAUSE_SECONDS))
        await self.store.mark_retry(
            item.id, utcnow() + timedelta(seconds=delay), exc.described()
        )

    def _backoff(self, attempts: int) -> float:
        base = self.settings.backoff_seconds * 2 ** max(attempts - 1, 0)
        capped = min(base, self.settings.backoff_max_seconds)
        return capped * random.uniform(0.5, 1.0)

    async def _log(
        self,
        item: OutboxItem,
        outcome: str,
        ms: int,
        code: int | None,
        detail: str | None,
    ) -> None:
        self.metrics.attempts.inc(outcome)
        await self.store.record_attempt(
            item.id, item.attempts, outcome, ms, code, detail
        )

    def _elapsed(self, started: float) -> int:
        seconds = time.monotonic() - started
        self.metrics.latency.observe(seconds)
        return round(seconds * 1000)


def _open(
    wa_id: str, windows: dict[str, datetime], starts: WindowStarts, now: datetime
) -> bool:
    return starts.open(wa_id, now) or window_open(windows.get(wa_id), now)


def _free_form(item: OutboxItem) -> bool:
    """Whether Meta accepts this item only inside the 24-hour window."""
    return item.kind == "message" and item.body.get("type") != "template"
