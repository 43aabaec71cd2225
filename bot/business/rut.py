"""Chilean RUT: reading what a driver types into one canonical form.

Drivers write their RUT in every common way (`12.345.678-5`, `12345678-5`,
`123456785`, `12 345 678 5`, with `k` or `K`); python-stdnum does the
modulo-11 check, this module adds what a chat needs on top: the rejection
of values that pass the arithmetic but are not RUTs (all zeros), and a
reason a driver can act on when the value is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum import exceptions
from stdnum.cl import rut as stdnum_rut

# What a RUT may contain besides digits and K: dots, a dash, spaces, and an
# optional "CL" prefix, which stdnum strips. Anything else is not a RUT.
_RUT_CHARS = re.compile(r"^(cl)?[0-9.\-\s]+[0-9k]$", re.IGNORECASE | re.ASCII)
_DIGITS = re.compile(r"\d")

# Reasons, in the words the `rut_invalido` template switches on.
EMPTY = "vacio"
CHARACTERS = "caracteres"
SHORT = "corto"
LONG = "largo"
CHECK_DIGIT = "digito"
ZEROS = "ceros"


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
    value = (text or "").strip()
    if not value:
        raise RutError(EMPTY)
    if not _RUT_CHARS.match(value):
        raise RutError(CHARACTERS)

    try:
        compact = stdnum_rut.validate(value)
    except exceptions.InvalidLength:
        digits = len(stdnum_rut.compact(value))
        raise RutError(SHORT if digits < 8 else LONG) from None
    except exceptions.InvalidChecksum:
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
    return len(_DIGITS.findall(text or "")) >= 5
