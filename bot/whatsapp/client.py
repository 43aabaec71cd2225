"""The Graph API client: one POST per send, errors turned into GraphError.

The client only speaks HTTP: it knows the URL, the bearer token and the
success and error shapes of `/{phone_number_id}/messages` (CLOUD_API.md §8,
§9). Pacing, retries and template fallback belong to the sender, which
decides from `GraphError.action`. Its connections are kept and reused across
sends (http.py); `close` closes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bot.logs import mask
from bot.whatsapp import messages
from bot.whatsapp.graph_errors import RETRY, GraphError, parse_graph_error
from bot.whatsapp.http import ConnectError, HttpError, HttpPool, InvalidUrl
from storage import jsontext

log = logging.getLogger("tracbot.graph")

# Request paths kept, one a phone number id; a webhook can name any number,
# so the memory is bounded.
MAX_PATHS = 64


@dataclass(frozen=True, slots=True)
class SendResult:
    """What Meta answered to an accepted send (not a delivery)."""

    wamid: str
    wa_id: str | None
    input: str | None
    message_status: str | None = None


class GraphClient:
    """Sends messages through the Cloud API over kept connections."""

    def __init__(
        self,
        *,
        base_url: str,
        version: str,
        token: str,
        timeout: float = 10.0,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._version = version
        headers = {
            "Authorization": f"Bearer {token.strip()}",
            "Content-Type": "application/json",
            "User-Agent": "tracbot",
        }
        self._pool = HttpPool(self._base_url, headers, timeout=timeout)
        # Each number's request path, escaped once (see `_path`).
        self._paths: dict[str, str] = {}

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the kept connections."""
        await self._pool.close()

    def __repr__(self) -> str:
        # The token stays out of reprs, tracebacks and logs.
        return f"GraphClient(base_url={self._base_url!r}, version={self._version!r})"

    async def send(self, phone_number_id: str, body: dict[str, Any]) -> SendResult:
        """Send one message body (`to`, `type` and its object).

        Returns:
            The wamid and recipient ids Meta assigned.

        Raises:
            GraphError: on any non-2xx answer, timeout or connection error.
        """
        payload = {"messaging_product": "whatsapp", "recipient_type": "individual"}
        payload.update(body)
        if log.isEnabledFor(logging.DEBUG):  # masking and the text cost time
            log.debug(
                "send phone_number_id=%s to=%s type=%s body=%s",
                phone_number_id,
                mask(payload.get("to")),
                payload.get("type"),
                _body_text(payload),
            )

        data = await self._post(phone_number_id, payload)

        result = _send_result(data)
        if result is None:
            raise GraphError("Send answered 2xx without a message id", action=RETRY)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sent wamid=%s to=%s", result.wamid, mask(result.wa_id))
        return result

    async def send_text(
        self,
        phone_number_id: str,
        to: str,
        body: str,
        *,
        preview_url: bool = False,
        reply_to: str | None = None,
    ) -> SendResult:
        """Send a text message, optionally quoting the message `reply_to`."""
        message: dict[str, Any] = {
            "to": to,
            "type": "text",
            "text": {"preview_url": preview_url, "body": body},
        }
        if reply_to:
            message["context"] = {"message_id": reply_to}
        return await self.send(phone_number_id, message)

    async def send_template(
        self,
        phone_number_id: str,
        to: str,
        name: str,
        language: str,
        parameters: Sequence[str] = (),
    ) -> SendResult:
        """Send an approved template with positional body parameters."""
        body = messages.template_body(to, name, language, parameters)
        return await self.send(phone_number_id, body)

    async def send_buttons(
        self,
        phone_number_id: str,
        to: str,
        text: str,
        buttons: Sequence[tuple[str, str]],
    ) -> SendResult:
        """Send up to three reply buttons, given as (id, title) pairs."""
        body = messages.buttons_body(to, text, buttons)
        return await self.send(phone_number_id, body)

    async def send_list(
        self,
        phone_number_id: str,
        to: str,
        text: str,
        button: str,
        rows: Sequence[messages.Row],
    ) -> SendResult:
        """Send a one-section list menu of at most ten rows."""
        body = messages.list_body(to, text, button, [(None, rows)])
        return await self.send(phone_number_id, body)

    async def request_location(
        self, phone_number_id: str, to: str, text: str
    ) -> SendResult:
        """Ask the user to share their location."""
        body = messages.location_request_body(to, text)
        return await self.send(phone_number_id, body)

    async def mark_read(
        self, phone_number_id: str, wamid: str, *, typing: bool = False
    ) -> None:
        """Mark an inbound message (and earlier ones) read, optionally typing.

        Raises:
            GraphError: on any failure, as for `send`.
        """
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": wamid,
        }
        if typing:
            payload["typing_indicator"] = {"type": "text"}

        data = await self._post(phone_number_id, payload)

        if data.get("success") is not True:
            raise GraphError("Mark read answered 2xx without success", action=RETRY)
        log.debug("marked read wamid=%s typing=%s", wamid, typing)

    def _path(self, phone_number_id: str) -> str:
        path = self._paths.get(phone_number_id)
        if path is None:
            # The number comes from webhooks too: escaped, it stays one segment.
            version = quote(self._version, safe="")
            path = f"/{version}/{quote(phone_number_id, safe='')}/messages"
            if len(self._paths) >= MAX_PATHS:
                self._paths.clear()
            self._paths[phone_number_id] = path
        return path

    async def _post(self, phone_number_id: str, payload: dict) -> dict[str, Any]:
        path = self._path(phone_number_id)
        body = jsontext.dumps_bytes(payload)

        # Network failures and timeouts are retried by the sender; whether
        # Meta got the request is unknown, as with any lost answer.
        try:
            answer = await self._pool.post(path, body)
        except TimeoutError as exc:
            seconds = self._pool.timeout
            url = f"{self._base_url}{path}"
            message = f"Graph API request timed out after {seconds:g} s ({url})"
            raise GraphError(message, action=RETRY) from exc
        except InvalidUrl as exc:
            message = f"Graph API URL is invalid: {exc}"
            raise GraphError(message, action=RETRY, unsent=True) from exc
        except ConnectError as exc:
            raise GraphError(f"Graph API {exc}", action=RETRY, unsent=True) from exc
        except (HttpError, OSError) as exc:
            message = f"Graph API connection failed: {type(exc).__name__}: {exc}"
            raise GraphError(message, action=RETRY) from exc

        status, raw = answer.status, answer.body
        if not 200 <= status < 300:
            error = parse_graph_error(status, raw)
            log.debug("graph error %s", error)
            raise error
        return _json_object(raw, status)


def _json_object(raw: bytes, status: int) -> dict[str, Any]:
    # A 2xx that is not JSON comes from something between us and Meta. Its
    # numbers are never read, so orjson's reading of huge ones does not
    # matter (storage/jsontext.py).
    try:
        data = jsontext.loads_message(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        message = f"HTTP {status} with a body that is not a JSON object"
        raise GraphError(message, http_status=status, action=RETRY)
    return data


def _send_result(data: dict[str, Any]) -> SendResult | None:
    messages = data.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    if not isinstance(first, dict) or not isinstance(first.get("id"), str):
        return None

    contacts = data.get("contacts")
    contact = contacts[0] if isinstance(contacts, list) and contacts else {}
    if not isinstance(contact, dict):
        contact = {}
    return SendResult(
        wamid=first["id"],
        wa_id=contact.get("wa_id"),
        input=contact.get("input"),
        message_status=first.get("message_status"),
    )


def _body_text(payload: dict[str, Any]) -> str | None:
    text = payload.get("text")
    if isinstance(text, dict):
        return text.get("body")
    interactive = payload.get("interactive")
    if isinstance(interactive, dict) and isinstance(interactive.get("body"), dict):
        return interactive["body"].get("text")
    return None
