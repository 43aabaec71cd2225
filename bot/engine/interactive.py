"""Replies with buttons, a list or a location request (CLOUD_API.md §8).

A state's `reply` is a template name, or a mapping that adds how the text
is presented:

    reply: {template: vincular_confirmar,
            buttons: [{id: si, title: "Sí"}, {id: no, title: "No"}]}
    reply: {template: menu, list: {button: Ver opciones, rows: commands}}
    reply: {template: pedir_ubicacion, location_request: true}

A rendered reply is a `Reply`: a `str` (the text, which always carries a
fallback like "responde SI o NO" for phones that cannot show the buttons;
it is what tests compare) with the interactive part beside it. Titles are
cut to the Cloud API limits here, so Meta never refuses one of ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from bot.whatsapp import limits

log = logging.getLogger("tracbot.engine")

Render = Callable[[str, dict[str, Any]], str]


class Reply(str):
    """A reply text plus its Graph API `interactive.action`, if any."""

    interactive: dict[str, Any] | None = None

    @classmethod
    def of(cls, text: str, interactive: dict[str, Any] | None) -> Reply:
        reply = cls(text)
        reply.interactive = interactive
        return reply


def template_of(reply: str | Mapping[str, Any]) -> str:
    """The template name of a reply spec."""
    if isinstance(reply, Mapping):
        return str(reply.get("template", ""))
    return reply


def render_reply(
    spec: str | Mapping[str, Any], render: Render, context: dict[str, Any]
) -> str:
    """Render a reply spec to its text, with buttons or a list if it has them."""
    text = render(template_of(spec), context)
    if not isinstance(spec, Mapping):
        return text
    return Reply.of(text, _interactive(spec, context))


def _interactive(
    spec: Mapping[str, Any], context: dict[str, Any]
) -> dict[str, Any] | None:
    if spec.get("buttons"):
        return _buttons(spec["buttons"])
    if spec.get("list"):
        return _list(spec["list"], context)
    if spec.get("location_request"):
        return {"type": "location_request_message", "action": {"name": "send_location"}}
    return None


def _buttons(raw: list[Any]) -> dict[str, Any] | None:
    if len(raw) > limits.MAX_BUTTONS:
        log.warning("reply has %d buttons, sending the first 3", len(raw))
    # `buttons: [Sí, No]`: a word is the button's id and its title.
    given = [b if isinstance(b, Mapping) else {"id": b} for b in raw]
    buttons = [
        {
            "type": "reply",
            "reply": {
                "id": str(b["id"]),
                "title": _cut(str(b.get("title") or b["id"]), limits.MAX_BUTTON_TITLE),
            },
        }
        for b in given[: limits.MAX_BUTTONS]
    ]
    for part in ("id", "title"):
        values = [button["reply"][part] for button in buttons]
        if len(set(values)) != len(values):
            # Meta refuses the whole message; the text alone still carries
            # its "responde SI o NO" (tracbot check reports this).
            log.warning("reply buttons share a %s %s, sent as text", part, values)
            return None
    return {"type": "button", "action": {"buttons": buttons}}


def _list(raw: Mapping[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    rows = raw.get("rows") or []
    if isinstance(rows, str):
        # `rows: commands` reads the rows from the template context.
        name, rows = rows, context.get(rows) or []
        if not isinstance(rows, list | tuple):
            # A slot of what the driver wrote: its letters became rows,
            # Meta refused the message and the driver got nothing.
            log.warning("list rows %r are not a list, sent as text", name)
            return None
    rows = [r if isinstance(r, Mapping) else {"id": r} for r in rows]
    rows = [
        {
            "id": str(r["id"]),
            "title": _cut(str(r.get("title") or r["id"]), limits.MAX_ROW_TITLE),
            **(
                {"description": _cut(str(r["description"]), limits.MAX_ROW_DESCRIPTION)}
                if r.get("description")
                else {}
            ),
        }
        for r in rows[: limits.MAX_LIST_ROWS]
        if r.get("id")
    ]
    if not rows:
        return None
    button = _cut(str(raw.get("button") or "Ver opciones"), limits.MAX_BUTTON_TITLE)
    section = {"title": _cut(str(raw.get("title") or "Opciones"), 24), "rows": rows}
    return {"type": "list", "action": {"button": button, "sections": [section]}}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_body(wa_id: str, reply: str) -> tuple[str, dict[str, Any] | None]:
    """The text to send before an interactive reply, and the Graph API body
    of the reply; ("", None) when it is plain text.

    A text longer than the body of its kind may be (1,024 characters beside
    buttons or a location request, 4,096 beside a list) is split: what does
    not fit goes first as text, and its last part carries the buttons or the
    list. Sent whole as text, it lost them, and a state that takes only a
    button or a list row could not be answered at all.
    """
    interactive = getattr(reply, "interactive", None)
    if not interactive:
        return "", None
    text = str(reply)
    cut = limits.last_part_start(text, limits.body_limit(interactive.get("type")))
    if cut:
        log.info(
            "interactive reply of %d characters: its first %d go ahead as text",
            len(text),
            cut,
        )
    body = {
        "to": wa_id,
        "type": "interactive",
        "interactive": {**interactive, "body": {"text": text[cut:].strip()}},
    }
    return text[:cut].strip(), body
