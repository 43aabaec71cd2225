"""The sender: drains the outbox through the Graph API (DESIGN.md, step 8).

Items go out at no more than the configured rate per `phone_number_id`, one
recipient's items strictly in order, many recipients at once. What the
Graph API refuses is classified (graph_errors.py): retried later with
backoff, given up, or held while the access token is invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta

from bot.config import SenderSettings
from bot.logs import mask
from bot.whatsapp.client import GraphClient, SendResult
from bot.whatsapp.graph_errors import GraphError
from storage.base import OutboxItem, Store, utcnow
from storage.errors import StorageError

log = logging.getLogger("tracbot.sender")

OnSent = Callable[[OutboxItem, SendResult | None], None]


class RateLimiter:
    """Spaces requests so no phone number exceeds `rate` per second."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}

    async def wait(self, key: str) -> None:
        now = time.monotonic()
        slot = max(now, self._next.get(key, now))
        self._next[key] = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class Sender:
    """Delivers outbox items; see the module docstring."""

    def __init__(
        self,
        store: Store,
        client: GraphClient,
        settings: SenderSettings,
        on_sent: OnSent | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.on_sent = on_sent
        self.poll_seconds = poll_seconds
        self.limiter = RateLimiter(settings.rate_per_second)
        self.held = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell the sender that new items are queued."""
        self._wake.set()

    async def run(self) -> None:
        """Send until cancelled."""
        while True:
            sent = await self.send_due()
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                self._wake.clear()

    async def send_due(self) -> int:
        """Send every item due now; return how many were taken."""
        if self.held:
            return 0
        try:
            items = await self.store.due_outbox(limit=100)
        except StorageError as exc:
            log.error("outbox unavailable, retrying: %s", exc)
            return 0

        by_recipient: dict[str, list[OutboxItem]] = {}
        for item in items:
            by_recipient.setdefault(item.wa_id, []).append(item)
        await asyncio.gather(*(self._send_in_order(q) for q in by_recipient.values()))
        return len(items)

    async def _send_in_order(self, queue: list[OutboxItem]) -> None:
        for position, item in enumerate(queue):
            delivered = await self._send(item)
            if not delivered:
                # Keep this recipient's order: what follows waits its turn.
                for later in queue[position + 1 :]:
                    await self.store.mark_retry(
                        later.id, utcnow() + timedelta(seconds=1), "waiting"
                    )
                return

    async def _send(self, item: OutboxItem) -> bool:
        await self.limiter.wait(item.phone_number_id)
        try:
            result = await self._request(item)
        except GraphError as exc:
            await self._failed(item, exc)
            return False

        await self.store.mark_sent(
            item.id, result.wamid if result else None, "accepted" if result else "sent"
        )
        log.info("sent id=%s kind=%s phone=%s", item.id, item.kind, mask(item.wa_id))
        if self.on_sent is not None:
            self.on_sent(item, result)
        return True

    async def _request(self, item: OutboxItem) -> SendResult | None:
        if item.kind == "read":
            await self.client.mark_read(
                item.phone_number_id,
                item.body["message_id"],
                typing=bool(item.body.get("typing")),
            )
            return None
        return await self.client.send(item.phone_number_id, item.body)

    async def _failed(self, item: OutboxItem, exc: GraphError) -> None:
        log.warning(
            "send failed id=%s phone=%s code=%s action=%s",
            item.id,
            mask(item.wa_id),
            exc.code,
            exc.action,
        )
        if exc.action == "auth":
            # Every send would fail the same way; hold the queue for an
            # operator instead of burning the messages.
            self.held = True
            log.critical("access token refused (code %s): sending held", exc.code)
            await self.store.mark_retry(item.id, utcnow(), str(exc))
            return
        retryable = exc.action in ("retry", "retry_recipient")
        if retryable and item.attempts < self.settings.max_attempts:
            await self.store.mark_retry(
                item.id, utcnow() + self._backoff(item), str(exc)
            )
            return
        await self.store.mark_failed(item.id, exc.code, str(exc))

    def _backoff(self, item: OutboxItem) -> timedelta:
        base = self.settings.backoff_seconds * 2 ** max(item.attempts - 1, 0)
        capped = min(base, self.settings.backoff_max_seconds)
        return timedelta(seconds=capped * random.uniform(0.5, 1.0))
