"""RUTs as drivers type them: accepted forms and rejected ones, with why."""

from __future__ import annotations

import pytest

from bot.business import rut

VALID = [
    ("12.345.678-5", "12345678-5", "12.345.678-5"),
    ("12345678-5", "12345678-5", "12.345.678-5"),
    ("123456785", "12345678-5", "12.345.678-5"),
    (" 12 345 678 5 ", "12345678-5", "12.345.678-5"),
    ("10.000.013-K", "10000013-K", "10.000.013-K"),
    ("10000013-k", "10000013-K", "10.000.013-K"),
    ("10000013k", "10000013-K", "10.000.013-K"),
    ("10.000.004-0", "10000004-0", "10.000.004-0"),
    ("9.876.543-3", "9876543-3", "9.876.543-3"),
    ("9876543-3", "9876543-3", "9.876.543-3"),
    ("CL12345678-5", "12345678-5", "12.345.678-5"),
    # Pasted in bold, inside a sentence, with a typographic dash, typed on a
    # full-width keyboard or with thousands commas: still the RUT.
    ("*10.000.013-K*", "10000013-K", "10.000.013-K"),
    ("mi rut es 10.000.013-K", "10000013-K", "10.000.013-K"),
    ("Mi RUT es: 12.345.678-5.", "12345678-5", "12.345.678-5"),
    ("10000013\u2013K", "10000013-K", "10.000.013-K"),
    ("10000013\u2014K", "10000013-K", "10.000.013-K"),
    ("10000013\u2212K", "10000013-K", "10.000.013-K"),
    (
        "\uff11\uff10.\uff10\uff10\uff10.\uff10\uff11\uff13-K",
        "10000013-K",
        "10.000.013-K",
    ),
    ("１２３４５６７８-５", "12345678-5", "12.345.678-5"),
    ("10,000,013-K", "10000013-K", "10.000.013-K"),
    # After a label with no space: each cost an attempt.
    ("RUT:12.345.678-5", "12345678-5", "12.345.678-5"),
    ("Rut:12345678-5", "12345678-5", "12.345.678-5"),
    ("rut=10000013-k", "10000013-K", "10.000.013-K"),
    # Glued to the label or a word by any other mark.
    ("RUT-12.345.678-5", "12345678-5", "12.345.678-5"),
    ("RUT.12.345.678-5", "12345678-5", "12.345.678-5"),
    ("rut(12.345.678-5)", "12345678-5", "12.345.678-5"),
    ("RUT,12.345.678-5", "12345678-5", "12.345.678-5"),
    ("RUT/12345678-5", "12345678-5", "12.345.678-5"),
    ("rut:12.345.678-5,gracias", "12345678-5", "12.345.678-5"),
    ("12,345,678-5", "12345678-5", "12.345.678-5"),
]

INVALID = [
    ("", rut.EMPTY),
    ("   ", rut.EMPTY),
    ("12.345.678-4", rut.CHECK_DIGIT),
    ("12345678-K", rut.CHECK_DIGIT),
    ("10000013-0", rut.CHECK_DIGIT),
    ("00000000-0", rut.ZEROS),
    ("0000000-0", rut.ZEROS),
    ("1234-5", rut.SHORT),
    ("123456-0", rut.SHORT),
    ("1234567890-1", rut.LONG),
    ("12.3A5.678-5", rut.CHARACTERS),
    ("12345678-X", rut.CHARACTERS),
    ("12345678/5", rut.CHARACTERS),
    ("12.345.678-5 o 10.000.013-K", rut.CHARACTERS),
    # Two numbers, one written as a RUT: which one is theirs is not ours to
    # guess (the other was read as the RUT).
    ("mi rut 123456785, el de mi compañero 11.111.111-1", rut.CHARACTERS),
    ("rut 123456785 folio 7654321-6", rut.CHARACTERS),
    ("RUT:12.345.678-5 folio 884540", rut.CHARACTERS),
    # The body alone: the check digit was forgotten, not wrong.
    ("10000013", rut.MISSING_DIGIT),
    ("10.000.013", rut.MISSING_DIGIT),
    ("9876543", rut.MISSING_DIGIT),
]


@pytest.mark.parametrize(("typed", "canonical", "formatted"), VALID)
def test_valid_rut_in_any_common_form(typed, canonical, formatted):
    found = rut.parse(typed)
    assert found.canonical == canonical
    assert found.formatted == formatted


@pytest.mark.parametrize(("typed", "reason"), INVALID)
def test_invalid_rut_says_why(typed, reason):
    with pytest.raises(rut.RutError) as caught:
        rut.parse(typed)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12.345.678-5", True), ("12345", True), ("hola", False), ("1234", False)],
)
def test_looks_like_rut_needs_five_digits(text, expected):
    assert rut.looks_like_rut(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.345.678-5", True),
        ("12345678-5", True),
        ("*12.345.678–5*", True),  # bold, en dash
        ("mi rut es 10.000.013-K", True),
        ("10000013k", True),
        ("12345678 - 5", True),
        # Unasked, digits alone are a phone or a folio, whatever they check.
        ("9 8765 4325", False),
        ("987654325", False),
        ("folio 123456785", False),
        ("+56 9 1234 5678", False),
        ("hola", False),
    ],
)
def test_written_as_rut_wants_the_dash_or_a_k(text, expected):
    assert rut.written_as_rut(text) is expected
