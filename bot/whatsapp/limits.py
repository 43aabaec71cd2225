"""Cloud API limits on what we send (CLOUD_API.md §8, §10), applied before
a request leaves, so Meta never has to refuse one of ours.

`split_text` makes a long reply fit; `check` refuses a message body that no
split can fix (a fourth button, a title too long) with a `LimitError` that
names the rule, the way Meta's 131009 details would.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from bot.errors import TracbotError

MAX_TEXT = 4096
# Meta refuses template parameters with new lines, tabs or more than four
# spaces in a row (error 132018), and longer ones than this.
MAX_PARAMETER = 1024
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_LIST_BUTTON = 20
MAX_LIST_SECTIONS = 10
MAX_LIST_ROWS = 10
MAX_SECTION_TITLE = 24
MAX_ROW_TITLE = 24
MAX_ROW_ID = 200
MAX_ROW_DESCRIPTION = 72
MAX_INTERACTIVE_BODY = 1024
MAX_LIST_BODY = 4096
MAX_HEADER = 60
MAX_FOOTER = 60


class LimitError(TracbotError):
    """A message body breaks a Cloud API limit; never sent as it is."""


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split a reply into parts of at most `limit` characters.

    Cuts at a paragraph break where one falls in the second half of a part,
    else at a line break, else at a space, and only as a last resort inside
    a word, so each part reads as a whole message.
    """
    parts = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut_point(rest, limit)
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def body_limit(interactive_type: str | None) -> int:
    """The characters of text an interactive message of that type holds: a
    list four times what buttons or a location request do."""
    return MAX_LIST_BODY if interactive_type == "list" else MAX_INTERACTIVE_BODY


def last_part_start(text: str, limit: int) -> int:
    """Where the last part of `text`, at most `limit` characters, begins.

    After the first paragraph break of that part where there is one (a
    notice and the answer after it part there: a cut at a space split the
    notice mid-sentence), else a line break, else a space; never inside
    what the reader sees as one character; 0 when the whole text fits.
    """
    start = len(text) - limit
    if start <= 0:
        return 0
    window = text[start:].rstrip()
    for separator in ("\n\n", "\n", " "):
        at = window.find(separator)
        if at >= 0:
            # Stripped first: a text ending in a break left an empty part.
            return start + at + len(separator)
    while start < len(text) and between_characters(text, start) != start:
        start += 1
    return start


def clean_parameter(text: str) -> str:
    """`text` as Meta takes a template parameter: one line, single spaces."""
    # str.split() breaks on the characters `\s` matches, five times faster.
    return " ".join(text.split())


def _cut_point(text: str, limit: int) -> int:
    window = text[: limit + 1]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at >= limit // 2:
            return at
    return between_characters(text, limit)


def between_characters(text: str, cut: int) -> int:
    """`cut`, moved back to where one character the reader sees ends and
    the next begins: a flag, a family joined by zero-width joiners or a
    letter with its accent cut in two showed as boxes on both sides."""
    lowest = cut // 2
    while cut > lowest and (_joins(text[cut]) or text[cut - 1] == ZWJ):
        cut -= 1
    # Flags are pairs of regional indicators: an odd run before the cut
    # means the cut splits one.
    run = 0
    while cut - run > 0 and _regional(text[cut - run - 1]):
        run += 1
    if run % 2 and _regional(text[cut]) and cut - 1 > lowest:
        cut -= 1
    return cut


ZWJ = "\u200d"


def _joins(ch: str) -> bool:
    """Whether `ch` belongs to the character before it."""
    point = ord(ch)
    return (
        ch == ZWJ
        or 0xFE00 <= point <= 0xFE0F  # variation selectors (emoji style)
        or 0x1F3FB <= point <= 0x1F3FF  # skin tones
        or 0xE0020 <= point <= 0xE007F  # tags (subdivision flags)
        or 0x1160 <= point <= 0x11FF  # Hangul vowels and finals of a syllable
        or 0xD7B0 <= point <= 0xD7FF
        or unicodedata.category(ch) in ("Mn", "Me")  # combining marks
    )


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def check(body: dict[str, Any]) -> None:
    """Refuse a message body that breaks a limit.

    Raises:
        LimitError: the first broken rule, e.g. `button title 'Sí, llegué a
            la mina' is 24 characters, at most 20`.
    """
    kind = body.get("type", "text")
    if kind == "text":
        _text(_get(body, "text", "body"), "text body", MAX_TEXT)
    elif kind == "interactive":
        _interactive(body.get("interactive") or {})
    elif kind == "template":
        _template(body.get("template") or {})


def _interactive(interactive: dict[str, Any]) -> None:
    kind = interactive.get("type")
    body = _get(interactive, "body", "text")
    action = interactive.get("action") or {}
    _optional(_get(interactive, "footer", "text"), "footer", MAX_FOOTER)
    if kind == "button":
        _text(body, "interactive body", MAX_INTERACTIVE_BODY)
        _buttons(action.get("buttons"))
    elif kind == "list":
        _text(body, "list body", MAX_LIST_BODY)
        _optional(_get(interactive, "header", "text"), "list header", MAX_HEADER)
        _text(action.get("button"), "list button label", MAX_LIST_BUTTON)
        _sections(action.get("sections"))
    elif kind == "location_request_message":
        _text(body, "location request body", MAX_INTERACTIVE_BODY)
    else:
        raise LimitError(f"interactive type {kind!r} is not one we send")


def _buttons(buttons: Any) -> None:
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_BUTTONS:
        count = len(buttons) if isinstance(buttons, list) else 0
        raise LimitError(f"{count} buttons, from 1 to {MAX_BUTTONS} allowed")
    titles = []
    for button in buttons:
        reply = button.get("reply") if isinstance(button, dict) else None
        reply = reply if isinstance(reply, dict) else {}
        titles.append(_text(reply.get("title"), "button title", MAX_BUTTON_TITLE))
        _text(reply.get("id"), "button id", MAX_BUTTON_ID)
    if len(set(titles)) != len(titles):
        raise LimitError(f"button titles must be unique, got {titles}")


def _sections(sections: Any) -> None:
    if not isinstance(sections, list) or not 1 <= len(sections) <= MAX_LIST_SECTIONS:
        raise LimitError(f"a list needs 1 to {MAX_LIST_SECTIONS} sections")
    rows = []
    for section in sections:
        section = section if isinstance(section, dict) else {}
        _optional(section.get("title"), "section title", MAX_SECTION_TITLE)
        rows += section.get("rows") or []
    if not 1 <= len(rows) <= MAX_LIST_ROWS:
        raise LimitError(f"{len(rows)} list rows, from 1 to {MAX_LIST_ROWS} allowed")
    for row in rows:
        row = row if isinstance(row, dict) else {}
        _text(row.get("title"), "row title", MAX_ROW_TITLE)
        _text(row.get("id"), "row id", MAX_ROW_ID)
        _optional(row.get("description"), "row description", MAX_ROW_DESCRIPTION)


def _template(template: dict[str, Any]) -> None:
    _text(template.get("name"), "template name", 512)
    _text(_get(template, "language", "code"), "template language", 15)
    for component in template.get("components") or []:
        for index, parameter in enumerate(component.get("parameters") or [], 1):
            if parameter.get("type") == "text":
                what = f"template parameter {index}"
                _text(parameter.get("text"), what, MAX_PARAMETER)


def _text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LimitError(f"{what} is missing or empty")
    if len(value) > limit:
        raise LimitError(
            f"{what} {_quote(value)} is {len(value)} characters, at most {limit}"
        )
    return value


def _optional(value: Any, what: str, limit: int) -> None:
    if value is not None:
        _text(value, what, limit)


def _get(data: dict[str, Any], key: str, inner: str) -> Any:
    node = data.get(key)
    return node.get(inner) if isinstance(node, dict) else None


def _quote(value: str) -> str:
    return repr(value if len(value) <= 30 else value[:27] + "...")
