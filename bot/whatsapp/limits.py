"""Cloud API limits on what we send (CLOUD_API.md §8, §10), applied before
a request leaves, so Meta never has to refuse one of ours."""

from __future__ import annotations

MAX_TEXT = 4096
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_LIST_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_INTERACTIVE_BODY = 1024


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


def _cut_point(text: str, limit: int) -> int:
    window = text[: limit + 1]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at >= limit // 2:
            return at
    return limit
