"""Routing answers remembered per text (bot/engine/routes.py) are the
answers the flows give, asked once or many times."""

from __future__ import annotations

from bot.engine import keywords, routes
from bot.engine.flows import load_flows
from bot.engine.routes import StartWords, starts
from bot.engine.text import command_form
from tests.engine.project import REPO

TEXTS = [
    "estado",
    "ESTADOOO",
    "estdo",
    "ayuda",
    "necesito ayuda",
    "¿dónde está mi guía?",
    "el estado de mi viaje?",
    "estado de mi guía",
    "gracias",
    "👍",
    "hola",
    "",
    "cancelar",
    "ubicacion",
    "una historia larga " * 10 + "estado",
]


def test_remembered_answers_are_the_flows_answers():
    specs = load_flows(REPO / "flows")
    words = StartWords(specs.values())
    for _ in range(2):  # asked, then remembered
        for text in TEXTS:
            typed = command_form(text)
            expected = {name for name, s in specs.items() if starts(s, typed)}
            assert words.said(typed) == expected, text
            for exclude in (None, "estado"):
                others = (s for n, s in specs.items() if n != exclude)
                found = keywords.named_in(others, typed)
                expected_name = None if found is None else found.name
                assert words.named(typed, exclude) == expected_name, (text, exclude)
    assert "estado" in words.said(command_form("ESTADOOO"))


def test_the_memory_has_a_bound(monkeypatch):
    monkeypatch.setattr(routes, "REMEMBERED", 10)
    specs = load_flows(REPO / "flows")
    words = StartWords(specs.values())
    for n in range(25):
        words.said(f"hola {n}")
    assert words.said("estado") == {"estado"}
    assert len(words._said) <= 10


def test_a_word_one_flow_names_is_no_typo_of_another_flows_word(tmp_path):
    # `ayudas` named by a flow of the author's own was taken for a typo of
    # AYUDA's `ayuda`, and the new flow never started.
    specs = load_flows(REPO / "flows")
    (tmp_path / "contacto.yaml").write_text(
        "name: contacto\nstart: [contacto, ayudas]\nstates:\n  fin: {}\n",
        encoding="utf-8",
    )
    specs.update(load_flows(tmp_path))
    words = StartWords(specs.values())
    assert words.said("ayudas") == {"contacto"}
    assert words.said("ayudas por favor") == {"contacto"}
    # Where no flow names the word, the typo still counts.
    assert words.said("ayudda") == {"ayuda"}
    assert words.said("estdo") == {"estado"}


def test_small_talk_starts_only_a_short_text_and_cancel_takes_no_typo():
    # "Ok, pero el camión tiene una falla…" got "¡De nada!"; "sali de faena"
    # ("I left the site") cancelled the flow in progress as a typo of SALIR.
    specs = load_flows(REPO / "flows")
    words = StartWords(specs.values())

    def said(text: str) -> frozenset[str]:
        return words.said(command_form(text))

    assert said("ok gracias") == {"gracias"}
    assert said("Vale, perfecto!") == {"gracias"}
    assert said("Ok, pero el camión tiene una falla en el motor") == set()
    assert said("lista de mis viajes") == set()
    assert said("sali de faena") == set()
    assert said("Canceló la carga el cliente") == set()
    assert said("cancelar") == {"cancelar"}
    assert said("salir ya") == {"cancelar"}
    # Commands keep their first word and its typos in any sentence.
    assert said("estdo de mi viaje por favor ahora") == {"estado"}


def test_a_command_after_an_ok_or_a_thanks_is_what_the_text_asks_for():
    # "ok, estado" got "¡De nada!" and no status.
    specs = load_flows(REPO / "flows")
    words = StartWords(specs.values())

    def said(text: str) -> frozenset[str]:
        return words.said(command_form(text))

    assert said("ok, estado") == {"estado"}
    assert said("vale guia") == {"guia"}
    assert said("gracias, ubicacion") == {"ubicacion"}
    assert said("ok gracias") == {"gracias"}
    assert said("ok, dale") == {"gracias"}
