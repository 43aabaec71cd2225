"""Turning reply texts into the outbox items the sender will deliver."""

from __future__ import annotations

from typing import Any

from bot.engine.interactive import message_body
from bot.whatsapp.events import InboundMessage
from bot.whatsapp.limits import MAX_PARAMETER, clean_parameter, split_text
from bot.whatsapp.templates import TemplateSpec
from storage.base import NewOutbound


def text_messages(
    wa_id: str,
    phone_number_id: str,
    texts: list[str],
    fallback: TemplateSpec | None = None,
    *,
    preview_url: bool = False,
) -> list[NewOutbound]:
    """One outbox item per text part; long replies are split, never cut off.

    A reply with buttons, a list or a location request goes as one
    interactive message instead, after its start as text when it is too
    long for one (see `bot.engine.interactive`). With a `fallback` template
    of one parameter (config.yaml `templates.text`), each item whose text
    fits in it carries it, for a closed window.
    """
    items = []
    for text in texts:
        # An interactive reply longer than its body may be sends what does
        # not fit ahead of it, as text.
        ahead, interactive = message_body(wa_id, text)
        for part in split_text(ahead if interactive is not None else text):
            body = {
                "to": wa_id,
                "type": "text",
                "text": {"preview_url": preview_url, "body": part},
            }
            items.append(_item(wa_id, phone_number_id, body, part, fallback))
        if interactive is not None:
            said = interactive["interactive"]["body"]["text"]
            items.append(_item(wa_id, phone_number_id, interactive, said, fallback))
    return items


def _item(
    wa_id: str,
    phone_number_id: str,
    body: dict[str, Any],
    text: str,
    spec: TemplateSpec | None,
) -> NewOutbound:
    fallback = None
    # A part too long for one parameter gets none rather than a cut text.
    # Cleaning only shortens a text: most fit before it.
    fits = len(text) <= MAX_PARAMETER or len(clean_parameter(text)) <= MAX_PARAMETER
    if spec is not None and len(spec.parameters) == 1 and fits:
        fallback = spec.body(wa_id, {spec.parameters[0]: text})
    return NewOutbound(wa_id, phone_number_id, "message", body, fallback=fallback)


def read_mark(message: InboundMessage, typing: bool) -> NewOutbound:
    """The item that marks an inbound message read (and shows typing…)."""
    body = {"message_id": message.wamid, "typing": typing}
    return NewOutbound(message.wa_id, message.phone_number_id, "read", body)
