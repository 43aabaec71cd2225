"""Who may use which flow, and how a flow starts without words.

A flow's `audience` is `anyone`, `unlinked` (numbers not linked to a driver
account), `driver` (linked drivers, and admins) or `admin`. The engine asks
its services who the number is once per message (`identify`) and keeps the
answer in `WHO` for that message, so that routing, the reply context (the
commands this number may use) and actions all see the same identity.
Without services, every number may use every flow.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, Protocol

from bot.engine.flows import FlowSpec
from bot.whatsapp.events import InboundMessage


class Identity(Protocol):
    """What the engine needs to know of a number (see bot.business.links)."""

    role: str
    link: Any


# The identity of the number whose message is being handled.
WHO: ContextVar[Identity | None] = ContextVar("who", default=None)

# Which roles each audience admits.
ADMITS = {
    "anyone": {"unlinked", "driver", "admin"},
    "unlinked": {"unlinked"},
    "driver": {"driver", "admin"},
    "admin": {"admin"},
}
# Order of commands in a list: the driver's first, AYUDA (anyone) last.
_RANK = {"driver": 0, "admin": 1, "unlinked": 2, "anyone": 3}


def role() -> str | None:
    """The role of the current number; None when no one is identified."""
    who = WHO.get()
    return None if who is None else who.role


def allowed(spec: FlowSpec) -> bool:
    """Whether the current number may use a flow."""
    current = role()
    return current is None or current in ADMITS.get(spec.audience, set())


def commands(specs: Iterable[FlowSpec]) -> list[dict[str, str]]:
    """The commands the current number may use, as rows of a menu."""
    usable = [s for s in specs if s.command and allowed(s)]
    usable.sort(key=lambda s: (_RANK.get(s.audience, 9), s.command))
    return [
        {
            "command": str(s.command),
            "description": s.description,
            "id": f"menu_{s.name}",
            "title": s.title or str(s.command).capitalize(),
        }
        for s in usable
    ]


def context(
    menus: dict[str | None, list[dict[str, str]]], specs: Iterable[FlowSpec]
) -> dict[str, Any]:
    """The identity values every reply template may read.

    `menus` keeps the commands of each role for one set of flows (`specs`),
    which only a reload changes; each context gets a copy of its own.
    """
    who = WHO.get()
    link = None if who is None else who.link
    current = None if who is None else who.role
    menu = menus.get(current)
    if menu is None:
        menu = menus[current] = commands(specs)
    return {
        "role": current or "anyone",
        "linked": link is not None,
        "driver_name": getattr(link, "name", "") or "",
        "commands": [dict(row) for row in menu],
    }


def fallback_for(specs: Iterable[FlowSpec]) -> str | None:
    """The fallback flow meant for the current number's role, if one is."""
    if role() is None:
        return None
    for spec in specs:
        if spec.fallback and spec.audience != "anyone" and allowed(spec):
            return spec.name
    return None


def started_by(spec: FlowSpec, message: InboundMessage) -> bool:
    """Whether a message starts a flow by its button id or its type.

    Buttons, list rows and template quick replies route by their id (never
    by their title, which the driver's phone shows and we do not control).
    """
    if message.type in spec.start_types:
        return True
    reply_id = message.reply_id
    if not reply_id:
        return False
    if reply_id in spec.start_ids or f"menu_{spec.name}" == reply_id:
        return True
    return any(
        i.endswith(":") and reply_id.startswith(i) and len(reply_id) > len(i)
        for i in spec.start_ids
    )
