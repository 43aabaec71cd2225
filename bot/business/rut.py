"""Chilean RUT: reading what a driver types into one canonical form.

Drivers write their RUT in every common way (`12.345.678-5`, `12345678-5`,
`123456785`, `12 345 678 5`, with `k` or `K`); python-stdnum does the
modulo-11 check, this module adds what a chat needs on top: the rejection
of values that pass the arithmetic but are not RUTs (all zeros), and a
reason a driver can act on when the value is wrong.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from stdnum import exceptions
from stdnum.cl import rut as stdnum_rut

# What a RUT may contain besides digits and K: dots, a dash, spaces, and an
# optional "CL" prefix, which stdnum strips. Anything else is not a RUT.
_RUT_CHARS = re.compile(r"^(cl)?[0-9.\-\s]+[0-9k]$", re.IGNORECASE | re.ASCII)
_DIGITS = re.compile(r"\d")
# WhatsApp markup (*bold*, _italic_, ~strike~, `mono`) around a pasted RUT.
_MARKUP = re.compile(r"[*_~`]+")
# Dashes a phone keyboard or autocorrect puts where the guion goes: hyphen,
# non-breaking hyphen, figure dash, en dash, em dash, minus sign.
_DASHES = re.compile("[\u2010-\u2015\u2212\ufe63\uff0d]")
# A comma used as a thousands separator (10,000,013-K).
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# What parts words: spaces, and the marks a label ends with ("RUT:12.345.678-5"
# was one word, refused as a RUT, and a driver lost an attempt to it).
_WORD_BREAKS = re.compile(r"[\s:;=]+")
# Runs of five digits or more, dots and spaces between them allowed.
_NUMBERS = re.compile(r"\d[\d.\s]{3,}\d", re.ASCII)
# A RUT written as one inside other text: with its dots or its guion.
_GLUED = re.compile(
    r"(?<!\d)(\d{1,2}\.\d{3}\.\d{3}\s*-?\s*[0-9k]|\d{7,8}\s*-\s*[0-9k])(?!\w)",
    re.IGNORECASE | re.ASCII,
)
# Punctuation a sentence leaves around a word: "es 10.000.013-K."
_TOKEN_EDGES = re.compile(r"^[^\w]+|[^\w]+$")
# Written with digits only, no guion and no K: maybe the body alone.
_BODY_ONLY = re.compile(r"^[0-9.\s]+$")
# The end of a RUT written as one: a dash before the check digit, or a K.
_WRITTEN = re.compile(r"(-\s*[0-9k]|k)$", re.IGNORECASE)

# Reasons, in the words the `rut_invalido` template switches on.
EMPTY = "vacio"
CHARACTERS = "caracteres"
SHORT = "corto"
LONG = "largo"
CHECK_DIGIT = "digito"
ZEROS = "ceros"
MISSING_DIGIT = "sin_digito"


@dataclass(frozen=True, slots=True)
class Rut:
    """A valid RUT."""

    body: int
    check_digit: str

    @property
    def canonical(self) -> str:
        """`12345678-5`: how tracbot stores and binds a RUT."""
        return f"{self.body}-{self.check_digit}"

    @property
    def formatted(self) -> str:
        """`12.345.678-5`: how a driver reads it."""
        return f"{self.body:,}".replace(",", ".") + f"-{self.check_digit}"


class RutError(ValueError):
    """A text that is not a valid RUT; `reason` says why, in one word."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid RUT: {reason}")
        self.reason = reason


def parse(text: str | None) -> Rut:
    """Return the RUT a driver typed.

    Raises:
        RutError: the text is empty, has characters a RUT cannot have, is
            too short or too long, is all zeros, or its check digit is wrong.
    """
    value = candidate(text)
    if not value:
        raise RutError(EMPTY)
    if not _RUT_CHARS.match(value):
        raise RutError(CHARACTERS)

    try:
        compact = stdnum_rut.validate(value)
    except exceptions.InvalidLength:
        digits = len(stdnum_rut.compact(value))
        if _body_alone(value):
            raise RutError(MISSING_DIGIT) from None
        raise RutError(SHORT if digits < 8 else LONG) from None
    except exceptions.InvalidChecksum:
        if _body_alone(value):
            raise RutError(MISSING_DIGIT) from None
        raise RutError(CHECK_DIGIT) from None
    except exceptions.ValidationError:
        raise RutError(CHARACTERS) from None

    body = int(compact[:-1])
    if body == 0:
        raise RutError(ZEROS)
    return Rut(body, compact[-1])


def looks_like_rut(text: str | None) -> bool:
    """Whether a text was probably meant as a RUT (has five digits or more).

    A flow waiting for a RUT answers "that RUT is wrong" only to these, and
    lets other texts (a command, a greeting) go their own way.
    """
    return len(_DIGITS.findall(candidate(text))) >= 5


def written_as_rut(text: str | None) -> bool:
    """Whether a text writes its RUT as one: the check digit after a dash,
    or a K. Unasked, "9 8765 4325" is a phone number, even when its last
    digit happens to check (about one number in eleven)."""
    value = candidate(text)
    return bool(_WRITTEN.search(value)) and _RUT_CHARS.match(value) is not None


def candidate(text: str | None) -> str:
    """The part of a message that is the RUT, in plain ASCII.

    Full-width digits, markup, typographic dashes and thousands commas are
    undone first. A text that is not a RUT as a whole but holds exactly one
    word shaped like one ("mi rut es 10.000.013-K") gives that word; any
    other text is returned whole, for `parse` to say what is wrong with it.
    """
    value = unicodedata.normalize("NFKC", text or "")
    value = _DASHES.sub("-", _MARKUP.sub(" ", value))
    value = _THOUSANDS_COMMA.sub(".", value).strip()
    if not value or _RUT_CHARS.match(value):
        return value

    found = [
        word
        for word in (_TOKEN_EDGES.sub("", w) for w in _WORD_BREAKS.split(value))
        if _RUT_CHARS.match(word) and len(_DIGITS.findall(word)) >= 5
    ]
    if len(found) == 1:
        return found[0]
    if found:
        return value  # two numbers: which one is the RUT, only they know
    # Glued to a label or a word by any other mark (RUT-12.345.678-5,
    # rut(12.345.678-5), RUT:12.345.678-5,gracias): the one run written as
    # a RUT, with its dots or its guion, and no other number, is the RUT.
    written = _GLUED.findall(value)
    if len(written) == 1 and len(_NUMBERS.findall(value)) == 1:
        return written[0]
    return value


def _body_alone(value: str) -> bool:
    # 7 or 8 digits with no guion and no K read as a RUT body whose check
    # digit was forgotten (10000013), more likely than a wrong check digit.
    digits = len(_DIGITS.findall(value))
    return bool(_BODY_ONLY.match(value)) and digits in (7, 8)
