"""How history entries and delivery counts look in API answers.

History follows the seed's message log: id, message_id (wamid), direction
(outgoing or incoming), type, content, status and created_at, plus the
error of a failed message. Metrics follow the seed too; `delivered`
includes read messages (a status only moves forward), and rates are
percentages rounded to two decimals.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.base import DeliveryCounts, HistoryEntry, Link, OutboxItem

# The statuses whose `error_detail` history shows.
SAYS_WHY = ("failed", "replaced", "queued")


def history_entry(entry: HistoryEntry) -> dict[str, Any]:
    """One message of the history answer."""
    outgoing = entry.direction == "out"
    kind, content = _outbound(entry.body) if outgoing else _inbound(entry.body)
    return {
        "id": entry.id,
        "message_id": entry.wamid,
        "direction": "outgoing" if outgoing else "incoming",
        "type": kind,
        "content": content,
        "status": entry.status,
        "error_code": entry.error_code,
        # Queued again after a failed try: why, while it waits for the next.
        "error": entry.error_detail if entry.status in SAYS_WHY else None,
        "replaces": entry.replaces,
        "created_at": entry.at.isoformat(),
    }


def message_view(
    item: OutboxItem, replacement: OutboxItem | None = None
) -> dict[str, Any]:
    """The messages answer: an item a send call queued, and its template
    if one went in its place."""
    view = _progress(item)
    view["phone"] = f"+{item.wa_id}"
    view["created_at"] = item.created_at.isoformat()
    view["replaced_by"] = None if replacement is None else _progress(replacement)
    return view


def _progress(item: OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "status": item.status,
        "message_id": item.wamid,
        "error_code": item.error_code,
        "error": item.error_detail if item.status in SAYS_WHY else None,
    }


def link_view(phone: str, link: Link | None) -> dict[str, Any]:
    """The links answer: the driver account a phone acts for, if any."""
    if link is None:
        return {"phone": phone, "linked": False}
    return {
        "phone": phone,
        "linked": True,
        "driver_id": link.driver_id,
        "rut": link.rut,
        "name": link.name,
        "role": link.role,
        "method": link.method,
        "linked_at": link.linked_at.isoformat(),
    }


def metrics(counts: DeliveryCounts, start: datetime, end: datetime) -> dict[str, Any]:
    """The metrics answer for a period."""
    return {
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "metrics": {
            "sent": counts.sent,
            "delivered": counts.delivered,
            "read": counts.read,
            "failed": counts.failed,
            "queued": counts.queued,
            "delivery_rate": _rate(counts.delivered, counts.sent),
            "read_rate": _rate(counts.read, counts.delivered),
        },
    }


def _rate(part: int, whole: int) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


def _outbound(body: dict[str, Any]) -> tuple[str, str | None]:
    kind = body.get("type", "text")
    if kind == "text":
        return kind, (body.get("text") or {}).get("body")
    if kind == "template":
        template = body.get("template") or {}
        values = [
            parameter.get("text", "")
            for component in template.get("components") or []
            for parameter in component.get("parameters") or []
        ]
        return kind, f"{template.get('name')}({', '.join(values)})"
    if kind == "interactive":
        return kind, ((body.get("interactive") or {}).get("body") or {}).get("text")
    return kind, None


def _inbound(event: dict[str, Any]) -> tuple[str, str | None]:
    kind = event.get("type") or "unknown"
    if kind == "reaction":
        # The emoji; a reaction taken back has none.
        return kind, event.get("reaction_emoji") or None
    if event.get("text") is not None:
        return kind, event["text"]
    if event.get("reply_title"):
        return kind, event["reply_title"]
    location = event.get("location")
    if location:
        return kind, f"{location.get('latitude')}, {location.get('longitude')}"
    return kind, None
