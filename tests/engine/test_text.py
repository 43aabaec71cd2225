"""Normalising commands however a driver writes them."""

from __future__ import annotations

import pytest

from bot.engine.text import close_enough, normalize


@pytest.mark.parametrize(
    "typed",
    [
        "AYUDA",
        " ayuda ",
        "*Ayuda*",
        "_ayuda_",
        "Ayúda",
        "ayu\u0301da",
        "\u200bAYUDA\u2060",
        "\ufeffayuda\u200d",
        "ayuda!",
        "¿ayuda?",
    ],
)
def test_ayuda_in_every_shape_normalises_the_same(typed):
    assert normalize(typed) == "ayuda"


def test_decomposed_accent_and_zero_width_from_the_corpus():
    assert normalize("\u200b*Ubicacio\u0301n*\u2060") == "ubicacion"


def test_empty_and_none():
    assert normalize("") == ""
    assert normalize(None) == ""
    assert normalize("\u200b") == ""


@pytest.mark.parametrize(
    ("typed", "word", "expected"),
    [
        ("estado", "estado", True),
        ("estadp", "estado", True),
        ("etsado", "estado", True),
        ("estad", "estado", True),
        ("estadoo", "estado", True),
        ("esta", "estado", False),
        ("guai", "guia", False),
        ("guia", "guia", True),
        ("hola", "guia", False),
        ("cancelsr", "cancelar", True),
        # Another letter, not a neighbour's: another word, not a typo.
        ("listo", "lista", False),
        ("salio", "salir", False),
        ("ayudo", "ayuda", False),
    ],
)
def test_one_typo_is_tolerated_in_long_words(typed, word, expected):
    assert close_enough(typed, word) is expected
