"""The `/webhook` endpoint Meta calls: the GET handshake and event POSTs.

A POST does four cheap things and answers: check the signature on the raw
bytes, parse, write the events to the durable inbox, 200. No Graph API call
and no business query happens before the answer (DESIGN.md, step 1).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.logs import Repeated
from bot.whatsapp.events import Event, Notice, to_json
from bot.whatsapp.payloads import ParseResult, parse_body
from bot.whatsapp.signature import verify
from bot.whatsapp.store_trouble import StoreTrouble
from storage.base import NewInboxEvent, Store
from storage.errors import StorageError

log = logging.getLogger("tracbot.webhook")

SIGNATURE_HEADER = "X-Hub-Signature-256"
# What no database stores, in a body: a UTF-16 surrogate, escaped
# (`\ud83d`) or raw in its UTF-8 form, which the JSON decoder lets through
# as a lone character, and NUL (`\u0000`), which PostgreSQL refuses in text
# (see `_storable` below).
UNSTORABLE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\\u0000|\xed[\xa0-\xbf]")


class RefusalStreak:
    """Signature refusals in a row, reported at most once a period."""

    def __init__(self, at_least: int = 3, every_seconds: float = 60.0) -> None:
        self.at_least = at_least
        self.every_seconds = every_seconds
        self.count = 0
        self._reported_at: float | None = None

    def accepted(self) -> None:
        self.count = 0

    def refused(self) -> int | None:
        """Count one refusal; return the streak when it is time to say so."""
        self.count += 1
        now = time.monotonic()
        if self.count < self.at_least:
            return None
        if (
            self._reported_at is not None
            and now - self._reported_at < self.every_seconds
        ):
            return None
        self._reported_at = now
        return self.count


class WebhookHandler:
    """Handlers for both methods of `/webhook`."""

    def __init__(
        self,
        store: Store,
        app_secret: str,
        verify_token: str,
        on_stored: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.on_stored = on_stored
        self.counts: dict[str, int] = {}
        # Webhooks that could not be stored (/readyz, the log).
        self.trouble = StoreTrouble()
        self.signature_failures: dict[str, int] = {}
        self.refusals = RefusalStreak()
        # One WARNING a minute at most, saying how many it stands for.
        self._refusal_lines = Repeated(log, every=60.0, level=logging.WARNING)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/webhook", self.handshake), web.post("/webhook", self.post)]

    async def handshake(self, request: web.Request) -> web.Response:
        """Answer Meta's subscription check with the challenge, byte for byte."""
        query = request.query
        mode = query.get("hub.mode", "")
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        if mode == "subscribe" and hmac.compare_digest(
            token.encode(), self.verify_token.encode()
        ):
            if not challenge:
                # Meta always sends one; an empty 200 read as a success to
                # whoever checked the endpoint by hand.
                log.warning("webhook handshake without hub.challenge refused")
                return web.Response(status=400, text="hub.challenge missing")
            log.info("webhook handshake accepted")
            return web.Response(text=challenge, content_type="text/plain")
        log.warning("webhook handshake refused mode=%s", mode or "-")
        return web.Response(status=403, text="Forbidden")

    async def post(self, request: web.Request) -> web.Response:
        """Verify, parse, store, then answer."""
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            # Nothing of Meta's comes near server.max_body_bytes.
            log.warning("webhook refused (server.max_body_bytes): %s", exc.text)
            self.counts["413"] = self.counts.get("413", 0) + 1
            raise
        except web.RequestPayloadError as exc:
            # A body that cannot be read as sent (a Content-Encoding it does
            # not have, a cut chunk): not Meta's, which sends plain JSON.
            log.warning("webhook refused: unreadable body: %s", exc)
            # The rest of the body can never be read: the connection closes
            # after the answer, and aiohttp is told there is nothing left to
            # read (it logged its own traceback trying, after ours).
            request.content.feed_eof()
            response = self._answer(400, "unreadable body")
            response.force_close()
            return response
        header = request.headers.get(SIGNATURE_HEADER)
        if not verify(self.app_secret, body, header):
            return self._refused(header, len(body))
        self.refusals.accepted()

        parsed = _parse(body)
        for problem in parsed.problems:
            log.warning("webhook item skipped: %s", problem)

        events = [
            NewInboxEvent(
                key=event.key,
                kind=event.kind,
                wa_id=event.wa_id,
                phone_number_id=event.phone_number_id,
                payload=to_json(event),
            )
            for event in sorted(parsed.events, key=_sent_at)
        ]
        try:
            new = await self.store.add_events(events) if events else 0
        except StorageError as exc:
            # Meta retries anything but a 200, so nothing is lost.
            self.trouble.failed(str(exc))
            return self._answer(503, "storage unavailable")
        self.trouble.stored()

        log.debug("webhook stored events=%d new=%d", len(events), new)
        if new:
            self.on_stored()
        return self._answer(200, "ok")

    @property
    def store_problem(self) -> str | None:
        """Why the last webhook could not be stored, for a while after."""
        return self.trouble.problem

    def _refused(self, header: str | None, size: int) -> web.Response:
        reason = "missing" if not header else "mismatch"
        self.signature_failures[reason] = self.signature_failures.get(reason, 0) + 1
        # Anyone can post: a line each would let them fill the log.
        if reason == "missing":
            self._refusal_lines.failed(
                "webhook refused: no %s header bytes=%d", SIGNATURE_HEADER, size
            )
        else:
            self._refusal_lines.failed(
                "webhook refused: signature does not match bytes=%d", size
            )

        # Meta retries a 401 for days: a wrong app secret shows up as
        # refusals that never stop, which an operator must not miss.
        streak = self.refusals.refused()
        if streak is not None:
            log.error(
                "webhook signatures keep failing: %d refused in a row, none "
                "accepted; WHATSAPP_APP_SECRET may be wrong",
                streak,
            )
        return self._answer(401, "bad signature")

    def _answer(self, status: int, text: str) -> web.Response:
        outcome = str(status)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        return web.Response(status=status, text=text)


def _parse(body: bytes) -> ParseResult:
    """Parse a signed body; what is not JSON is kept as a notice.

    Meta signed it, so it is answered 200 like anything else we do not
    understand (a non-200 only buys days of retries of the same bytes).
    """
    try:
        # As json.loads(body) does, with the one decoder of the module.
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        data = _DECODER.decode(text)
        if UNSTORABLE.search(body):
            # Inside the try: nested near the decoder's own limit, the walk
            # ran out of stack, a 500 with a 1,500-line traceback.
            data = _storable(data)
    except (ValueError, RecursionError):
        log.warning("webhook body is not JSON bytes=%d", len(body))
        raw = body.decode("utf-8", errors="replace")
        return ParseResult(events=[Notice(topic="invalid_json", body={"raw": raw})])
    return parse_body(data)


def _storable(node: Any) -> Any:
    """`node` with every unpaired UTF-16 surrogate and every NUL replaced by
    U+FFFD.

    JSON may escape half of an emoji (`\ud83d` alone), and Python keeps it
    as a character that no database driver can encode: the insert failed
    and the whole POST, its good messages too, got a 500 that Meta retries
    forever. A NUL in a wamid or a phone did the same on PostgreSQL (a 503
    each time, and /readyz not ready while it was the last webhook). The
    scan of the raw bytes above keeps this walk off the common path.
    """
    if isinstance(node, str):
        whole = node.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return whole.replace("\x00", "\ufffd")
    if isinstance(node, dict):
        return {_storable(k): _storable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_storable(item) for item in node]
    return node


def _no_constant(name: str) -> None:
    return None


# NaN and Infinity are not JSON; no database column would take them. One
# decoder for every body: json.loads with an option builds a new one a call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _sent_at(event: Event) -> int:
    # Meta may batch a phone's messages in any order; the inbox order is
    # the processing order, so it follows the users' own timestamps.
    return getattr(event, "timestamp", 0)
