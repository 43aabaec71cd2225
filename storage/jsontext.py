"""JSON text of stored and sent values: orjson, the standard library behind it.

A message is written to JSON and read back several times on its way (the
inbox event, the conversation's slots, each reply and its template
fallback, the request to the Graph API): the standard library spent about
25 µs of a message's CPU on it (bench bodies, 2-4 µs each way a value),
orjson a fifth of that.

Writing, what orjson refuses goes to the standard library, which handles it
as it always did: an integer past 64 bits, a key that is not a string, and
the values orjson would quietly turn into text where the standard library
fails (dates, dataclasses). Reading, orjson turns an integer past 64 bits
into an inexact float: only message bodies, which the engine composes of
text, and the Graph API's answers to a send, whose numbers are never read,
go through it; anything else is read by the standard library.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Dates and dataclasses fail as before instead of being stored as text.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

_standard = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> str:
    """Compact JSON text of `value`, UTF-8 letters as they are."""
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    """As `dumps`, encoded in UTF-8."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        return _standard(value).encode()


def loads_message(text: str | bytes) -> Any:
    """The value of a message body's JSON text (see the module: a number
    past 64 bits would come back inexact).

    Raises:
        ValueError: not JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # NaN, say, which the standard library wrote and reads.
        return json.loads(text)
