"""`tracbot check`: each kind of mistake is reported with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.engine import check
from bot.engine.check import check_project
from tests.engine.project import REPO, make_project, write_files

GOOD = """
name: pedido
start: [pedido]
states:
  preguntar:
    reply: ayuda
    on:
      - input: text
        save: numero
        to: listo
  listo:
    reply: eco
"""


def problems_of(tmp_path: Path, flows: dict, templates: dict | None = None) -> list:
    make_project(tmp_path, flows, templates)
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    return [(Path(p.path).name, p.line, p.message) for p in found]


def one(found: list, text: str) -> tuple:
    hits = [p for p in found if text in p[2]]
    assert len(hits) == 1, found
    return hits[0]


def test_shipped_flows_and_templates_are_valid():
    found = check_project(REPO / "flows", REPO / "message_templates")
    assert [str(p) for p in found] == []


def test_valid_flow_has_no_problem(tmp_path):
    assert problems_of(tmp_path, {"pedido": GOOD}, {"eco": "N° {{ numero }}"}) == []


def test_tab_indentation_is_refused_with_its_line(tmp_path):
    bad = GOOD.replace("    reply: ayuda", "\treply: ayuda")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert one(found, "tab")[:2] == ("pedido.yaml", 5)


def test_duplicate_key_names_both_lines(tmp_path):
    bad = GOOD.replace("    reply: ayuda\n", "    reply: ayuda\n    reply: eco\n")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    name, line, message = one(found, "duplicate key 'reply'")
    assert (name, line) == ("pedido.yaml", 6)
    assert "first on line 5" in message


def test_yaml_syntax_error_has_a_line(tmp_path):
    bad = GOOD.replace("start: [pedido]", "start: [pedido")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert found and found[0][0] == "pedido.yaml" and found[0][1] >= 2
    assert "invalid YAML" in found[0][2]


def test_a_message_that_would_get_no_reply_is_reported(tmp_path):
    # The first state waits without a word: "hola" started the flow and
    # the driver heard nothing (a slip of `on:` for `always:`).
    mute_start = GOOD.replace("    reply: ayuda\n", "")
    found = problems_of(tmp_path, {"pedido": mute_start}, {"eco": "x"})
    name, line, message = one(found, "starts this flow gets no reply")
    assert (name, line) == ("pedido.yaml", 4)
    assert "stops in 'preguntar'" in message and "`always`" in message

    # A message taken into a state that says nothing, through `always` hops.
    mute_way = GOOD.replace("        to: listo", "        to: pasar").replace(
        "  listo:\n    reply: eco\n",
        "  pasar:\n    always:\n      - to: listo\n  listo:\n    on:\n"
        "      - input: text\n        reply: eco\n        to: fin\n  fin:\n"
        "    reply: eco\n",
    )
    found = problems_of(tmp_path, {"pedido": mute_way}, {"eco": "x"})
    name, line, message = one(found, "a message taken here gets no reply")
    assert (name, line) == ("pedido.yaml", 7)
    assert "stops in 'listo'" in message

    # Said on the way: no problem.
    said = mute_way.replace("- to: listo", "- to: listo\n        reply: eco")
    assert problems_of(tmp_path, {"pedido": said}, {"eco": "x"}) == []


def test_a_template_printing_a_whole_list_of_the_engine_is_reported(tmp_path):
    # `commands` is a list of records: printed whole, the driver would read
    # Python's text of it; the runtime gives the apology instead.
    found = problems_of(
        tmp_path, {"pedido": GOOD}, {"eco": "Comandos:\n{{ commands }}\n"}
    )
    name, line, message = one(found, "printed a whole list")
    assert (name, line) == ("eco.j2", 2)
    assert "{% for item in items %}" in message


def test_an_action_that_cannot_take_every_message_needs_its_guard(tmp_path):
    # buscar_conductor reads a RUT from the text: on "hola" it fails the
    # step and the driver gets the apology, so the checker wants the guard.
    bare = GOOD.replace("        save: numero\n", "        do: buscar_conductor\n")
    found = problems_of(tmp_path, {"pedido": bare}, {"eco": "x"})
    name, line, message = one(found, "action 'buscar_conductor'")
    assert (name, line) == ("pedido.yaml", 8)
    assert "`if: rut_valido`" in message

    guarded = bare.replace("        do:", "        if: rut_valido\n        do:")
    assert problems_of(tmp_path, {"pedido": guarded}, {"eco": "x"}) == []


def test_unknown_state_condition_action_and_template(tmp_path):
    bad = GOOD.replace(
        "        to: listo",
        "        if: existe_no\n        do: hace_nada\n        to: fin",
    ).replace("reply: eco", "reply: no_existe")
    found = problems_of(tmp_path, {"pedido": bad})
    assert one(found, "unknown state 'fin'")[1] == 11
    # At its `if:` line: it was the transition's first line.
    assert one(found, "unknown condition 'existe_no'")[1] == 9
    assert one(found, "on[0].if: unknown condition")
    assert one(found, "unknown action 'hace_nada'")[1] == 10
    assert one(found, "unknown template 'no_existe'")[1] == 13


def test_unknown_key_is_a_typo_not_a_silent_default(tmp_path):
    bad = GOOD.replace("    reply: ayuda", "    repyl: ayuda")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert one(found, "unknown key 'repyl'")[1] == 5


def test_unknown_handover_flow(tmp_path):
    bad = GOOD.replace("    reply: eco", "    handover: vincular_no_existe")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert one(found, "unknown flow 'vincular_no_existe'")[1] == 11


def test_unreachable_state_and_state_with_no_way_out(tmp_path):
    flow = """
    name: trampa
    start: [trampa]
    states:
      a:
        reply: ayuda
        on:
          - {input: text, to: b}
      b:
        reply: ayuda
        on:
          - {input: text, to: a}
      huerfano:
        reply: ayuda
    """
    found = problems_of(tmp_path, {"trampa": flow})
    assert one(found, "states.huerfano: unreachable")[1] == 12
    assert one(found, "states.a: no way out")[1] == 4
    assert one(found, "states.b: no way out")[1] == 8


def test_always_loop_without_input_is_rejected(tmp_path):
    flow = """
    name: bucle
    start: [bucle]
    states:
      a:
        always:
          - to: b
      b:
        always:
          - to: a
          - to: fin
      fin:
        reply: ayuda
    """
    found = problems_of(tmp_path, {"bucle": flow})
    assert one(found, "states.a.always[0]: loops back to 'a'")[1] == 6
    assert one(found, "states.b.always[0]: loops back to 'b'")[1] == 9


def test_handover_loop_between_flows_is_rejected(tmp_path):
    ping = "name: ping\nstart: [ping]\nstates:\n  a:\n    handover: pong\n"
    pong = "name: pong\nstart: [pong]\nstates:\n  b:\n    handover: ping\n"
    found = problems_of(tmp_path, {"ping": ping, "pong": pong})
    assert one(found, "comes back to 'ping'")[:2] == ("ping.yaml", 5)
    assert one(found, "comes back to 'pong'")[:2] == ("pong.yaml", 5)


def test_template_variable_the_state_cannot_provide(tmp_path):
    found = problems_of(
        tmp_path, {"pedido": GOOD}, {"eco": "{{ numero }} {{ patente }} {{ name }}"}
    )
    name, line, message = one(found, "'patente'")
    assert (name, line) == ("pedido.yaml", 11)
    assert "state 'listo' cannot provide" in message
    # Where the template reads it, and what a reply could have used.
    assert "uses 'patente' (eco.j2:1)" in message
    assert "every reply has commands, driver_name," in message


def test_timeout_and_restart_replies_are_held_to_what_they_get(tmp_path):
    # Both passed the checker whatever they used, and sent the apology.
    flow = """
    name: encuesta
    start: [encuesta]
    timeout: {after: 10m, reply: expirada}
    migrate_reply: reiniciada
    states:
      nota:
        reply: pide_nota
        on:
          - input: text
            save: nota
            to: comentario
      comentario:
        reply: pide_comentario
        on:
          - input: text
            to: fin
      fin:
        reply: gracias
    """
    templates = {
        "pide_nota": "¿Nota?",
        "pide_comentario": "¿Comentario?",
        # Every value of a reply is there; `nota` only in one state of two.
        "expirada": "{{ driver_name }} {{ wa_id }} {{ nota }} {{ comentario }}",
        "reiniciada": "{{ name }} {{ role }} {{ nota }}",
    }
    found = problems_of(tmp_path, {"encuesta": flow}, templates)
    quiet = [(f, line, m) for f, line, m in found if "encuesta" in f]
    assert len(quiet) == 3, found
    name, line, message = one(quiet, "timeout.reply: template 'expirada' uses 'nota'")
    assert (name, line) == ("encuesta.yaml", 3)
    assert "not every state a driver may wait in has it" in message
    assert "{% if nota is defined %}" in message
    one(quiet, "timeout.reply: template 'expirada' uses 'comentario'")
    name, line, message = one(quiet, "migrate_reply: template 'reiniciada' uses 'nota'")
    assert (name, line) == ("encuesta.yaml", 4)


def test_template_syntax_error_has_template_line(tmp_path):
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": "hola\n{% if x %}\n"})
    assert one(found, "template syntax")[:2] == ("eco.j2", 2)


def test_template_reaching_python_internals_is_reported(tmp_path):
    escape = "{{ slots.__class__.__mro__[1].__subclasses__() }}"
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": escape})
    hits = [p for p in found if "Python internals" in p[2]]
    assert {h[0] for h in hits} == {"eco.j2"} and len(hits) >= 2


def test_reply_over_whatsapp_text_limit(tmp_path):
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": "x" * 4097})
    assert "4097 characters" in one(found, "holds 4096")[2]


def test_interactive_reply_over_limits(tmp_path):
    bad = GOOD.replace(
        "    reply: eco",
        "    reply:\n      template: eco\n"
        "      buttons: [Uno, Dos, Tres, Cuatro]\n"
        "      list: {button: Ver, rows: [a, b, c, d, e, f, g, h, i, j, k]}",
    )
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert one(found, "4 buttons; WhatsApp allows 3")
    assert one(found, "11 list rows; WhatsApp allows 10")
    long_title = GOOD.replace(
        "    reply: eco",
        "    reply:\n      template: eco\n"
        "      buttons: [Confirmar la llegada a faena]",
    )
    found = problems_of(tmp_path, {"pedido": long_title}, {"eco": "x"})
    assert one(found, "is 28 characters; WhatsApp allows 20")


def test_buttons_sharing_a_title_or_an_id_are_reported(tmp_path):
    # Meta refuses such a message: the driver got nothing at all.
    for buttons, said in (
        ("[{id: ok, title: Ok}, {id: ok2, title: Ok}]", "the title 'Ok'"),
        ("[{id: si, title: Sí}, {id: si, title: Claro}]", "the id 'si'"),
    ):
        bad = GOOD.replace(
            "    reply: eco",
            f"    reply:\n      template: eco\n      buttons: {buttons}",
        )
        found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
        name, line, message = one(found, said)
        assert (name, line) == ("pedido.yaml", 13)
        assert "WhatsApp refuses the message" in message


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        # The driver got the apology, and the log named template "42".
        ("reply: 42", "a reply is a template name, or a mapping"),
        ("reply: [eco, eco]", "not ['eco', 'eco']"),
        ("reply: {buttons: [Sí]}", "this mapping has no `template`"),
        # The typo was dropped without a word: no buttons went out.
        ("reply: {template: eco, buton: [Sí]}", "unknown key 'buton'"),
        # Each crashed the reply at run time: the driver got the apology.
        ("reply: {template: eco, buttons: [{title: Sí}]}", "a list of words or"),
        ("reply: {template: eco, buttons: Sí}", "a list of words or"),
        ("reply: {template: eco, list: commands}", "list: expected a mapping"),
        ("reply: {template: eco, list: {rows: [{title: A}]}}", "rows: expected words"),
    ],
)
def test_a_reply_of_the_wrong_shape_is_reported(tmp_path, reply, said):
    bad = GOOD.replace("    reply: eco", f"    {reply}")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert one(found, said)[:2] == ("pedido.yaml", 11)


@pytest.mark.parametrize(
    ("written", "said", "line"),
    [
        # A driver typing "None" or "True" started the flow.
        ("start: [pedido, null]", "an empty entry (~ or null) is not a word", 2),
        ("start: [pedido, true]", "True is not a word", 2),
        ("start: [pedido, {a: b}]", "{'a': 'b'} is not a word", 2),
        ("start: [pedido, 1.5]", "1.5 is not a word", 2),
        # No start words at all, without a word said.
        ("start: false", "expected a word or a list of words", 2),
        ("start: {}", "expected a word or a list of words", 2),
        # A text was true: keywords were on.
        ("start: [pedido]\nkeywords: 'false'", "keywords: expected true or", 3),
        ("start: [pedido]\nglobal: si", "global: expected true or false, not 'si'", 3),
    ],
)
def test_flow_values_of_the_wrong_type_are_reported(tmp_path, written, said, line):
    bad = GOOD.replace("start: [pedido]", written)
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x", "ayuda": "y"})
    assert one(found, said)[:2] == ("pedido.yaml", line)


@pytest.mark.parametrize(
    ("written", "said"),
    [
        # Each stopped the checker with a TypeError that named no file.
        ("save: 5", "5 cannot be a slot name"),
        ("save: true", "True cannot be a slot name"),
        ("save: [a, b]", "['a', 'b'] cannot be a slot name"),
        ("match: 5", "match: expected a pattern in quotes"),
        # Taken, and no template could print it: {{ turno-dia }} subtracts.
        ("save: turno-dia", "'turno-dia' cannot be a slot name"),
        ("save: mi turno", "'mi turno' cannot be a slot name"),
        # Reported at the flow's `name:` line, with no path in the file.
        ("one_of: [si, ~]", "states.preguntar.on[0].one_of: expected a word"),
        # `{{ none }}` printed Jinja's None: the driver got the apology.
        ("save: none", "'none' cannot be a slot name: templates read it as"),
        ("save: not", "'not' cannot be a slot name"),
        # Took every text, or none, unsaid.
        ("one_of: []", "one_of: an empty list or word"),
        ("one_of: [si, '']", "one_of: an empty list or word"),
        ("id: si", "on[0].id: an id is what a tap sends: it needs input: button"),
        ("do: {cargar: 1}", "states.preguntar.on[0].do: expected a word"),
        ("if: [1.5]", "states.preguntar.on[0].if: expected a word"),
    ],
)
def test_transition_values_of_the_wrong_type_are_reported_at_their_line(
    tmp_path, written, said
):
    bad = GOOD.replace("save: numero", written)
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x", "ayuda": "y"})
    assert one(found, said)[:2] == ("pedido.yaml", 8)


def test_a_slot_name_with_an_accent_is_taken(tmp_path):
    flow = GOOD.replace("save: numero", "save: año")
    assert problems_of(tmp_path, {"pedido": flow}, {"eco": "{{ año }}"}) == []


@pytest.mark.parametrize("name", ["state", "trigger", "to_x", "dirección", "paso 2"])
def test_odd_state_names_are_accepted(tmp_path, name):
    flow = GOOD.replace("listo", f'"{name}"')
    assert problems_of(tmp_path, {"pedido": flow}, {"eco": "{{ numero }}"}) == []


def test_yes_no_and_on_stay_words(tmp_path):
    flow = GOOD.replace(
        "save: numero", "one_of: [si, no, yes, off]\n        save: numero"
    )
    assert problems_of(tmp_path, {"pedido": flow}, {"eco": "{{ numero }}"}) == []


def test_cli_check_exit_status(tmp_path, capsys):
    config = make_project(tmp_path, {"pedido": GOOD}, {"eco": "{{ numero }}"})
    assert main(["--config", str(config), "check"]) == 0
    assert "all flows valid" in capsys.readouterr().out

    write_files(tmp_path / "flows", {"pedido.yaml": GOOD.replace("to: listo", "to: x")})
    assert main(["--config", str(config), "check"]) == 1
    err = capsys.readouterr().err
    assert "pedido.yaml:9: states.preguntar.on[0].to: unknown state 'x'" in err


def test_unknown_filter_and_test_are_reported_not_raised(tmp_path):
    found = problems_of(
        tmp_path,
        {"pedido": GOOD},
        {"eco": "📄\n{{ numero | mayus }}", "otra": "{% if 1 is raro %}x{% endif %}"},
    )
    assert ("eco.j2", 2, "unknown filter 'mayus'") in found
    assert ("otra.j2", 1, "unknown test 'raro'") in found


@pytest.mark.parametrize(
    "source, keyword",
    [
        ('hola\n{% include "nope.j2" %}', "include"),
        ('{% extends "nope.j2" %}', "extends"),
        ('hola\n{% from "nope.j2" import m %}{{ m() }}', "import"),
        ('hola\n{% import "nope.j2" as n %}{{ n.m() }}', "import"),
    ],
)
def test_missing_include_extends_or_import_target(tmp_path, source, keyword):
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": source})
    name, line, message = one(found, "unknown template 'nope.j2'")
    assert (name, line) == ("eco.j2", source.count("\n") + 1)
    assert message.startswith(keyword)


def test_include_that_may_be_missing_and_existing_partials_pass(tmp_path):
    templates = {
        "eco": 'Hola{% include "nope.j2" ignore missing %}{% include "_pie.j2" %}',
        "_pie": "{# a partial may render nothing by itself #}",
    }
    assert problems_of(tmp_path, {"pedido": GOOD}, templates) == []


def test_empty_template_and_template_that_renders_nothing(tmp_path):
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": "  \n"})
    assert one(found, "the template is empty")[:2] == ("eco.j2", 1)
    silent = "{% if numero == 'nunca' %}N° {{ numero }}{% endif %}"
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": silent})
    assert one(found, "renders an empty message")[:2] == ("eco.j2", 1)


def test_render_over_whatsapp_text_limit_with_sample_values(tmp_path):
    loop = "{% for i in range(5000) %}x{% endfor %}"
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": loop})
    name, _, message = one(found, "renders 5000 characters")
    assert name == "eco.j2" and "holds at most 4096" in message
    fits = "{% for i in range(4000) %}x{% endfor %} {{ numero }}"
    assert problems_of(tmp_path, {"pedido": GOOD}, {"eco": fits}) == []


def test_second_fallback_flow_names_both_files(tmp_path):
    other = (REPO / "flows" / "no_entendi.yaml").read_text("utf-8")
    other = other.replace("name: no_entendi", "name: otro_fallback")
    assert "name: otro_fallback" in other
    found = problems_of(tmp_path, {"otro_fallback": other})
    hits = sorted(p for p in found if "exactly one flow for anyone may say" in p[2])
    assert [(h[0], h[2].rsplit(" ", 1)[1]) for h in hits] == [
        ("no_entendi.yaml", "otro_fallback.yaml"),
        ("otro_fallback.yaml", "no_entendi.yaml"),
    ]


def test_cli_check_reports_a_bad_template_without_traceback(tmp_path, capsys):
    config = make_project(tmp_path, {}, {"guia": "📄 {{ text | mayus }}\n"})
    assert main(["--config", str(config), "check"]) == 1
    err = capsys.readouterr().err
    assert "guia.j2:1: unknown filter 'mayus'" in err
    assert "Traceback" not in err


def test_unknown_filter_inside_a_condition_is_reported(tmp_path):
    # Jinja itself only complains when that branch runs.
    source = "hola\n{% if numero %}\n{{ numero | mayus }}\n{% endif %}"
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": source})
    assert ("eco.j2", 3, "unknown filter 'mayus'") in found


def test_the_context_names_are_the_engines_own():
    # The checker asks the engine which names every template may read; the
    # list it keeps for when that fails must not fall behind the engine.
    assert check.context_names() == check.CONTEXT


def test_a_template_asking_the_engines_values_for_what_they_lack(tmp_path):
    # The sample strings stood in for `commands` too, so `commands[0].nope`
    # failed on the string, was taken for "only a run can tell", and passed.
    found = problems_of(
        tmp_path,
        {"pedido": GOOD},
        {"eco": "Listo.\n{{ commands[0].nope.deeper }}"},
    )
    name, line, message = one(found, "has no attribute 'nope'")
    assert (name, line) == ("eco.j2", 2)
    assert "engine gives every template" in message


def test_a_slots_own_shape_is_left_to_a_run(tmp_path):
    # A slot may hold whatever an action put there: any use of it passes.
    flows = {"pedido": GOOD}
    templates = {
        "eco": "{{ numero.patente.upper() }} {{ numero[0] | int + 1 }} "
        "{% for c in commands %}{{ c.title }} {{ c.id }}{% endfor %}"
        "{{ driver_name }} {% if numero > 3 %}mucho{% endif %}"
    }
    assert problems_of(tmp_path, flows, templates) == []

    # And past them, the engine's values are still checked.
    templates["eco"] += "{{ commands[0].nombre }}"
    assert one(problems_of(tmp_path, flows, templates), "'nombre'")[:2] == (
        "eco.j2",
        1,
    )


def test_no_fallback_for_anyone_says_which_kind_is_missing(tmp_path):
    # vincular.yaml's fallback (for unlinked numbers) made "none" confusing.
    unlinked_only = (REPO / "flows" / "vincular.yaml").read_text("utf-8")
    mute = (REPO / "flows" / "no_entendi.yaml").read_text("utf-8")
    flows = {
        "vincular": unlinked_only,
        "no_entendi": mute.replace("fallback: true\n", ""),
    }
    found = [str(p) for p in problems_of(tmp_path, flows, {})]
    assert any(
        "exactly one flow for anyone" in p and "found: none" in p for p in found
    ), found


def test_a_flow_file_ending_in_yml_is_named_not_ignored(tmp_path):
    make_project(tmp_path, {"pedido": GOOD}, {"eco": "x"})
    (tmp_path / "flows" / "gracias2.yml").write_text(GOOD, encoding="utf-8")
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    assert [(Path(p.path).name, p.line) for p in found] == [("gracias2.yml", 1)]
    assert "rename it gracias2.yaml" in found[0].message


def test_a_meta_style_numbered_placeholder_is_reported(tmp_path):
    # Pasted from a Meta template, {{1}} reached the driver as "1".
    found = problems_of(
        tmp_path, {"pedido": GOOD}, {"eco": "Hola,\nHola {{1}}, tu viaje {{ 2 }}."}
    )
    hits = sorted((p[1], p[2].split(":")[0]) for p in found if "numbered" in p[2])
    assert hits == [(2, "{{1}} prints the number 1"), (2, "{{2}} prints the number 2")]


def test_a_misspelt_destination_is_reported_alone(tmp_path):
    # One `to:` typo read as 13 problems: every state behind it unreachable
    # and every slot it saves unprovided, around the one line to fix.
    flows = {"vincular": (REPO / "flows" / "vincular.yaml").read_text("utf-8")}
    flows["vincular"] = flows["vincular"].replace("to: revisar", "to: revisra")
    found = problems_of(tmp_path, flows, {})
    assert found, "the typo must be reported"
    assert all("unknown state 'revisra'" in message for _, _, message in found)


def test_if_and_unless_of_one_condition_cover_every_message(tmp_path):
    # One of the two always holds: the first state never waits silent.
    branches = """
name: ramas
start: [ramas]
states:
  inicio:
    always:
      - {if: es_comando, to: a}
      - {unless: es_comando, to: b}
  a:
    reply: eco
  b:
    reply: eco
"""
    assert problems_of(tmp_path, {"ramas": branches}, {"eco": "x"}) == []

    # Both of two conditions, or neither: a message with one of them waits.
    partial = branches.replace("{if: es_comando,", "{if: [es_comando, parece_rut],")
    partial = partial.replace(
        "{unless: es_comando,", "{unless: [es_comando, parece_rut],"
    )
    found = problems_of(tmp_path, {"ramas": partial}, {"eco": "x"})
    assert one(found, "starts this flow gets no reply")[:2] == ("ramas.yaml", 4)


@pytest.mark.parametrize(
    "printed",
    [
        "{{ commands|map(attribute='command') }}",  # <generator object …>
        "{{ commands|reverse }}",
        "{{ commands[0].items() }}",
        "{{ range(3) }}",
    ],
)
def test_generators_views_and_ranges_are_whole_lists_too(tmp_path, printed):
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": printed})
    assert one(found, "printed a whole list")[:2] == ("eco.j2", 1)


@pytest.mark.parametrize(
    ("printed", "message"),
    [
        ("{{ commands|join(', ') }}", "joined whole records"),
        ("{{ commands[0]|string }}", "whole record or list with |string"),
        ("{{ (commands|list)|string }}", "whole record or list with |string"),
        ("{{ '%s'|format(commands[0]) }}", "whole record or list with |format"),
        ("{{ commands|pprint }}", "whole record or list with |pprint"),
        ("{{ commands|replace('x', 'y') }}", "whole record or list with |replace"),
        ("{{ commands|tojson }}", "whole record or list with |tojson"),
        ("{{ commands[0] ~ '' }}", "joined a whole record or list with ~"),
        ("{% set c = 'ver: ' ~ commands %}{{ c }}", "whole record or list with ~"),
        ("{{ commands[0]|upper }}", "whole record or list with |upper"),
        ("{{ commands|first|trim }}", "whole record or list with |trim"),
        ("{{ commands[0]|e }}", "whole record or list with |e"),
        ("{{ commands[0]|int }}", "whole record or list with |int"),
        ("{{ '%s' % commands[0] }}", "whole record or list with %"),
        ("{{ 'Ver: %s (%d)' % (commands, 3) }}", "whole record or list with %"),
        ("{{ '{}'.format(commands[0]) }}", "whole record or list with str.format"),
        ("{{ '{c}'.format(c=commands) }}", "whole record or list with str.format"),
    ],
)
def test_records_joined_or_made_text_are_reported(tmp_path, printed, message):
    # Each printed Python's text of the records: {'command': 'ESTADO', …}.
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": printed})
    assert one(found, message)[:2] == ("eco.j2", 1)


def test_a_list_joined_or_counted_is_fine(tmp_path):
    fine = (
        "{{ commands|map(attribute='command')|join(', ') }} "
        "{{ commands|length }} {% for c in commands %}{{ c.title }}{% endfor %}"
        " {{ commands|join(', ', attribute='command') }} {{ 3|string }}"
        " {{ '%s.'|format(commands[0].title) }} {{ driver_name|replace('a', 'o') }}"
        " {{ 'Hola ' ~ driver_name ~ '!' }} {{ commands|length ~ ' comandos' }}"
        " {{ commands[0].title|upper }} {{ (commands|first).command|lower }}"
        " {{ '%s (%d)' % (driver_name, 3) }} {{ '%(command)s' % commands[0] }}"
        " {{ '{0[command]}, {1}'.format(commands[0], role) }} {{ 7 % 3 }}"
    )
    assert problems_of(tmp_path, {"pedido": GOOD}, {"eco": fine}) == []


def test_conversation_tests_refuse_flows_that_check_refuses(tmp_path, capsys):
    # The cases passed on flows serve would not start with.
    bad = GOOD.replace("to: listo", "to: lsito")
    config = make_project(tmp_path, {"pedido": bad}, {"eco": "x"})
    cases = tmp_path / "casos.yaml"
    cases.write_text(
        "cases:\n  - name: x\n    steps:\n      - send: pedido\n", encoding="utf-8"
    )
    assert main(["--config", str(config), "test", str(cases)]) == 1
    err = capsys.readouterr().err
    assert "unknown state 'lsito'" in err and "fix these first" in err


def test_chat_refuses_flows_that_check_refuses(tmp_path, capsys):
    # It ran them: the driver got the apology where serve would not start.
    bad = GOOD.replace("to: listo", "to: lsito")
    config = make_project(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert main(["--config", str(config), "chat", "+56911112222"]) == 1
    err = capsys.readouterr().err
    assert "unknown state 'lsito'" in err
    assert "tracbot chat: fix these first (serve refuses them)" in err


def test_a_flow_only_a_handover_reaches_is_checked_from_the_handing_side(
    tmp_path,
):
    # Its first state waits without a word, which is right when the way in
    # said something: no message starts it by itself.
    sub = """
name: detalle
states:
  espera:
    on:
      - {input: text, reply: eco, to: fin}
  fin:
    reply: eco
"""
    menu = """
name: menu
start: [menu_detalle]
states:
  preguntar:
    reply: eco
    on:
      - {input: text, reply: eco, to: pasar}
  pasar:
    handover: detalle
"""
    flows = {"detalle": sub, "menu": menu}
    assert problems_of(tmp_path, flows, {"eco": "x"}) == []

    # Nothing said on the way: reported where the way starts, naming the end.
    flows["menu"] = menu.replace(
        "{input: text, reply: eco, to: pasar}", "{input: text, to: pasar}"
    )
    found = problems_of(tmp_path, flows, {"eco": "x"})
    name, line, message = one(found, "a message taken here gets no reply")
    assert (name, line) == ("menu.yaml", 7)
    assert "stops in 'detalle.espera'" in message


def test_slots_printed_whole_is_reported_and_a_field_of_it_is_fine(tmp_path):
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": "{{ slots }}"})
    assert one(found, "printed a whole record")[:2] == ("eco.j2", 1)
    fine = "{{ slots.numero }} {% if slots.get('numero') %}sí{% endif %}"
    assert problems_of(tmp_path, {"pedido": GOOD}, {"eco": fine}) == []


@pytest.mark.parametrize(
    "guarded",
    [
        "Listo{% if tipo is defined %} ({{ tipo }}){% endif %}.",
        "Listo {{ tipo | default('') }}.",
    ],
)
def test_a_variable_the_template_guards_may_be_missing(tmp_path, guarded):
    # Jinja's own way to say "maybe": the state need not provide it.
    assert problems_of(tmp_path, {"pedido": GOOD}, {"eco": guarded}) == []
    unguarded = problems_of(tmp_path, {"pedido": GOOD}, {"eco": "{{ tipo }}"})
    assert one(unguarded, "uses 'tipo' (eco.j2:1), which state")


def test_a_word_a_global_flow_answers_first_is_reported(tmp_path):
    # `one_of: [ayuda, cancelar]` passed, and the transition never fired:
    # AYUDA and CANCELAR answer their words in any state first.
    flow = """
    name: encuesta
    start: [encuesta]
    states:
      nota:
        reply: pide_nota
        on:
          - input: text
            one_of: [uno, ayuda, cancelar]
            to: fin
      fin:
        reply: gracias
    """
    found = problems_of(tmp_path, {"encuesta": flow}, {"pide_nota": "¿Nota?"})
    assert len(found) == 2, found
    name, line, message = one(found, "'ayuda' starts the global flow 'ayuda'")
    assert (name, line) == ("encuesta.yaml", 8)
    assert "never gets it" in message
    one(found, "'cancelar' starts the global flow 'cancelar'")


def test_a_start_word_or_name_said_twice_is_reported_in_both_files(tmp_path):
    # Only the file read first was named, by the order of file names: the
    # author who had just added `estado` to their flow was told to look at
    # estado.yaml.
    contacto = "name: contacto\nstart: [contacto, estado]\nstates:\n  fin: {}\n"
    make_project(tmp_path, {"contacto": contacto})
    (tmp_path / "flows" / "ayuda copia.yaml").write_text(
        (tmp_path / "flows" / "ayuda.yaml").read_text("utf-8"), "utf-8"
    )
    estado = (REPO / "flows" / "estado.yaml").read_text("utf-8")
    (tmp_path / "flows" / "estado.yaml").write_text(estado, "utf-8")
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    said = {(Path(p.path).name, p.message) for p in found}
    assert (
        "contacto.yaml",
        "start[1]: start word 'estado' also starts flow 'estado' (estado.yaml)",
    ) in said
    assert (
        "estado.yaml",
        "start[0]: start word 'estado' also starts flow 'contacto' (contacto.yaml)",
    ) in said
    again = "name: flow name 'ayuda' is also the name in "
    assert ("ayuda.yaml", again + "ayuda copia.yaml") in said
    assert ("ayuda copia.yaml", again + "ayuda.yaml") in said


def test_a_notification_template_is_held_to_what_the_api_gives_it(tmp_path):
    # `{{ patnete }}` passed, and from the next start every trip-status
    # notification answered 500.
    found = problems_of(
        tmp_path,
        {},
        {"notificacion_viaje": "🚛 {{ emoji }} Patente: {{ patnete }}\n"},
    )
    name, line, message = one(found, "'patnete' is not given")
    assert (name, line) == ("notificacion_viaje.j2", 1)
    assert "patente" in message

    (tmp_path / "message_templates" / "alerta_sistema.j2").unlink()
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    one([(Path(p.path).name, p.line, p.message) for p in found], "missing: the")


def test_a_notification_value_it_is_not_given_is_not_blamed_on_ubicacion(tmp_path):
    # The advice was to guard `ubicacion` with {% if %}, for a template
    # that read a name no call gives.
    template = "🚛 {{ emoji }} {{ estado }} {{ patente }} ({{ conductor_nombre }})\n"
    found = problems_of(tmp_path, {}, {"notificacion_viaje": template})
    assert [p for p in found if "ubicacion" in p[2] and "guard" in p[2]] == []
    one(found, "'conductor_nombre' is not given to this notification template")


def test_the_engines_own_template_is_held_to_what_it_is_given(tmp_path):
    # Misspelt or deleted, it passed; every driver typing RESUMEN (an
    # admin's command) got the apology instead of "es solo para
    # administradores".
    shipped = (REPO / "message_templates" / "no_disponible.j2").read_text("utf-8")
    bad = shipped.replace("{{ command }}", "{{ comando }}")
    found = problems_of(tmp_path, {}, {"no_disponible": bad})
    name, line, message = one(found, "'comando' is not given to this template")
    assert (name, line) == ("no_disponible.j2", 6)
    assert "(did you mean 'command'?)" in message

    (tmp_path / "message_templates" / "no_disponible.j2").unlink()
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    said = [(Path(p.path).name, p.message) for p in found]
    assert [m for n, m in said if n == "no_disponible.j2"] == [
        "missing: the engine answers a command that is not for the number (a "
        "driver typing RESUMEN, a linked number typing VINCULAR) with it"
    ]


@pytest.mark.parametrize(
    ("templates", "where", "chain"),
    [
        ({"gracias": '¡De nada! {% include "gracias.j2" %}'}, "gracias.j2", 1),
        (
            {"_a": 'a\n{% include "_b.j2" %}', "_b": '{% include "_a.j2" %}'},
            "_a.j2",
            2,
        ),
    ],
)
def test_a_template_that_includes_itself_is_reported(tmp_path, templates, where, chain):
    # It passed; the reply ran out of stack and the driver got the apology.
    found = problems_of(tmp_path, {}, templates)
    assert one(found, "the template includes itself")[:2] == (where, chain)


@pytest.mark.parametrize(
    ("text", "shown", "line"),
    [
        ("¡De nada { name }}! 👍", "'{ name }}'", 1),
        # A single brace around a name a template may print.
        ("Hola\nTu nombre: {driver_name}", "'{driver_name}'", 2),
        ("{% if name %}\n\nHola name }}{% endif %}", "'name }}'", 3),
        ("Hola {{ name }}}", "'}}}'", 1),
    ],
)
def test_a_placeholder_a_brace_short_is_reported(tmp_path, text, shown, line):
    # Jinja takes it for text: the driver got "¡De nada { name }}! 👍".
    found = problems_of(tmp_path, {}, {"gracias": text})
    name, at, message = one(found, "reaches the driver as written")
    assert (name, at) == ("gracias.j2", line)
    assert message.startswith(shown)


@pytest.mark.parametrize(
    "text",
    [
        "{% raw %}Usa {turno} o {{ x }}{% endraw %}",
        'Ejemplo: {"viaje": {"id": 1}}',
        # Refused: JSON's `true}}` and the braces of JSON around a value.
        'Ejemplo: {"viaje": {"activo": true}}',
        'Ejemplo: {"viaje": {"id": {{ wa_id }}}}',
        "Usa llaves {así}",
        "Hola {{ name }}",
    ],
)
def test_braces_meant_as_text_are_not_reported(tmp_path, text):
    # Refused by check, serve and hot reload: text that meant its braces.
    found = problems_of(tmp_path, {}, {"gracias": text})
    assert [p for p in found if p[0] == "gracias.j2"] == []


def test_a_single_brace_around_a_slot_is_reported(tmp_path):
    # `{numero}`: numero is a slot the flow saves.
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": "Dijiste {numero}"})
    name, line, message = one(found, "'{numero}' reaches the driver")
    assert (name, line) == ("eco.j2", 1)
    # Meant as written (a placeholder for the driver to fill in): the way.
    assert message.endswith("write {% raw %}{numero}{% endraw %}")
    found = problems_of(
        tmp_path / "raw", {"pedido": GOOD}, {"eco": "{% raw %}{numero}{% endraw %}"}
    )
    assert found == []


def test_a_flow_nothing_starts_is_reported(tmp_path):
    # A flow with no start word, command or handover passed, and never ran.
    lonely = "name: huerfano\nstates:\n  inicio:\n    reply: ayuda\n"
    found = problems_of(tmp_path, {"huerfano": lonely})
    assert one(found, "nothing starts this flow")[:2] == ("huerfano.yaml", 1)

    handing = GOOD.replace("    reply: eco", "    reply: eco\n    handover: huerfano")
    found = problems_of(tmp_path, {"huerfano": lonely, "pedido": handing}, {"eco": "x"})
    assert [p for p in found if "nothing starts" in p[2]] == []


def test_list_rows_read_from_a_value_nothing_gives_are_reported(tmp_path):
    # `rows: comandos` passed; the menu went out as plain text, no list.
    menu = (REPO / "flows" / "opciones.yaml").read_text("utf-8")
    found = problems_of(
        tmp_path, {"opciones": menu.replace("rows: commands", "rows: comandos")}
    )
    name, line, message = one(found, "'comandos' is no value state 'lista' has")
    assert (name, line) == ("opciones.yaml", 14)
    assert message.endswith("(did you mean 'commands'?)")

    # A list an earlier step's action gives is a value the state has.
    flow = GOOD.replace("save: numero", "do: cargar_viajes").replace(
        "    reply: eco", "    reply: {template: eco, list: {rows: viajes}}"
    )
    other = tmp_path / "other"
    assert problems_of(other, {"pedido": flow}, {"eco": "x", "ayuda": "y"}) == []

    # What the driver wrote is no list: its letters went as rows, Meta
    # refused the message and the driver got nothing at all.
    flow = GOOD.replace(
        "    reply: eco", "    reply: {template: eco, list: {rows: numero}}"
    )
    third = tmp_path / "third"
    found = problems_of(third, {"pedido": flow}, {"eco": "x", "ayuda": "y"})
    assert one(found, "'numero' holds what the driver sent")[:2] == ("pedido.yaml", 11)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        # Each went out cut short with "…", or without its list, unsaid.
        (
            "{template: eco, list: {title: Faenas de la región norte, rows: [a]}}",
            "list title 'Faenas de la región norte' is 25 characters",
        ),
        (
            "{template: eco, list: {rows: [{id: a, description: " + "x" * 73 + "}]}}",
            "row description 'xxx",
        ),
        (
            "{template: eco, buttons: [Sí], list: {rows: [a]}}",
            "buttons and list in one reply",
        ),
        # Meta refuses it; chat and the engine took the first of the two.
        (
            "{template: eco, list: {rows: [{id: a, title: Uno}, {id: a, title: Dos}]}}",
            "two rows have the id 'a'",
        ),
        ("{template: eco, list: {rows: [Tres, Tres]}}", "two rows have the id 'Tres'"),
    ],
)
def test_list_texts_past_their_limits_and_two_kinds_are_reported(tmp_path, reply, said):
    flow = GOOD.replace("    reply: eco", f"    reply: {reply}")
    found = problems_of(tmp_path, {"pedido": flow}, {"eco": "x", "ayuda": "y"})
    assert one(found, said)[:2] == ("pedido.yaml", 11)


def test_a_misplaced_key_sets_off_no_cascade(tmp_path):
    # `on:` indented under `reply:` was reported, then every state behind it
    # as unreachable and every slot as one no step saves.
    flow = GOOD.replace(
        "    reply: ayuda\n    on:\n", "    reply: ayuda\n    otro:\n"
    ).replace("    reply: eco", "    reply: eco2")
    found = problems_of(tmp_path, {"pedido": flow}, {"eco2": "{{ numero }}"})
    assert [p[2].split(": ")[0] for p in found] == ["states.preguntar.otro"], found

    # The same under a reply mapping.
    flow = GOOD.replace(
        "    reply: ayuda\n    on:\n", "    reply:\n      template: ayuda\n      on:\n"
    ).replace(
        "      - input: text\n        save: numero\n        to: listo\n",
        "        - input: text\n          save: numero\n          to: listo\n",
    )
    found = problems_of(tmp_path / "other", {"pedido": flow}, {"eco": "{{ numero }}"})
    assert [p[2].split(": ")[0] for p in found] == ["states.preguntar.reply.on"], found


def test_a_state_key_one_level_too_far_left_is_named_as_such(tmp_path):
    # "states.reply: a state must be a mapping": the author's `inicio:` was
    # left empty and its `reply:` taken for a state.
    flow = "name: corto\nstart: [corto]\nstates:\n  inicio:\n  reply: ayuda\n"
    found = problems_of(tmp_path, {"corto": flow})
    name, line, message = one(found, "'reply' is read as a state of its own")
    assert (name, line) == ("corto.yaml", 5)
    assert "indent it under that state" in message

    flow = "name: corto\nstart: [corto]\nstates:\n  inicio: hola\n"
    found = problems_of(tmp_path, {"corto": flow})
    one(found, "state 'inicio' must be a mapping of its keys")


def test_an_unknown_name_close_to_a_known_one_is_suggested(tmp_path):
    flow = """
    name: pedido
    start: [pedido]
    states:
      revisar:
        reply: pide
        on:
          - input: text
            if: rut_valdo
            do: buscar_conductr
            to: revisr
      fin:
        reply: pide
    """
    found = problems_of(tmp_path, {"pedido": flow}, {"pide": "¿Qué?"})
    one(found, "unknown state 'revisr' (did you mean 'revisar'?)")
    one(found, "unknown condition 'rut_valdo' (did you mean 'rut_valido'?)")
    one(found, "unknown action 'buscar_conductr' (did you mean 'buscar_conductor'?)")


@pytest.mark.parametrize(
    ("source", "line", "said"),
    [
        # Parser words ("expected <block end>, but found '<block mapping
        # start>'") with nothing an author could act on.
        (
            "name: a\nstart: [a]\nstates:\n  x:\n    reply: b\n   on: []\n",
            6,
            "the indentation does not line up",
        ),
        ("name: a\nstart: [a\nstates:\n  x: {}\n", 3, "not closed with ]"),
        (
            "name: a\nstart: [a]\ndescription: hola: chao\nstates:\n  x: {}\n",
            3,
            "put text that holds ': ' in quotes",
        ),
    ],
)
def test_a_yaml_slip_is_said_in_words(tmp_path, source, line, said):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "a.yaml").write_text(source, "utf-8")
    (tmp_path / "message_templates").mkdir()
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    hits = [p for p in found if said in p.message]
    assert [(Path(p.path).name, p.line) for p in hits] == [("a.yaml", line)], found


def test_a_menu_title_is_held_to_a_list_row(tmp_path):
    # The OPCIONES rows read "Guia" and "Ubicacion": a flow may title its
    # command's row, and the title must fit one.
    long = "name: largo\nstart: [largo]\ncommand: LARGO\n"
    long += "title: Un título demasiado largo para una fila\nstates:\n  fin: {}\n"
    bare = "name: suelto\nstart: [suelto]\ntitle: Suelto\nstates:\n  fin: {}\n"
    found = problems_of(tmp_path, {"largo": long, "suelto": bare})
    name, line, _ = one(found, "menu title 'Un título demasiado largo")
    assert (name, line) == ("largo.yaml", 4)
    assert one(found, "this flow has no `command`")[:2] == ("suelto.yaml", 3)


def test_a_notification_value_a_call_may_leave_out_must_be_guarded(tmp_path):
    # `en {{ ubicacion }}` passed, and every trip notification without a
    # location answered 500.
    template = "🚛 {{ emoji }} {{ estado }}\n"
    template += "Patente: {{ patente }} en {{ ubicacion }}\n"
    found = problems_of(tmp_path, {}, {"notificacion_viaje": template})
    name, line, message = one(found, "when a call leaves out ubicacion")
    assert (name, line) == ("notificacion_viaje.j2", 2)
    assert "{% if ubicacion %}" in message


def test_flow_names_differing_only_in_case_are_one_name(tmp_path):
    # `Gracias` and `gracias` passed as two flows.
    one = "name: eco\nstart: [eco]\nstates:\n  fin:\n    reply: ayuda\n"
    other = "name: Eco\nstart: [eco2]\nstates:\n  fin:\n    reply: ayuda\n"
    found = problems_of(tmp_path, {"eco": one, "otro": other})
    said = {(name, message) for name, _, message in found}
    again = "name: flow name {!r} is also the name in {}"
    assert ("otro.yaml", again.format("Eco", "eco.yaml")) in said
    assert ("eco.yaml", again.format("eco", "otro.yaml")) in said


def test_a_handover_into_a_flow_for_fewer_numbers_is_reported(tmp_path):
    # It passed, and a linked driver handed to VINCULAR re-linked their
    # number to another driver's account.
    turno = "name: turno\nstart: [turno]\nstates:\n  a:\n    handover: solo\n"
    solo = (
        "name: solo\naudience: unlinked\nstart: [solo]\nstates:\n  b:\n    reply: eco\n"
    )
    found = problems_of(tmp_path, {"turno": turno, "solo": solo}, {"eco": "x"})
    name, line, message = one(found, "handed to a flow it may not use")
    assert (name, line) == ("turno.yaml", 5)
    assert "'solo' is for audience 'unlinked'" in message
    assert "a number that is admin or driver" in message

    # The same audience on both sides is fine.
    same = turno.replace("start:", "audience: unlinked\nstart:")
    found = problems_of(tmp_path, {"turno": same, "solo": solo}, {"eco": "x"})
    assert not [p for p in found if "may not use" in p[2]]


def test_a_command_said_twice_or_not_a_start_word_is_reported(tmp_path):
    # Both passed: AYUDA listed GUIA twice and typing it always opened the
    # first; TURNO was listed, and typing it got "No entendí".
    guia = "name: guia\ncommand: GUIA\nstart: [guia]\nstates:\n  a:\n    reply: eco\n"
    turno = guia.replace("name: guia", "name: turno").replace("[guia]", "[turno]")
    found = problems_of(tmp_path, {"guia": guia, "turno": turno}, {"eco": "x"})
    assert one(found, "also the command of flow 'turno'")[:2] == ("guia.yaml", 2)
    assert one(found, "also the command of flow 'guia'")[:2] == ("turno.yaml", 2)

    turno = guia.replace("name: guia", "name: turno").replace("GUIA", "TURNO")
    turno = turno.replace("[guia]", "[proximo turno]")
    found = problems_of(tmp_path, {"turno": turno}, {"eco": "x"})
    name, line, message = one(found, "typing it starts nothing")
    assert (name, line) == ("turno.yaml", 2)
    assert "add 'turno' to `start:`" in message


def test_jinja_in_a_flow_file_is_reported_where_it_would_show(tmp_path):
    # Flow files are not templates: drivers read "{{ driver_name }}".
    flow = (
        "name: turno\ncommand: TURNO\ntitle: '{{ name }}'\n"
        "description: Tu turno, {{ driver_name }}\nstart: [turno]\nstates:\n"
        "  a:\n    reply:\n      template: eco\n"
        "      buttons: [{id: si, title: 'Sí {{ name }}'}, No]\n"
    )
    found = problems_of(tmp_path, {"turno": flow}, {"eco": "x"})
    shown = [(line, message) for _, line, message in found if "as written" in message]
    assert [line for line, _ in shown] == [3, 4, 10]
    assert "works only in the files of message_templates/" in shown[0][1]


def test_a_slot_named_like_a_reply_value_is_reported(tmp_path):
    # `save: driver_name` greeted the driver by the place they typed.
    bad = GOOD.replace("save: numero", "save: driver_name")
    assert bad != GOOD
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    name, line, message = one(found, "hides the reply value")
    assert (name, line) == ("pedido.yaml", 8) and "'driver_name'" in message


def test_a_file_not_in_utf8_is_named_at_its_line_in_words(tmp_path):
    # It said "'utf-8' codec can't decode byte 0xf3 in position 104" at line 1.
    make_project(tmp_path, {})
    flows = tmp_path / "flows"
    (flows / "turno.yaml").write_bytes(
        "name: turno\nstart: [turno]\ndescription: Próximo turno\n".encode("latin-1")
    )
    (flows / "doble.yaml").write_bytes("name: doble\n".encode("utf-16"))
    (tmp_path / "message_templates" / "eco.j2").write_bytes("Acá".encode("cp1252"))
    found = [
        (Path(p.path).name, p.line, p.message)
        for p in check_project(flows, tmp_path / "message_templates")
    ]

    name, line, message = one(found, "not UTF-8 text (byte 0xf3")
    assert (name, line) == ("turno.yaml", 3)
    assert message.endswith("save the file as UTF-8")
    assert one(found, "saved as UTF-16; save it as UTF-8")[:2] == ("doble.yaml", 1)
    assert one(found, "not UTF-8 text (byte 0xe1")[:2] == ("eco.j2", 1)


def test_an_unknown_action_like_no_other_points_at_the_list(tmp_path):
    bad = GOOD.replace("save: numero", "do: cargar_turno")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    message = one(found, "unknown action 'cargar_turno'")[2]
    assert message.endswith(
        "(docs/flows.md lists the conditions and actions there are)"
    )


def test_a_menu_of_commands_longer_than_a_list_is_reported(tmp_path):
    # OPCIONES silently dropped its last rows (AYUDA, CANCELAR) at 12.
    menu = (
        "name: menu\nstart: [menu]\nstates:\n  a:\n    reply:\n      template: eco\n"
        "      list: {button: Ver, rows: commands}\n"
    )
    extra = {
        f"c{n}": f"name: c{n}\ncommand: C{n}\nstart: [c{n}]\nstates:\n"
        "  a:\n    reply: eco\n"
        for n in range(9)
    }
    found = problems_of(tmp_path, {"menu": menu, **extra}, {"eco": "x"})
    name, line, message = one(found, "a list shows 10")
    assert (name, line) == ("menu.yaml", 7)
    assert "may use 11 commands" in message

    del extra["c0"]
    found = problems_of(tmp_path / "ten", {"menu": menu, **extra}, {"eco": "x"})
    assert not [p for p in found if "a list shows" in p[2]]


def test_a_flows_folder_that_is_not_there_is_said_so(tmp_path):
    # The report was three "missing" notification templates.
    make_project(tmp_path, {})
    found = check_project(tmp_path / "flujos", tmp_path / "message_templates")
    assert [(p.path, p.message) for p in found] == [
        (str(tmp_path / "flujos"), "no such folder (engine.flows_dir in the config)")
    ]


def test_transitions_not_written_as_a_list_are_reported_at_their_state(tmp_path):
    # "turno.yaml:1: on: expected a list": the file's first line, no state.
    bad = GOOD.replace(
        "    on:\n      - input: text\n        save: numero\n        to: listo\n",
        "    on:\n      input: text\n      to: listo\n",
    )
    assert bad != GOOD
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    name, line, message = one(found, "expected a list of transitions")
    assert (name, line) == ("pedido.yaml", 6)
    assert message.startswith("states.preguntar.on:")


def test_anchors_that_multiply_are_refused_not_expanded(tmp_path):
    # 484 bytes of nested aliases took 2.7 GB and 25 s to check; five
    # levels (about 100,000 entries) are enough to be refused.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 5):
        levels.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]")
    bomb = "name: bomba\nstart: [bomba]\nx-bomb:\n" + "\n".join(
        "  " + line for line in levels
    )
    bomb += "\nstates:\n  a:\n    reply: eco\n"
    found = problems_of(tmp_path, {"bomba": bomb}, {"eco": "x"})
    name, _, message = one(found, "reads as more than 20,000 keys and items")
    assert name == "bomba.yaml"


@pytest.mark.parametrize(
    "name", ["../../fuera", "/tmp/fuera", ".oculto", "dos palabras"]
)
def test_a_flow_name_that_is_not_a_plain_word_is_refused(tmp_path, name):
    # `tracbot graph --all DIR` wrote `<name>.mmd` outside DIR.
    flow = f"name: '{name}'\nstart: [x]\nstates:\n  a:\n    reply: eco\n"
    found = problems_of(tmp_path, {"raro": flow}, {"eco": "x"})
    assert one(found, "a flow name is letters, digits, _ and - only")[:2] == (
        "raro.yaml",
        1,
    )


@pytest.mark.parametrize(
    ("template", "said"),
    [
        # Two nested range(100000) loops: hours of checking, in the server's
        # reload thread too (no reload after it, SIGTERM not obeyed).
        ("{% for i in range(20000) %}{% endfor %}ok", "a range of 20,000 numbers"),
        (
            "{% for a in 'x' * 3000 %}{% for b in 'x' * 3000 %}"
            "{% endfor %}{% endfor %}ok",
            "rendering takes longer than 0.2s with sample values",
        ),
        # `'x' * 300000000`: 300 MB for one reply.
        ("{{ 'x' * 50000 }}", "built 50,000 items with *; at most 10,000"),
    ],
)
def test_a_template_that_runs_or_grows_without_end_is_reported(
    tmp_path, monkeypatch, template, said
):
    # A tenth of the time limit keeps the slow case quick to see.
    monkeypatch.setattr(check, "RENDER_SECONDS", 0.2)
    found = problems_of(tmp_path, {"pedido": GOOD}, {"eco": template})
    assert one(found, said)[:2] == ("eco.j2", 1)


def test_an_unknown_key_is_said_when_it_keeps_the_flow_from_loading(tmp_path):
    # `next:` for `to:` said only "every transition needs a target state".
    bad = GOOD.replace("        to: listo", "        next: listo")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert one(found, "unknown key 'next'")[:2] == ("pedido.yaml", 9)
    assert one(found, "every transition needs `to:` and the name of a state")


def test_a_target_state_in_a_list_and_a_folder_named_like_a_flow(tmp_path):
    # "every transition needs a target state" for `to: [listo]`, and
    # "[Errno 21] Is a directory" for a folder named x.yaml.
    bad = GOOD.replace("        to: listo", "        to: [listo]")
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    assert one(found, "needs `to:` and the name of a state, not ['listo']")

    (tmp_path / "other" / "flows" / "x.yaml").mkdir(parents=True)
    found = problems_of(tmp_path / "other", {}, {})
    assert one(found, "a folder, not a file")[:2] == ("x.yaml", 1)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("start: [@turno]", "put the value in quotes"),
        ("start: [*turno]", "reads as a reference to an &anchor that does not exist"),
        ("start:\t[turno]", "a tab where a value begins"),
    ],
)
def test_yaml_slips_are_said_in_words(tmp_path, text, said):
    # Each said only PyYAML's "found character '@' that cannot start any
    # token" and the like.
    flow = f"name: turno\n{text}\nstates:\n  a:\n    reply: eco\n"
    found = problems_of(tmp_path, {"turno": flow}, {"eco": "x"})
    assert one(found, said)[:2] == ("turno.yaml", 2)


@pytest.mark.parametrize(
    ("text", "said"), [("", "the file is empty"), ("- turno\n", "not a list")]
)
def test_a_flow_file_that_is_empty_or_a_list_is_said_so(tmp_path, text, said):
    # Both said "a flow file must be a mapping".
    make_project(tmp_path, {})
    (tmp_path / "flows" / "turno.yaml").write_text(text, "utf-8")
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    assert [p.message for p in found if said in p.message]


def test_a_case_with_driver_name_is_told_it_is_now_profile_name(tmp_path, capsys):
    # `driver_name:` set the profile name, not the {{ driver_name }} that
    # templates read: "Camila" there changed nothing a reply showed.
    config = make_project(tmp_path, {"pedido": GOOD}, {"eco": "x"})
    cases = tmp_path / "casos.yaml"
    cases.write_text(
        "cases:\n  - name: x\n    driver_name: Camila\n    steps:\n"
        "      - send: pedido\n",
        encoding="utf-8",
    )
    assert main(["--config", str(config), "test", str(cases)]) != 0
    assert (
        "casos.yaml:3: `driver_name` is now `profile_name`" in capsys.readouterr().err
    )


def test_x_keys_hold_anchors_in_a_flow_as_in_the_config(tmp_path):
    # config.yaml takes `x-…` keys for anchors; a flow refused them.
    flow = (
        "name: pedido\nstart: [pedido]\n"
        "x-respuestas: &respuestas\n  - {input: text, save: numero, to: listo}\n"
        "states:\n  preguntar:\n    reply: eco\n    on: *respuestas\n"
        "  listo:\n    reply: eco\n"
    )
    assert problems_of(tmp_path, {"pedido": flow}, {"eco": "x"}) == []


def test_a_transition_after_one_that_takes_everything_is_reported(tmp_path):
    # `on: [{input: any}, {one_of: [nada]}]` passed; the second never fired.
    bad = GOOD.replace(
        "        to: listo\n",
        "        to: listo\n      - input: text\n        one_of: [nada]\n"
        "        to: listo\n",
        1,
    )
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    name, line, message = one(found, "never taken")
    assert (name, line) == ("pedido.yaml", 10)
    assert "on[0] before it takes every text message" in message


def test_a_timeout_reply_printing_the_empty_name_is_reported(tmp_path):
    # "Hola , tu reporte quedó sin terminar": no message asked for it.
    flow = (
        "name: pedido\nstart: [pedido]\ntimeout: {after: 10m, reply: expirado}\n"
        "migrate:\n  preguntar: listo\nstates:\n  preguntar:\n    reply: eco\n"
        "    on:\n      - {input: text, to: listo}\n  listo:\n    reply: eco\n"
    )
    templates = {"eco": "x", "expirado": "Hola {{ name }}, se acabó el tiempo."}
    found = problems_of(tmp_path, {"pedido": flow}, templates)
    message = one(found, "prints {{ name }}")[2]
    assert "(expirado.j2:1), which is empty here" in message
    # Through a filter or `~` too; with a fallback it is fine.
    cases = [("{{ name|upper }}", 1), ("{{ name ~ '!' }}", 1), ("{{ name }}", 1)]
    cases += [("{{ name or 'conductor' }}", 0), ("{{ name|default('x') }}", 0)]
    for n, (printed, said) in enumerate(cases):
        templates = {"eco": "x", "expirado": printed}
        other = problems_of(tmp_path / str(n), {"pedido": flow}, templates)
        assert len([p for p in other if "prints {{ name }}" in p[2]]) == said
    # A migrate line for a state that still exists is never used.
    assert one(found, "state 'preguntar' still exists")[:2] == ("pedido.yaml", 5)


@pytest.mark.parametrize("command", ["TURNO HOY", "TURNOS"])
def test_a_command_the_router_takes_to_its_flow_passes(tmp_path, command):
    # "typing it starts nothing" was said of a command whose first word is
    # a start word, or a typo of one, both of which start the flow.
    flow = (
        f"name: turno\ncommand: {command}\nstart: [turno]\nstates:\n"
        "  a:\n    reply: eco\n"
    )
    found = problems_of(tmp_path, {"turno": flow}, {"eco": "x"})
    assert not [p for p in found if "typing it starts nothing" in p[2]]


def test_a_file_nested_too_deep_is_named_and_the_others_still_checked(tmp_path):
    # "flows:1: checker failed: RecursionError": no file, and every other
    # file's problems hidden behind it.
    deep = "name: hondo\nstart: [hondo]\nx-a: " + "[" * 5000 + "]" * 5000 + "\n"
    bad = GOOD.replace("to: listo", "to: lsito")
    found = problems_of(
        tmp_path,
        {"hondo": deep, "pedido": bad},
        {"eco": "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"},
    )
    assert {p[0] for p in found if "nested too deep" in p[2]} == {
        "hondo.yaml",
        "eco.j2",
    }
    assert one(found, "unknown state 'lsito'")


def test_unknown_keys_of_buttons_lists_and_rows_are_reported(tmp_path):
    # `titel:` made a button's title its id, without a word.
    bad = GOOD.replace(
        "    reply: eco",
        "    reply:\n      template: eco\n      buttons: [{id: si, titel: Sí}]\n",
        1,
    )
    found = problems_of(tmp_path, {"pedido": bad}, {"eco": "x"})
    message = one(found, "unknown key 'titel'")[2]
    assert "(did you mean 'title'?)" in message
    listing = GOOD.replace(
        "    reply: eco",
        "    reply:\n      template: eco\n"
        "      list: {button: Ver, sections: [], rows: [{id: r1, titulo: Uno}]}\n",
        1,
    )
    found = problems_of(tmp_path / "l", {"pedido": listing}, {"eco": "x"})
    assert one(found, "unknown key 'sections'")
    assert one(found, "unknown key 'titulo'")


def test_check_of_named_files_shows_theirs_and_counts_the_others(tmp_path, capsys):
    # `tracbot check flows/turno.yaml` was refused: unrecognized arguments.
    bad = GOOD.replace("to: listo", "to: lsito")
    other = bad.replace("name: pedido", "name: otro").replace("[pedido]", "[otro]")
    config = make_project(tmp_path, {"pedido": bad, "otro": other}, {"eco": "x"})
    named = str(tmp_path / "flows" / "pedido.yaml")
    assert main(["--config", str(config), "check", named]) == 1
    err = capsys.readouterr().err
    assert "pedido.yaml:9:" in err and "otro.yaml" not in err
    assert "1 more in other files (tracbot check shows all)" in err


def test_check_of_a_file_serve_never_reads_says_so(tmp_path, capsys):
    # A misspelled path, or a flow written outside flows/, got "no problems
    # in the files named" and exit 0: a pass for a file nobody checked.
    config = make_project(tmp_path, {"pedido": GOOD}, {"eco": "x"})
    stray = tmp_path / "roto.yaml"
    stray.write_text("name: roto\nstates:\n  a:\n    on:\n      - input: texto\n")
    missing = tmp_path / "flows" / "pedio.yaml"

    assert main(["--config", str(config), "check", str(stray), str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err
    assert f"{stray}: not checked: serve reads flows from" in err
    assert "no problems" not in err

    named = str(tmp_path / "flows" / "pedido.yaml")
    assert main(["--config", str(config), "check", named]) == 0


def test_a_long_chain_of_includes_is_checked_without_running_out_of_stack(tmp_path):
    # The walk for include loops recursed once a level: hot reload raised.
    chain = {f"_t{n}": f'{{% include "_t{n + 1}.j2" %}}' for n in range(1500)}
    chain["_t1500"] = "fin"
    found = problems_of(tmp_path, {}, chain)
    assert found == []
