"""Printing outgoing messages readably, for demo mode and `tracbot chat`."""

from __future__ import annotations

from typing import Any

from bot.logs import mask


def describe(body: dict[str, Any]) -> str:
    """Return the text a driver would read for a Graph API message body."""
    kind = body.get("type")
    if kind == "text":
        return body.get("text", {}).get("body", "")
    if kind == "interactive":
        interactive = body.get("interactive", {})
        text = interactive.get("body", {}).get("text", "")
        action = interactive.get("action", {})
        buttons = [
            b.get("reply", {}).get("title", "") for b in action.get("buttons", [])
        ]
        rows = [
            row.get("title", "")
            for section in action.get("sections", [])
            for row in section.get("rows", [])
        ]
        choices = buttons or rows
        if action.get("name") == "send_location":
            choices = ["📍 Enviar ubicación"]
        return text + "".join(f"\n  [{c}]" for c in choices)
    if kind == "template":
        template = body.get("template", {})
        return f"(plantilla {template.get('name')})"
    return f"({kind})"


def banner(wa_id: str, body: dict[str, Any]) -> str:
    """One outgoing message as printed on the demo console."""
    text = describe(body).replace("\n", "\n    ")
    return f"\n→ a {mask(wa_id)}:\n    {text}\n"
