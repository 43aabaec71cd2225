"""Graph API message bodies, built and checked against the limits.

Each builder returns the body of one `POST /{phone_number_id}/messages`
(`to`, `type` and its object; the client adds `messaging_product`), already
checked by `limits.check`, so a body that breaks a rule fails where it is
made rather than at Meta. Text longer than a message allows is split with
`text_bodies`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.whatsapp.limits import check, clean_parameter, split_text


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a list message."""

    id: str
    title: str
    description: str | None = None


def text_bodies(to: str, text: str, *, preview_url: bool = False) -> list[dict]:
    """One text body per part of `text`, split at paragraphs or lines."""
    return [text_body(to, part, preview_url=preview_url) for part in split_text(text)]


def text_body(to: str, text: str, *, preview_url: bool = False) -> dict[str, Any]:
    """A text message; `preview_url` asks for a link preview card."""
    body = {
        "to": to,
        "type": "text",
        "text": {"preview_url": preview_url, "body": text},
    }
    return _checked(body)


def template_body(
    to: str, name: str, language: str, parameters: Sequence[str] = ()
) -> dict[str, Any]:
    """An approved template with positional body parameters ({{1}}, {{2}}…).

    Parameters are put on one line with single spaces, as Meta requires.
    """
    template: dict[str, Any] = {"name": name, "language": {"code": language}}
    if parameters:
        values = [
            {"type": "text", "text": clean_parameter(str(value))}
            for value in parameters
        ]
        template["components"] = [{"type": "body", "parameters": values}]
    return _checked({"to": to, "type": "template", "template": template})


def buttons_body(
    to: str,
    text: str,
    buttons: Sequence[tuple[str, str]],
    *,
    footer: str | None = None,
) -> dict[str, Any]:
    """Reply buttons: `buttons` holds (id, title) pairs, at most three."""
    interactive: dict[str, Any] = {
        "type": "button",
        "body": {"text": text},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": id_, "title": title}}
                for id_, title in buttons
            ]
        },
    }
    if footer:
        interactive["footer"] = {"text": footer}
    return _checked({"to": to, "type": "interactive", "interactive": interactive})


def list_body(
    to: str,
    text: str,
    button: str,
    sections: Sequence[tuple[str | None, Sequence[Row]]],
    *,
    header: str | None = None,
    footer: str | None = None,
) -> dict[str, Any]:
    """A list menu: `sections` holds (title, rows) pairs, ten rows at most."""
    interactive: dict[str, Any] = {
        "type": "list",
        "body": {"text": text},
        "action": {
            "button": button,
            "sections": [_section(title, rows) for title, rows in sections],
        },
    }
    if header:
        interactive["header"] = {"type": "text", "text": header}
    if footer:
        interactive["footer"] = {"text": footer}
    return _checked({"to": to, "type": "interactive", "interactive": interactive})


def location_request_body(to: str, text: str) -> dict[str, Any]:
    """A request for the user's location, with a "send location" button."""
    interactive = {
        "type": "location_request_message",
        "body": {"text": text},
        "action": {"name": "send_location"},
    }
    return _checked({"to": to, "type": "interactive", "interactive": interactive})


def _section(title: str | None, rows: Sequence[Row]) -> dict[str, Any]:
    section: dict[str, Any] = {"rows": [_row(row) for row in rows]}
    if title:
        section["title"] = title
    return section


def _row(row: Row) -> dict[str, Any]:
    data = {"id": row.id, "title": row.title}
    if row.description:
        data["description"] = row.description
    return data


def _checked(body: dict[str, Any]) -> dict[str, Any]:
    check(body)
    return body
