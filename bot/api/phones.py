"""Phone numbers from the backend, validated and normalised to E.164.

The backend may write `+56 9 1234 5678`, `56912345678`, `9 1234 5678` or
`09 1234 5678`; a number without a country code is read in the configured
region (Chile). Meta's `wa_id` is the E.164 number without the `+`, which
is also how conversations are keyed, so the window lookup finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

EXPECTED = "expected E.164 like +56912345678"


class InvalidPhone(ValueError):
    """Not a valid phone number; the message says why, for a 400."""


@dataclass(frozen=True, slots=True)
class Phone:
    """A valid number: `e164` to show, `wa_id` to send and to key by."""

    e164: str

    @property
    def wa_id(self) -> str:
        return self.e164.removeprefix("+")


def normalize_phone(raw: object, region: str = "CL") -> Phone:
    """Validate a number and return it in E.164.

    Raises:
        InvalidPhone: not a string, not a number, or not a valid one.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhone(f"phone must be a non-empty string {EXPECTED}")
    text = raw.strip()
    compact = "".join(ch for ch in text if ch not in " -.()")
    # Digits only with a country code, as in a wa_id, parse as international;
    # a lone leading 0 is the old trunk prefix (09 1234 5678 in Chile).
    if compact.isdigit() and len(compact) > 10 and not compact.startswith("0"):
        text = "+" + compact
    elif compact.isdigit() and compact.startswith("0") and compact[1:2] != "0":
        text = compact[1:]
    if any(ch.isalpha() for ch in text):
        # The parser drops a stray letter ("+56911112222x" went out).
        raise InvalidPhone(f"{_shown(raw)} is not a phone number: {EXPECTED}")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(f"{_shown(raw)} is not a phone number: {EXPECTED}") from None
    if number.extension:
        # "+56911112222x99" read as an extension, sent to +56911112222.
        raise InvalidPhone(
            f"{_shown(raw)} is a phone number with an extension: {EXPECTED}"
        )
    # WhatsApp keeps Mexico's old mobile marker in its ids (521 + 10 digits,
    # CLOUD_API.md §12), a form the numbering plan no longer has: checked
    # without the marker, kept with it, since conversations are keyed by
    # the wa_id as Meta sent it.
    if number.country_code == 52 and len(str(number.national_number)) == 11:
        national = str(number.national_number)
        if national.startswith("1"):
            _check(phonenumbers.parse(f"+52{national[1:]}"), raw)
            return Phone(f"+52{national}")
    _check(number, raw)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Phone(e164)


def _check(number: phonenumbers.PhoneNumber, raw: str) -> None:
    # "Possible" checks the length for the country; "valid" also checks
    # the assigned ranges, which lag behind real and test numbers (it
    # refuses +56 9 1234 5678, a form CLOUD_API.md §12 must accept).
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone(f"{_shown(raw)} is not a valid phone number: {EXPECTED}")
    # Possible for the country is not enough: +56 9 1111 22222 (a digit too
    # many for a mobile) passed as some other kind of number. WhatsApp
    # numbers are mobiles or landlines.
    if not any(phonenumbers.is_possible_number_for_type(number, t) for t in _KINDS):
        raise InvalidPhone(
            f"{_shown(raw)} has too many or too few digits for a mobile or a "
            f"landline: {EXPECTED}"
        )


_KINDS = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
)


def _shown(raw: str) -> str:
    # An error answer quotes at most a short number, never a whole body.
    return repr(raw if len(raw) <= 32 else raw[:31] + "…")
