"""Normalising commands however a driver writes them."""

from __future__ import annotations

import pytest

from bot.engine.text import answer_form, close_enough, normalize


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
        # Written by ear: "ubicasion" got the fallback.
        ("ubicasion", "ubicacion", True),
        ("ubicazion", "ubicacion", True),
        ("ubiqacion", "ubicacion", True),
        # Another letter, not a neighbour's: another word, not a typo.
        ("listo", "lista", False),
        ("salio", "salir", False),
        ("ayudo", "ayuda", False),
    ],
)
def test_one_typo_is_tolerated_in_long_words(typed, word, expected):
    assert close_enough(typed, word) is expected


@pytest.mark.parametrize(
    ("typed", "form"),
    [
        # "Sí, soy yo" (the button's own title, typed) was asked again: the
        # comma stayed; 👍🏿 was not 👍.
        ("Sí, soy yo", "si soy yo"),
        ("¡No, no soy yo!", "no no soy yo"),
        ("siii", "si"),
        ("👍🏿", "👍"),
        ("👍", "👍"),
    ],
)
def test_an_answer_compares_without_punctuation_or_skin_tone(typed, form):
    assert answer_form(typed) == form
