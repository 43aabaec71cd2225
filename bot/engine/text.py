"""Normalising what drivers type so that commands match however written.

`*Ayúda*`, ` AYUDA `, `ayuda` with a combining accent or wrapped in
zero-width characters all normalise to `ayuda`. The original text is kept
elsewhere; this form is only for matching.
"""

from __future__ import annotations

import re
import unicodedata

# WhatsApp markup: *bold*, _italic_, ~strike~, ```mono```.
_MARKUP = re.compile(r"[*_~`]+")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")
_SHOUT = re.compile(r"([^\W\d_])\1{2,}")


def normalize(text: str | None) -> str:
    """Return the matching form of a text: no accents, markup or case."""
    if not text:
        return ""

    # Format characters (zero-width space, joiners, direction marks) are
    # invisible to the driver, so they must be invisible to matching too.
    decomposed = unicodedata.normalize("NFKD", text)
    kept = (
        ch
        for ch in decomposed
        if unicodedata.category(ch) not in ("Mn", "Cf", "Cc") or ch in "\n\t"
    )
    plain = "".join(kept).casefold()

    plain = _MARKUP.sub(" ", plain)
    plain = _SPACE.sub(" ", plain).strip()
    return _EDGE_PUNCT.sub("", plain)


def command_form(text: str | None) -> str:
    """`normalize`, except that a text of only symbols keeps them.

    "?" or "🆘" alone normalise to nothing, yet a flow may name them as
    start words; they are compared without spaces and invisible marks.
    """
    typed = normalize(text)
    if typed or not text:
        return typed
    plain = unicodedata.normalize("NFKC", text)
    return "".join(
        ch
        for ch in plain
        if not ch.isspace() and unicodedata.category(ch) not in ("Mn", "Cf", "Cc")
    )


def collapse_shout(word: str) -> str:
    """`ayudaaa` → `ayuda`: a letter held down 3+ times counts once."""
    return _SHOUT.sub(r"\1", word)


def words(text: str) -> list[str]:
    """Split a normalised text into words, dropping punctuation."""
    return [w for w in re.split(r"[\W_]+", text) if w]


def close_enough(typed: str, word: str) -> bool:
    """Whether `typed` is `word` with at most one typo (for words of 5+)."""
    if typed == word:
        return True
    if len(word) < 5 or abs(len(typed) - len(word)) > 1:
        return False
    return _distance_at_most_one(typed, word)


def _distance_at_most_one(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance <= 1, in linear time."""
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        rest_equal = a[i + 1 :] == b[i + 1 :]
        swapped = a[i : i + 2] == b[i : i + 2][::-1] and a[i + 2 :] == b[i + 2 :]
        return rest_equal or swapped
    return a[i:] == b[i + 1 :]
