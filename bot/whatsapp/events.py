"""Typed events parsed from Cloud API webhook bodies.

An event is what the rest of tracbot sees of a webhook: one inbound message,
one status update of a message we sent, or a notice (anything validly signed
that is neither). Each event knows its inbox key, the key under which a
redelivery of the same thing is recognised and ignored, and turns into plain
JSON and back so that the durable inbox can hold it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Message types that carry a user's intent and so refresh the 24-hour window
# (CLOUD_API.md §11: reactions, system and unsupported messages may not).
WINDOW_TYPES = frozenset(
    {
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "button",
        "order",
    }
)


@dataclass(frozen=True, slots=True)
class Location:
    """A location pin or venue shared by a user."""

    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """A media attachment: ids and metadata only, never the bytes."""

    id: str
    mime_type: str | None = None
    sha256: str | None = None
    filename: str | None = None
    url: str | None = None
    voice: bool | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message a user sent to one of our business numbers."""

    wamid: str
    wa_id: str
    phone_number_id: str
    timestamp: int
    type: str
    text: str | None = None
    profile_name: str | None = None
    reply_id: str | None = None
    reply_title: str | None = None
    location: Location | None = None
    media: Media | None = None
    context_id: str | None = None
    forwarded: bool = False
    reaction_to: str | None = None
    reaction_emoji: str | None = None
    new_wa_id: str | None = None
    referral: dict[str, Any] | None = None
    errors: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    kind = "message"

    @property
    def key(self) -> str:
        return self.wamid

    @property
    def opens_window(self) -> bool:
        """Whether this message refreshes the 24-hour service window."""
        return self.type in WINDOW_TYPES


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A delivery status of a message we sent."""

    wamid: str
    status: str
    timestamp: int
    recipient_id: str
    phone_number_id: str
    errors: tuple[dict[str, Any], ...] = ()
    pricing: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    kind = "status"

    @property
    def key(self) -> str:
        # One wamid gets several statuses; each is its own event.
        return f"{self.wamid}:{self.status}"

    @property
    def wa_id(self) -> str | None:
        # Empty when Meta named the recipient by its business-scoped id
        # only: the status then waits in no phone's queue.
        return self.recipient_id or None

    @property
    def error_code(self) -> int | None:
        for error in self.errors:
            try:
                return int(error.get("code"))
            except (TypeError, ValueError):
                continue
        return None


@dataclass(frozen=True, slots=True)
class Notice:
    """Anything validly signed that is not a message or a status."""

    topic: str
    body: dict[str, Any]
    phone_number_id: str | None = None

    kind = "notice"
    wa_id = None

    @property
    def key(self) -> str:
        # Notices have no id of their own: the content is the identity, so a
        # redelivery of the same notice is still recognised.
        text = json.dumps(self.body, sort_keys=True, ensure_ascii=True)
        digest = hashlib.sha256(f"{self.topic}\n{text}".encode()).hexdigest()
        return f"notice:{digest[:40]}"


Event = InboundMessage | StatusUpdate | Notice

_KINDS: dict[str, type] = {
    "message": InboundMessage,
    "status": StatusUpdate,
    "notice": Notice,
}


# Field names of each event class, in declaration order (the stored order).
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (InboundMessage, StatusUpdate, Notice, Location, Media)
}


def to_json(event: Event) -> dict[str, Any]:
    """Return the event as JSON-ready data, tagged with its kind."""
    # By hand, not `dataclasses.asdict`: that deep-copies `raw` (the webhook
    # item) on every webhook, while the data goes to JSON straight away.
    data = {name: getattr(event, name) for name in _FIELDS[type(event)]}
    for name in ("location", "media"):
        value = data.get(name)
        if value is not None:
            data[name] = {key: getattr(value, key) for key in _FIELDS[type(value)]}
    data["kind"] = event.kind
    return data


def from_json(data: dict[str, Any]) -> Event:
    """Rebuild an event from `to_json` data."""
    data = dict(data)
    cls = _KINDS[data.pop("kind")]
    if cls is InboundMessage:
        if data.get("location"):
            data["location"] = Location(**data["location"])
        if data.get("media"):
            data["media"] = Media(**data["media"])
    if "errors" in data:
        data["errors"] = tuple(data["errors"])
    return cls(**data)
