"""Signed status webhooks the Graph API simulator posts back to tracbot.

After an accepted send Meta reports `sent`, then `delivered`, to the app's
webhook, signed with the app secret over the exact bytes it posts (CLOUD_API.md
§2, §6). The poster sends them from background tasks that it keeps, so that
shutdown can wait for them or cancel them; a failed post is logged and
dropped, never raised into the simulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp

from bot.whatsapp.simulator_answers import wa_id_of

log = logging.getLogger("tracbot.simulator")


def status_webhook(
    *,
    waba_id: str,
    display_phone_number: str,
    phone_number_id: str,
    wamid: str,
    status: str,
    to: str,
    callback_data: str | None = None,
) -> dict[str, Any]:
    """A status webhook body (sent/delivered/read) for one sent message."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": wa_id_of(to),
    }
    if status in ("sent", "delivered"):
        item["pricing"] = {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        }
    if callback_data is not None:
        item["biz_opaque_callback_data"] = callback_data

    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
        "statuses": [item],
    }
    if status == "delivered":
        # Since 2026 statuses carry contacts without a profile (§4).
        value["contacts"] = [{"wa_id": wa_id_of(to)}]
    change = {"value": value, "field": "messages"}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [change]}],
    }


def wire_bytes(body: dict[str, Any]) -> bytes:
    """Serialize like Meta's wire: compact, ASCII-escaped, `/` as `\\/`."""
    return json.dumps(body, separators=(",", ":")).replace("/", "\\/").encode()


def sign(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value for these exact bytes.

    Computed here rather than with bot.whatsapp.signature so that a bug in
    our verifier's signing cannot hide itself in tests.
    """
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


# The first pause before a failed post is tried again; each doubles it.
RETRY_FIRST_SECONDS = 0.5


class WebhookPoster:
    """Posts webhook bodies in order from kept background tasks."""

    def __init__(self, timeout: float = 5.0, retry_seconds: float = 0.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # How long a post that failed is tried again, as Meta does (for
        # days): a bot restarted within it gets the statuses it missed.
        self.retry_seconds = retry_seconds
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Create the HTTP session; call once the event loop runs."""
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    @property
    def pending(self) -> int:
        """How many scheduled posts have not finished yet."""
        return len(self._tasks)

    def post_later(self, url: str, app_secret: str, bodies: list[dict]) -> None:
        """Post `bodies` to `url` one after the other, in the background."""
        task = asyncio.get_running_loop().create_task(
            self._post_all(url, app_secret, bodies)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain timeout reads best in tests
    ) -> None:
        """Wait until every scheduled post is done (for tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self, grace: float = 2.0) -> None:
        """Give pending posts `grace` seconds, cancel the rest, close the session."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post_all(self, url: str, app_secret: str, bodies: list[dict]) -> None:
        # Meta retries a failed delivery for days; the simulator for
        # `retry_seconds` (none by default, so that a test sees the failure
        # at once), then reports it and stops.
        for body in bodies:
            if not await self._post_until(url, app_secret, wire_bytes(body)):
                return

    async def _post_until(self, url: str, app_secret: str, raw: bytes) -> bool:
        deadline = time.monotonic() + self.retry_seconds
        pause = RETRY_FIRST_SECONDS
        while not await self._post(url, app_secret, raw):
            if time.monotonic() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause *= 2
        return True

    async def _post(self, url: str, app_secret: str, raw: bytes) -> bool:
        if self._session is None:
            log.warning("status webhook dropped: simulator not started")
            return False

        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(app_secret, raw),
        }
        try:
            async with self._session.post(url, data=raw, headers=headers) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("status webhook post failed error=%s", type(exc).__name__)
            return False

        if response.status != 200:
            log.warning("status webhook refused http=%s", response.status)
            return False
        return True
