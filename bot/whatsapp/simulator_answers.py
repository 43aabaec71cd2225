"""What the Graph API simulator answers to a send, in Meta's shapes.

Error bodies follow CLOUD_API.md §9 and success bodies §8; the limit checks
reject what Meta rejects among the text and interactive limits of §8 and §10,
so that tracbot's own checks can be tested against them. Ids and texts are
invented; only the shapes and codes are Meta's.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

# code: (message, HTTP status in Meta's table, error_data.details)
ERRORS: dict[int, tuple[str, int, str | None]] = {
    0: ("(#0) AuthException", 401, "We were unable to authenticate the app user."),
    1: (
        "(#1) An unknown error occurred",
        400,
        "Invalid request or possible server error.",
    ),
    2: ("(#2) Service temporarily unavailable", 503, "Service temporarily down."),
    4: ("(#4) Application request limit reached", 400, "App call limit reached."),
    100: ("(#100) Invalid parameter", 400, "Invalid parameter."),
    368: ("(#368) Temporarily blocked for policies violations", 403, None),
    80007: ("(#80007) Rate limit issues", 400, "The WABA reached its rate limit."),
    130429: (
        "(#130429) Rate limit hit",
        400,
        "Cloud API message throughput has been reached.",
    ),
    131000: ("(#131000) Something went wrong", 500, "Something went wrong."),
    131008: (
        "(#131008) Required parameter is missing",
        400,
        "A required parameter is missing.",
    ),
    131009: (
        "(#131009) Parameter value is not valid",
        400,
        "Parameter value is not valid.",
    ),
    131016: (
        "(#131016) Service unavailable",
        503,
        "A service is temporarily unavailable.",
    ),
    131026: ("(#131026) Message undeliverable", 400, "Message Undeliverable."),
    131030: (
        "(#131030) Recipient phone number not in allowed list",
        400,
        "Recipient phone number not in allowed list.",
    ),
    131031: (
        "(#131031) Business Account locked",
        403,
        "The business account is locked.",
    ),
    131047: (
        "(#131047) Re-engagement message",
        400,
        "Message failed to send because more than 24 hours have passed since "
        "the customer last replied to this number.",
    ),
    131051: (
        "(#131051) Unsupported message type",
        400,
        "Message type is not currently supported.",
    ),
    131056: (
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        400,
        "Message failed to send because there were too many messages sent from "
        "this phone number to the same phone number in a short period of time.",
    ),
    131057: (
        "(#131057) Account in maintenance mode",
        500,
        "Business account is in maintenance mode.",
    ),
    132000: (
        "(#132000) Number of parameters does not match the expected number of params",
        400,
        "The number of variable parameter values does not match the template.",
    ),
    132001: (
        "(#132001) Template name does not exist in the translation",
        404,
        "The template does not exist in this language or is not approved.",
    ),
    133004: (
        "(#133004) Server temporarily unavailable",
        503,
        "The server is temporarily unavailable.",
    ),
}

TEXT_MAX = 4096
BUTTONS_MAX = 3
BUTTON_TITLE_MAX = 20
ROWS_MAX = 10
ROW_TITLE_MAX = 24
ROW_DESCRIPTION_MAX = 72
INTERACTIVE_BODY_MAX = 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer of the simulator, with the facts tests look at."""

    status: int
    body: bytes
    content_type: str = "application/json"
    code: int | None = None
    wamid: str | None = None


def error_answer(
    code: int, http_status: int | None = None, details: str | None = None
) -> Answer:
    """What Meta would answer for error `code`.

    Codes 400-599 that are not Graph codes stand for a failing proxy or load
    balancer: an HTML body with that HTTP status and no Graph error at all.
    """
    if code == 190:
        return Answer(http_status or 401, _json(expired_token_error()), code=190)
    if code not in ERRORS and 400 <= code <= 599:
        html = f"<html><body><h1>{code} Server Error</h1></body></html>"
        return Answer(http_status or code, html.encode(), "text/html")

    message, status, usual = ERRORS.get(code, (f"(#{code}) Error", 400, None))
    body = _json(graph_error(code, message, details or usual))
    return Answer(http_status or status, body, code=code)


def graph_error(code: int, message: str, details: str | None) -> dict[str, Any]:
    """A Graph error body (§9 shape) with a fresh fbtrace_id."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = _trace_id()
    return {"error": error}


def expired_token_error() -> dict[str, Any]:
    """The code-190 body: no error_data, subcode 463 (expired token)."""
    return {
        "error": {
            "message": "Error validating access token: Session has expired.",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
            "fbtrace_id": _trace_id(),
        }
    }


def send_success(
    to: str, *, template: bool, template_status: str = "accepted"
) -> Answer:
    """An accepted send with a fresh wamid; templates add `message_status`
    (`accepted`, or `held_for_quality_assessment` or `paused`)."""
    wamid = new_wamid(to)
    message: dict[str, Any] = {"id": wamid}
    if template:
        message["message_status"] = template_status
    body = {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id_of(to)}],
        "messages": [message],
    }
    return Answer(200, _json(body), wamid=wamid)


def read_success() -> Answer:
    """The answer to a mark-read request."""
    return Answer(200, _json({"success": True}))


def new_wamid(to: str) -> str:
    """A unique wamid shaped like Meta's: base64 of the recipient and an id."""
    raw = b"\x18" + bytes([len(wa_id_of(to))]) + wa_id_of(to).encode()
    raw += b"\x15\x02\x00\x11\x18\x12" + secrets.token_hex(9).upper().encode() + b"\x00"
    return "wamid." + base64.b64encode(raw).decode()


def wa_id_of(to: str) -> str:
    """The wa_id Meta derives from a `to`: digits only, no `+`."""
    return "".join(char for char in to if char.isdigit())


def limit_error(body: dict[str, Any]) -> tuple[int, str] | None:
    """The (code, details) Meta would reject this send body with, if any."""
    if not isinstance(body.get("to"), str) or not body["to"]:
        return 100, "The parameter to is required."

    kind = body.get("type", "text")
    if kind == "text":
        return _text_error(body.get("text"))
    if kind == "interactive":
        return _interactive_error(body.get("interactive"))
    return None


def _text_error(text: Any) -> tuple[int, str] | None:
    if not isinstance(text, dict) or not isinstance(text.get("body"), str):
        return 131008, "The parameter text['body'] is required."
    if not text["body"]:
        return 100, "Param text['body'] must be at least 1 character long."
    if len(text["body"]) > TEXT_MAX:
        return 100, f"Param text['body'] must be at most {TEXT_MAX} characters long."
    return None


def _interactive_error(interactive: Any) -> tuple[int, str] | None:
    if not isinstance(interactive, dict):
        return 131008, "The parameter interactive is required."
    action = interactive.get("action")
    action = action if isinstance(action, dict) else {}

    body = interactive.get("body")
    text = body.get("text") if isinstance(body, dict) else None
    short_body = interactive.get("type") in ("button", "location_request_message")
    if short_body and isinstance(text, str) and len(text) > INTERACTIVE_BODY_MAX:
        return 131009, _length("Body text", INTERACTIVE_BODY_MAX)

    if interactive.get("type") == "button":
        return _buttons_error(action.get("buttons"))
    if interactive.get("type") == "list":
        return _list_error(action)
    return None


def _buttons_error(buttons: Any) -> tuple[int, str] | None:
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= BUTTONS_MAX:
        return 131009, f"Buttons count invalid. Min count: 1, Max count: {BUTTONS_MAX}"
    titles = [_button_title(button) for button in _dicts(buttons)]
    if len(titles) != len(buttons):
        return 131009, "Each button must be an object."
    for title in titles:
        if not isinstance(title, str) or not 1 <= len(title) <= BUTTON_TITLE_MAX:
            return 131009, _length("Button title", BUTTON_TITLE_MAX)
    if len(set(titles)) != len(titles):
        return 131009, "Button titles must be unique."
    return None


def _list_error(action: dict[str, Any]) -> tuple[int, str] | None:
    sections = action.get("sections")
    if not isinstance(sections, list) or not sections:
        return 131008, "The parameter action['sections'] is required."
    rows = [row for section in _dicts(sections) for row in _dicts(section.get("rows"))]
    if not 1 <= len(rows) <= ROWS_MAX:
        return 131009, f"Total row count exceed max allowed count: {ROWS_MAX}"

    for row in rows:
        title = row.get("title")
        if not isinstance(title, str) or not 1 <= len(title) <= ROW_TITLE_MAX:
            return 131009, _length("Row title", ROW_TITLE_MAX)
        if len(row.get("description") or "") > ROW_DESCRIPTION_MAX:
            return 131009, _length("Row description", ROW_DESCRIPTION_MAX, low=0)
    return None


def _dicts(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


def _button_title(button: dict[str, Any]) -> Any:
    reply = button.get("reply")
    return reply.get("title") if isinstance(reply, dict) else None


def _length(what: str, high: int, *, low: int = 1) -> str:
    return f"{what} length invalid. Min length: {low}, Max length: {high}"


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _trace_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(17)).decode().rstrip("=")
