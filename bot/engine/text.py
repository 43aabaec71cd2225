"""Normalising what drivers type so that commands match however written.

`*Ayúda*`, ` AYUDA `, `ayuda` with a combining accent or wrapped in
zero-width characters all normalise to `ayuda`. The original text is kept
elsewhere; this form is only for matching.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable

# WhatsApp markup: *bold*, _italic_, ~strike~, ```mono```.
_MARKUP = re.compile(r"[*_~`]+")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")
_SHOUT = re.compile(r"([^\W\d_])\1{2,}")


def visible(text: str) -> bool:
    """Whether a text shows anything: letters, digits, marks, symbols; not
    only spaces, line breaks, format characters (zero-width, soft hyphen),
    control characters or the letters that draw nothing (a Braille blank,
    Hangul fillers)."""
    return any(
        not ch.isspace()
        and unicodedata.category(ch) not in ("Cf", "Cc")
        and ch not in BLANK_LETTERS
        for ch in text
    )


BLANK_LETTERS = frozenset("\u2800\u3164\u115f\u1160\uffa0\u17b4\u17b5")


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


def answer_form(text: str | None) -> str:
    """How a typed answer and a `one_of` word compare: as `command_form`,
    with punctuation between words ignored ("Sí, soy yo" is "si soy yo"),
    a held-down letter once, and a symbol without its skin tone (👍🏿 is
    👍)."""
    typed = command_form(text)
    found = words(typed)
    if found:
        return " ".join(collapse_shout(word) for word in found)
    return "".join(ch for ch in typed if not 0x1F3FB <= ord(ch) <= 0x1F3FF)


def collapse_shout(word: str) -> str:
    """`ayudaaa` → `ayuda`: a letter held down 3+ times counts once."""
    return _SHOUT.sub(r"\1", word)


def words(text: str) -> list[str]:
    """Split a normalised text into words, dropping punctuation."""
    return [w for w in re.split(r"[\W_]+", text) if w]


def close_enough(typed: str, word: str) -> bool:
    """Whether `typed` is `word` with at most one typo (for words of 5+).

    A typo is a letter missing, one too many, two swapped, one struck for a
    neighbour on the keyboard (`estadp`) or written for one that sounds the
    same (`ubicasion`). Another letter in its place
    is no slip of the finger but, often, another word: `listo` is not a
    typo of `lista`, nor `salio` of `salir`.
    """
    if typed == word:
        return True
    if len(word) < 5 or abs(len(typed) - len(word)) > 1:
        return False
    return _distance_at_most_one(typed, word)


def _distance_at_most_one(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance <= 1 (substitutions by neighbouring
    keys only), in linear time."""
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        if i == len(a):
            return True
        struck = a[i + 1 :] == b[i + 1 :] and _neighbours(a[i], b[i])
        swapped = a[i : i + 2] == b[i : i + 2][::-1] and a[i + 2 :] == b[i + 2 :]
        return struck or swapped
    return a[i:] == b[i + 1 :]


# The letter rows of a keyboard (QWERTY, as on Spanish phones; ñ is
# normalised to n before matching).
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keys_around(row: int, col: int) -> set[str]:
    # Rows are staggered: a key touches the one before and after it, two
    # keys of the row above and two of the row below.
    around = set()
    for r, cols in ((row, (col - 1, col + 1)), (row - 1, (col, col + 1))):
        around.update(_key(r, c) for c in cols)
    around.update(_key(row + 1, c) for c in (col - 1, col))
    return around - {""}


def _key(row: int, col: int) -> str:
    if 0 <= row < len(_ROWS) and 0 <= col < len(_ROWS[row]):
        return _ROWS[row][col]
    return ""


_NEIGHBOURS = {
    letter: _keys_around(row, col)
    for row, letters in enumerate(_ROWS)
    for col, letter in enumerate(letters)
}


# Letters Chilean Spanish says alike, so one is written for the other by
# ear, not by a slip of the finger: `ubicasion`, `ubicazion`, `bolver`.
_SOUND_ALIKE = {
    frozenset(pair) for pair in ("sc", "sz", "cz", "bv", "yi", "kc", "kq", "cq")
}


def _neighbours(a: str, b: str) -> bool:
    return b in _NEIGHBOURS.get(a, ()) or frozenset((a, b)) in _SOUND_ALIKE


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'revisar'?)` when a known name is close to `name`, for
    the messages of `tracbot check` and `tracbot test`."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
