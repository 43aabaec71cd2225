"""Long replies cut into parts that WhatsApp takes (bot/whatsapp/limits.py)."""

from __future__ import annotations

import pytest

from bot.whatsapp import limits
from bot.whatsapp.limits import MAX_PARAMETER, MAX_TEXT, split_text

FAMILY = "👨\u200d👩\u200d👧"


def test_a_long_text_is_cut_at_a_paragraph_then_a_line_then_a_space():
    text = "a" * 3000 + "\n\n" + "b" * 3000
    assert split_text(text) == ["a" * 3000, "b" * 3000]
    words = " ".join(["palabra"] * 1000)
    parts = split_text(words)
    assert all(len(part) <= MAX_TEXT for part in parts)
    assert " ".join(parts) == words


@pytest.mark.parametrize(
    ("text", "limit", "last"),
    [
        # Each was cut inside the character the reader sees: the flag
        # showed as two letter boxes, the family as a man and a dangling
        # joiner, the accent on a line of its own.
        ("a" * (MAX_TEXT - 1) + "🇨🇱", MAX_TEXT, "🇨🇱"),
        ("a" * (MAX_PARAMETER - 1) + FAMILY, MAX_PARAMETER, FAMILY),
        ("a" * (MAX_PARAMETER - 1) + "e\u0301b", MAX_PARAMETER, "e\u0301b"),
        ("a" * (MAX_PARAMETER - 3) + "🇨🇱🇦🇷", MAX_PARAMETER, "🇦🇷"),
        ("a" * (MAX_PARAMETER - 1) + "👍🏽", MAX_PARAMETER, "👍🏽"),
        # A Hangul syllable written as its letters (한: ᄒ ᅡ ᆫ).
        (
            "a" * (MAX_PARAMETER - 1) + "\u1112\u1161\u11ab",
            MAX_PARAMETER,
            "\u1112\u1161\u11ab",
        ),
    ],
)
def test_a_cut_inside_a_word_never_splits_a_character(text, limit, last):
    parts = split_text(text, limit)
    assert all(len(part) <= limit for part in parts)
    assert "".join(parts) == text
    assert parts[-1] == last


def test_a_text_without_a_place_to_cut_is_cut_at_the_limit():
    assert [len(part) for part in split_text("a" * 5000)] == [MAX_TEXT, 904]


def test_a_template_parameter_too_long_is_cut_between_characters():
    # Cut at 1,023 characters and an ellipsis: the flag before it was split.
    from bot.whatsapp.templates import TemplateSpec

    spec = TemplateSpec("alert", "alerta_sistema", "es", ("descripcion",))
    text = "a" * (MAX_PARAMETER - 2) + "🇨🇱 y más"
    body = spec.body("56911120011", {"descripcion": text})
    [component] = body["template"]["components"]
    value = component["parameters"][0]["text"]
    assert value == "a" * (MAX_PARAMETER - 2) + "…"


def test_the_last_part_of_a_text_starts_at_a_break_or_between_characters():
    assert limits.last_part_start("corto", 10) == 0
    # After the first paragraph break it holds, else a line break, a space.
    text = "a " * 25 + "\n\n" + "b" * 8
    assert text[limits.last_part_start(text, 20) :] == "b" * 8
    text = "aviso " * 10 + "\n\n" + "¿Eres tú?"
    assert text[limits.last_part_start(text, 30) :] == "¿Eres tú?"
    text = "x" * 40 + "\nlinea uno\nlinea dos"
    assert text[limits.last_part_start(text, 25) :] == "linea uno\nlinea dos"
    # No break at all: never inside a flag (two regional indicators).
    text = "x" * 9 + "🇨🇱" * 10
    start = limits.last_part_start(text, 9)
    assert text[start:] == "🇨🇱" * 4


def test_a_last_part_is_never_empty_when_the_text_ends_in_a_break():
    for text in ("a" * 1100 + "\n\n", "a " * 600 + "\n", "a " * 600 + " "):
        start = limits.last_part_start(text, 1024)
        assert text[start:].strip()
        assert len(text) - start <= 1024
