"""Turning reply texts into the outbox items the sender will deliver."""

from __future__ import annotations

from bot.engine.interactive import message_body
from bot.whatsapp.events import InboundMessage
from bot.whatsapp.limits import split_text
from storage.base import NewOutbound


def text_messages(
    wa_id: str, phone_number_id: str, texts: list[str]
) -> list[NewOutbound]:
    """One outbox item per text part; long replies are split, never cut off.

    A reply with buttons, a list or a location request goes as one
    interactive message instead (see `bot.engine.interactive`).
    """
    items = []
    for text in texts:
        interactive = message_body(wa_id, text)
        if interactive is not None:
            items.append(NewOutbound(wa_id, phone_number_id, "message", interactive))
            continue
        for part in split_text(text):
            body = {
                "to": wa_id,
                "type": "text",
                "text": {"preview_url": False, "body": part},
            }
            items.append(NewOutbound(wa_id, phone_number_id, "message", body))
    return items


def read_mark(message: InboundMessage, typing: bool) -> NewOutbound:
    """The item that marks an inbound message read (and shows typing…)."""
    body = {"message_id": message.wamid, "typing": typing}
    return NewOutbound(message.wa_id, message.phone_number_id, "read", body)
