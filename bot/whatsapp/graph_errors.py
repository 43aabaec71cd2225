"""Errors answered by the Graph API, and what the sender must do about each.

A Graph error is classified by its `code` (CLOUD_API.md §9, §14.5) into one
action: retry later, retry later for that recipient only, stop sending until
the credentials are fixed, switch to a template, or give up. The HTTP status
only decides when the body carries no usable code, which happens with
gateways and proxies that answer HTML or nothing at all.
"""

from __future__ import annotations

import json
from typing import Any

from bot.errors import TracbotError

RETRY = "retry"
RETRY_RECIPIENT = "retry_recipient"
AUTH = "auth"
TEMPLATE = "template"
PERMANENT = "permanent"

ACTIONS = frozenset({RETRY, RETRY_RECIPIENT, AUTH, TEMPLATE, PERMANENT})

_RETRY_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131057, 133004})
_AUTH_CODES = frozenset({0, 190, 368, 131031})

# Codes that stay permanent whatever HTTP status carries them: Meta answers
# some configuration errors (3, 10, 200-299) with a 500.
_PERMANENT_CODES = frozenset(
    {3, 10, 33, 100, 131008, 131009, 131021, 131026, 131030, 131042, 131048}
    | {131049, 131050, 131051, 131052, 131053, 132000, 132001, 132005, 132007}
    | {132012, 132015, 132016, 130472}
    | set(range(200, 300))
)


class GraphError(TracbotError):
    """A failed Graph API call, with the action the caller should take."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        details: str | None = None,
        http_status: int | None = None,
        fbtrace_id: str | None = None,
        action: str | None = None,
        unsent: bool = False,
    ) -> None:
        super().__init__(message)
        # The request never left: no connection was made, or the URL
        # cannot be posted to. Sending again cannot send the message twice.
        self.unsent = unsent
        self.message = message
        self.code = code
        self.subcode = subcode
        self.details = details
        self.http_status = http_status
        self.fbtrace_id = fbtrace_id
        self.action = action or classify(code, http_status)
        if self.action not in ACTIONS:
            raise ValueError(f"Unknown Graph error action: {self.action!r}")

    @property
    def maybe_sent(self) -> bool:
        """Whether the request left and no answer came back (a timeout, a
        connection cut): Meta may have the message."""
        return not self.unsent and self.http_status is None and self.code is None

    @property
    def retryable(self) -> bool:
        """Whether sending the same message again later may succeed."""
        return self.action in (RETRY, RETRY_RECIPIENT)

    def __str__(self) -> str:
        return self._text([f"action={self.action}"])

    def described(self) -> str:
        """The message and its facts without the action, for a log line that
        says what the caller does instead (a read mark is dropped, a retry
        past the last attempt gives up)."""
        return self._text([])

    def _text(self, facts: list[str]) -> str:
        if self.code is not None:
            facts.append(f"code={self.code}")
        if self.subcode is not None:
            facts.append(f"subcode={self.subcode}")
        if self.http_status is not None:
            facts.append(f"http={self.http_status}")
        if self.fbtrace_id:
            facts.append(f"fbtrace_id={self.fbtrace_id}")
        return f"{self.message} ({' '.join(facts)})" if facts else self.message

    def __repr__(self) -> str:
        return (
            f"GraphError(code={self.code!r}, subcode={self.subcode!r}, "
            f"action={self.action!r}, http_status={self.http_status!r})"
        )


def classify(code: int | None, http_status: int | None) -> str:
    """The action for a Graph error code, falling back on the HTTP status.

    Args:
        code: the Graph `error.code`, or None when the body had none.
        http_status: the HTTP status, or None for network errors and timeouts.
    """
    if code is not None:
        by_code = _action_for_code(code)
        if by_code is not None:
            return by_code

    if http_status is None or http_status == 429 or http_status >= 500:
        return RETRY
    if http_status == 401:
        return AUTH
    return PERMANENT


def _action_for_code(code: int) -> str | None:
    if code in _RETRY_CODES:
        return RETRY
    if code == 131056:
        return RETRY_RECIPIENT
    if code in _AUTH_CODES:
        return AUTH
    if code == 131047:
        return TEMPLATE
    if code in _PERMANENT_CODES:
        return PERMANENT
    return None


# Answers without a Graph error body that say the request never got to
# the Graph API: a wrong path, a gateway's timeout or throttling.
_NOT_THERE = frozenset({404, 405, 408, 429})


def parse_graph_error(http_status: int, body: bytes | str | dict | None) -> GraphError:
    """Build a GraphError from a non-2xx answer; never raises on junk bodies.

    Args:
        http_status: the HTTP status of the answer.
        body: the raw body (bytes or text) or an already decoded JSON object.
    """
    error = _error_object(body)
    if error is None:
        # Not the Graph API's own refusal, which always says why in an error
        # object: a proxy, or a base URL with a wrong path (a tester's
        # `…/v23.0` gave 404 and every reply was dropped as permanent). It is
        # retried. A wrong path or a gateway in trouble (404, 405, 408, 429,
        # 5xx) never reached Meta and costs no attempt (`unsent`): a wrong
        # URL gave every reply up after its eight attempts. Another refusal
        # (a firewall's 403 of one body, a 413) would refuse it again: it
        # counts, so that one message cannot hold its phone's queue forever.
        action = AUTH if http_status == 401 else RETRY
        return GraphError(
            f"HTTP {http_status} without a Graph error body: a proxy or a "
            "wrong WHATSAPP_API_BASE_URL?",
            http_status=http_status,
            action=action,
            unsent=action == RETRY
            and (http_status in _NOT_THERE or http_status >= 500),
        )

    error_data = error.get("error_data")
    details = error_data.get("details") if isinstance(error_data, dict) else None
    message = error.get("message")
    fbtrace_id = error.get("fbtrace_id")
    return GraphError(
        message if isinstance(message, str) and message else f"HTTP {http_status}",
        code=_as_int(error.get("code")),
        subcode=_as_int(error.get("error_subcode")),
        details=details if isinstance(details, str) else None,
        http_status=http_status,
        fbtrace_id=fbtrace_id if isinstance(fbtrace_id, str) else None,
    )


def _error_object(body: bytes | str | dict | None) -> dict[str, Any] | None:
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            # ValueError covers bad JSON and bad UTF-8; deep nesting recurses.
            return None

    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _as_int(value: Any) -> int | None:
    # Some gateways pass codes through as strings ("130429").
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None
