"""Parse webhook bodies into typed events, whatever shape they arrive in.

Meta batches entries, changes, messages and statuses in one POST, omits
optional fields freely and adds new ones without notice (CLOUD_API.md §3-§7).
The parser walks everything, keeps what it understands, turns what it does
not into notices, and never raises: one odd item must not cost the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bot.whatsapp.events import (
    Event,
    InboundMessage,
    Location,
    Media,
    Notice,
    StatusUpdate,
)

log = logging.getLogger("tracbot.webhook")

MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")

# The notice topic of a message that cannot be answered: no sender phone
# number (`from`) or no message id.
UNANSWERABLE = "message_without_phone_or_id"


@dataclass(slots=True)
class ParseResult:
    """The events found in one body and the problems met on the way."""

    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_body(data: Any) -> ParseResult:
    """Return every event of a decoded webhook body; never raises."""
    result = ParseResult()
    if not isinstance(data, dict):
        result.problems.append("body is not a JSON object")
        return result

    if data.get("object") != "whatsapp_business_account":
        result.events.append(Notice(topic=f"object:{data.get('object')}", body=data))
        return result

    for entry in _list(data.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            _parse_change(_dict(change), result)
    return result


def _parse_change(change: dict[str, Any], result: ParseResult) -> None:
    topic = _str(change.get("field")) or "unknown"
    value = _dict(change.get("value"))
    if topic != "messages":
        result.events.append(Notice(topic=topic, body=change))
        return

    phone_number_id = _str(_dict(value.get("metadata")).get("phone_number_id"))
    names = _profile_names(value.get("contacts"))

    for raw in _list(value.get("messages")):
        try:
            message = _message(_dict(raw), phone_number_id, names)
        except (TypeError, ValueError, AttributeError) as exc:
            result.problems.append(f"message skipped: {exc}")
            continue
        if message is not None:
            result.events.append(message)
        else:
            # No phone number to answer (a user known only by a business-
            # scoped id, CLOUD_API.md §4) or no id: kept as a notice, so the
            # message is stored and logged rather than lost.
            result.events.append(
                Notice(
                    topic=UNANSWERABLE,
                    body=_dict(raw),
                    phone_number_id=phone_number_id,
                )
            )

    for raw in _list(value.get("statuses")):
        status = _status(_dict(raw), phone_number_id)
        if status is None:
            result.problems.append("status without id or status skipped")
        else:
            result.events.append(status)

    for error in _list(value.get("errors")):
        result.events.append(
            Notice(topic="errors", body=_dict(error), phone_number_id=phone_number_id)
        )


def _profile_names(contacts: Any) -> dict[str, str]:
    # Names are matched by wa_id, never by position (CLOUD_API.md §4).
    names = {}
    for contact in _list(contacts):
        contact = _dict(contact)
        wa_id = _str(contact.get("wa_id"))
        name = _str(_dict(contact.get("profile")).get("name"))
        if wa_id and name:
            names[wa_id] = name
    return names


def _message(
    raw: dict[str, Any], phone_number_id: str | None, names: dict[str, str]
) -> InboundMessage | None:
    wamid = _str(raw.get("id"))
    wa_id = _str(raw.get("from"))
    if not wamid or not wa_id:
        return None

    kind = _str(raw.get("type")) or "unknown"
    context = _dict(raw.get("context"))
    fields: dict[str, Any] = {
        "wamid": wamid,
        "wa_id": wa_id,
        "phone_number_id": phone_number_id or "",
        "timestamp": _int(raw.get("timestamp")),
        "type": kind,
        "profile_name": names.get(wa_id),
        "context_id": _str(context.get("id")),
        "forwarded": bool(
            context.get("forwarded") or context.get("frequently_forwarded")
        ),
        "referral": raw["referral"] if isinstance(raw.get("referral"), dict) else None,
        "errors": tuple(_dict(e) for e in _list(raw.get("errors"))),
        "raw": raw,
    }
    fields.update(_content(kind, raw))
    return InboundMessage(**fields)


def _content(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Return the type-specific fields of a message."""
    body = _dict(raw.get(kind))
    if kind == "text":
        return {"text": _str(body.get("body")) or ""}
    if kind in MEDIA_TYPES:
        return _media(body)
    if kind == "location":
        return _location(body)
    if kind == "interactive":
        return _interactive(body)
    if kind == "button":
        # A template quick reply: the payload we set, else the label.
        payload = _str(body.get("payload")) or _str(body.get("text"))
        return {"reply_id": payload, "reply_title": _str(body.get("text"))}
    if kind == "reaction":
        return {
            "reaction_to": _str(body.get("message_id")),
            "reaction_emoji": _str(body.get("emoji")) or None,
        }
    if kind == "system":
        new = _str(body.get("wa_id")) or _str(body.get("new_wa_id"))
        return {
            "text": _str(body.get("body")),
            # A number, as every wa_id: "hola" made a conversation of its own.
            "new_wa_id": new if new and new.isdigit() else None,
        }
    return {}


def _media(body: dict[str, Any]) -> dict[str, Any]:
    media_id = _str(body.get("id"))
    if not media_id:
        return {"text": _str(body.get("caption"))}
    voice = body.get("voice")
    media = Media(
        id=media_id,
        mime_type=_str(body.get("mime_type")),
        sha256=_str(body.get("sha256")),
        filename=_str(body.get("filename")),
        url=_str(body.get("url")),
        voice=voice if isinstance(voice, bool) else None,
    )
    return {"media": media, "text": _str(body.get("caption"))}


def _location(body: dict[str, Any]) -> dict[str, Any]:
    lat, lon = body.get("latitude"), body.get("longitude")
    if not _is_number(lat) or not _is_number(lon):
        return {}
    location = Location(
        latitude=float(lat),
        longitude=float(lon),
        name=_str(body.get("name")),
        address=_str(body.get("address")),
    )
    return {"location": location}


def _interactive(body: dict[str, Any]) -> dict[str, Any]:
    kind = _str(body.get("type"))
    if kind in ("button_reply", "list_reply"):
        reply = _dict(body.get(kind))
        return {
            "reply_id": _str(reply.get("id")),
            "reply_title": _str(reply.get("title")),
        }
    if kind == "nfm_reply":
        reply = _dict(body.get(kind))
        return {"reply_id": _str(reply.get("name")), "text": _str(reply.get("body"))}
    return {}


def _status(raw: dict[str, Any], phone_number_id: str | None) -> StatusUpdate | None:
    wamid = _str(raw.get("id"))
    status = _str(raw.get("status"))
    # The status is the message's, found by its wamid: a recipient known
    # only by its business-scoped id still moves it forward.
    recipient = _str(raw.get("recipient_id")) or _str(raw.get("recipient_user_id"))
    if not wamid or not status:
        return None
    pricing = raw.get("pricing")
    return StatusUpdate(
        wamid=wamid,
        status=status,
        timestamp=_int(raw.get("timestamp")),
        recipient_id=recipient or "",
        phone_number_id=phone_number_id or "",
        errors=tuple(_dict(e) for e in _list(raw.get("errors"))),
        pricing=pricing if isinstance(pricing, dict) else None,
        raw=raw,
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value == value and abs(value) != float("inf")
