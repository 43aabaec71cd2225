"""The flow language at run time, through a whole tracbot on loopback.

Every test posts signed webhooks to the real app (tmp SQLite, Graph API
simulator) with `Harness` and reads what the simulator received.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from bot.engine.engine import Engine, _said_first
from bot.engine.harness import Harness, demo_settings
from bot.engine.interactive import Reply, render_reply
from bot.engine.outbound import text_messages
from bot.engine.reload import Reloader
from bot.engine.replies import APOLOGY
from storage.base import Link, utcnow
from tests.engine.project import make_project, write_files

PHONE = "56911120011"

ECO = """
name: eco
start: [eco, repetir]
timeout:
  after: 10m
  reply: eco_expirado
states:
  pedir:
    reply: eco_pedir
    on:
      - input: text
        save: dicho
        to: repetir
  repetir:
    reply: eco_repetir
"""
TEMPLATES = {
    "eco_pedir": "¿Qué repito?",
    "eco_repetir": "Dijiste: {{ dicho }}",
    "eco_expirado": "Se acabó el tiempo, {{ name or 'conductor' }}.",
}


def texts(bodies: list[dict]) -> list[str]:
    return [b["text"]["body"] for b in bodies]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, {"eco": ECO}, TEMPLATES)


async def start(config: Path, engine: Engine | None = None) -> Harness:
    settings = demo_settings(config, config.parent)
    harness = Harness(settings, engine)
    return await harness.__aenter__()


async def test_user_text_with_braces_is_shown_not_rendered(project):
    harness = await start(project)
    try:
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]
        replies = await harness.send(PHONE, "{{ 7*7 }} {% raw %}{{ x.__class__ }}")
        assert texts(replies) == ["Dijiste: {{ 7*7 }} {% raw %}{{ x.__class__ }}"]
        # No per-phone object outlives its message: the machines hold no model.
        engine = harness.runtime.engine
        assert [f.machine.models for f in engine.flows.values()] == [
            [] for _ in engine.flows
        ]
    finally:
        await harness.__aexit__(None, None, None)


async def test_timeout_survives_a_restart(project):
    harness = await start(project)
    try:
        before = utcnow()
        await harness.send(PHONE, "eco")
        stored = await harness.conversation(PHONE)
        assert stored.state == "pedir"
        assert stored.deadline - before >= timedelta(minutes=10)
        assert stored.deadline - utcnow() <= timedelta(minutes=10)
    finally:
        await harness.__aexit__(None, None, None)

    # A new process on the same database: only the stored deadline is left.
    again = await start(project)
    try:
        assert texts(await again.expire(PHONE)) == ["Se acabó el tiempo, conductor."]
        conversation = await again.conversation(PHONE)
        assert (conversation.flow, conversation.state) == (None, None)
        assert conversation.deadline is None
        # The same deadline is never swept twice.
        with pytest.raises(AssertionError, match="nothing to expire"):
            await again.expire(PHONE)
    finally:
        await again.__aexit__(None, None, None)


async def test_cancelar_ends_the_flow_but_ayuda_keeps_it(project):
    harness = await start(project)
    try:
        await harness.send(PHONE, "eco")
        help_text = texts(await harness.send(PHONE, "AYUDA"))
        assert "Comandos Disponibles" in help_text[0]
        assert (await harness.conversation(PHONE)).state == "pedir"

        cancelled = texts(await harness.send(PHONE, "salir"))
        assert cancelled[0].startswith("Listo, cancelamos")
        conversation = await harness.conversation(PHONE)
        assert (conversation.state, conversation.deadline) == (None, None)
    finally:
        await harness.__aexit__(None, None, None)


async def test_handover_starts_the_next_flow_with_the_slots(tmp_path):
    menu = """
    name: menu_eco
    start: [menueco]
    states:
      inicio:
        reply: menu_eco
        handover: eco
    """
    config = make_project(
        tmp_path, {"eco": ECO, "menu_eco": menu}, {**TEMPLATES, "menu_eco": "Vamos."}
    )
    harness = await start(config)
    try:
        assert texts(await harness.send(PHONE, "menueco")) == [
            "Vamos.",
            "¿Qué repito?",
        ]
        conversation = await harness.conversation(PHONE)
        assert (conversation.flow, conversation.state) == ("eco", "pedir")
    finally:
        await harness.__aexit__(None, None, None)


@pytest.mark.parametrize("odd", ["state", "trigger", "to_x", "dirección", "paso 2"])
async def test_states_named_like_model_attributes_or_not_ascii_run(tmp_path, odd):
    flow = ECO.replace("repetir:", f'"{odd}":').replace("to: repetir", f'to: "{odd}"')
    harness = await start(make_project(tmp_path, {"eco": flow}, TEMPLATES))
    try:
        await harness.send(PHONE, "eco")
        assert texts(await harness.send(PHONE, "hola")) == ["Dijiste: hola"]
    finally:
        await harness.__aexit__(None, None, None)


async def test_always_loop_that_slipped_past_the_checker_stops(tmp_path):
    loop = """
    name: bucle
    start: [bucle]
    states:
      a:
        reply: eco_pedir
        always:
          - to: b
      b:
        always:
          - to: a
    """
    config = make_project(tmp_path, {"bucle": loop}, TEMPLATES)
    harness = await start(config)
    try:
        replies = await asyncio.wait_for(harness.send(PHONE, "bucle"), 10)
        # Bounded hops: a few prompts, then the driver is left where it stopped.
        assert 1 <= len(replies) <= 20
        assert set(texts(replies)) == {"¿Qué repito?"}
    finally:
        await harness.__aexit__(None, None, None)


async def test_template_escaping_the_sandbox_gets_the_apology(tmp_path, caplog):
    escape = {"eco_pedir": "{{ slots.__class__.__mro__[1].__subclasses__() }}"}
    config = make_project(tmp_path, {"eco": ECO}, {**TEMPLATES, **escape})
    harness = await start(config)
    try:
        with caplog.at_level(logging.ERROR, "tracbot.engine"):
            assert texts(await harness.send(PHONE, "eco")) == [APOLOGY]
        assert "unsafe" in caplog.text or "SecurityError" in caplog.text
    finally:
        await harness.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("printed", "said"),
    [
        ("{{ pin }}", "a template printed a whole record"),
        ("{{ pin ~ '!' }}", "a template joined a whole record or list with ~"),
        ("{{ pin|title }}", "a template made text of a whole record or list with |"),
        (
            "{{ 'en %s' % pin }}",
            "a template made text of a whole record or list with %",
        ),
        ("{{ 'en {}'.format(pin) }}", "a template made text of a whole record or"),
        # Not a guard's: the log said where only for those.
        ("{{ pin.nope.x }}", "'dict object' has no attribute 'nope'"),
    ],
)
async def test_a_template_failing_at_run_gets_the_apology_and_a_line(
    tmp_path, caplog, printed, said
):
    # The guards' reached the driver as Python's text of the saved location,
    # quotes and all: "Dijiste: {'latitude': -23.5, 'longitude': -70.4, …}".
    flow = ECO.replace("input: text", "input: location").replace("dicho", "pin")
    templates = {**TEMPLATES, "eco_repetir": f"Dijiste:\n{printed}"}
    harness = await start(make_project(tmp_path, {"eco": flow}, templates))
    try:
        await harness.send(PHONE, "eco")
        pin = {"location": {"latitude": -23.5, "longitude": -70.4}}
        with caplog.at_level(logging.ERROR, "tracbot.engine"):
            assert texts(await harness.send(PHONE, pin)) == [APOLOGY]
        # Where, for the operator and for `tracbot test`'s reader, in one
        # line: its traceback through the state machine was 80 lines.
        [error] = [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("tracbot")
        ]
        assert f"eco_repetir.j2:2: {said}" in error.getMessage()
        assert error.exc_info is None
    finally:
        await harness.__aexit__(None, None, None)


async def test_inputs_button_list_location_and_quick_reply(tmp_path):
    flow = """
    name: elegir
    start: [elegir]
    states:
      menu:
        reply: eco_pedir
        on:
          - {input: list, id: fila_1, save: elegido, to: fin}
          - {input: quick_reply, id: VER, save: elegido, to: fin}
          - {input: location, save: elegido, to: fin}
          - {input: button, id: [si], save: elegido, to: fin}
      fin:
        reply: elegido
    """
    templates = {
        **TEMPLATES,
        "elegido": "{{ elegido.latitude if elegido is mapping else elegido }}",
    }
    harness = await start(make_project(tmp_path, {"elegir": flow}, templates))
    try:
        for send, answer in [
            ({"list": "fila_1"}, "fila_1"),
            ({"quick_reply": "VER"}, "VER"),
            ({"button": "si"}, "si"),
            ({"location": {"latitude": -23.5, "longitude": -70.4}}, "-23.5"),
        ]:
            await harness.send(PHONE, "elegir")
            assert answer in texts(await harness.send(PHONE, send))[0]
        # A button id the state does not take is not a list row either.
        await harness.send(PHONE, "elegir")
        assert texts(await harness.send(PHONE, {"button": "fila_1"})) == [
            "¿Qué repito?"
        ]
    finally:
        await harness.__aexit__(None, None, None)


async def test_buttons_written_as_words_go_out_as_buttons(tmp_path):
    # `buttons: [Sí, "No"]` passed `tracbot check` and crashed the reply
    # (TypeError in the button's id): the driver got the apology.
    flow = ECO.replace(
        "reply: eco_pedir", 'reply: {template: eco_pedir, buttons: [Sí, "No"]}'
    )
    harness = await start(make_project(tmp_path, {"eco": flow}, TEMPLATES))
    try:
        [body] = await harness.send(PHONE, "eco")
        assert body["type"] == "interactive"
        buttons = body["interactive"]["action"]["buttons"]
        assert [b["reply"] for b in buttons] == [
            {"id": "Sí", "title": "Sí"},
            {"id": "No", "title": "No"},
        ]
    finally:
        await harness.__aexit__(None, None, None)


async def test_a_reply_too_long_for_its_buttons_keeps_them_on_its_last_part(
    tmp_path,
):
    # Sent whole as text, it lost its buttons, and a state that takes only
    # a button could not be answered: every message repeated the question.
    flow = ECO.replace(
        "    reply: eco_repetir",
        "    reply: {template: eco_repetir, buttons: [Sí, 'No']}\n"
        "    on:\n"
        "      - {input: button, id: Sí, to: fin}\n"
        "  fin:\n"
        "    reply: eco_pedir",
    )
    templates = {**TEMPLATES, "eco_repetir": "Dijiste:\n\n{{ dicho }}\n\n¿Es así?"}
    harness = await start(make_project(tmp_path, {"eco": flow}, templates))
    try:
        await harness.send(PHONE, "eco")
        said = " ".join(["palabra"] * 200)  # 1,599 characters
        ahead, asked = await harness.send(PHONE, said)

        # Nothing lost, cut at the paragraph: the question with its buttons.
        assert ahead["type"] == "text" and asked["type"] == "interactive"
        first, body = ahead["text"]["body"], asked["interactive"]["body"]["text"]
        assert first == f"Dijiste:\n\n{said}"
        assert body == "¿Es así?"
        buttons = asked["interactive"]["action"]["buttons"]
        assert [b["reply"]["id"] for b in buttons] == ["Sí", "No"]

        # The question is answered with its button.
        assert texts(await harness.send(PHONE, {"button": "Sí"})) == ["¿Qué repito?"]
    finally:
        await harness.__aexit__(None, None, None)


async def test_buttons_sharing_a_title_go_out_as_the_text(tmp_path):
    # Meta refuses the whole message, so the driver got nothing at all.
    flow = ECO.replace(
        "reply: eco_pedir",
        "reply: {template: eco_pedir, buttons: [{id: ok, title: Ok}, "
        "{id: ok2, title: Ok}]}",
    )
    harness = await start(make_project(tmp_path, {"eco": flow}, TEMPLATES))
    try:
        [body] = await harness.send(PHONE, "eco")
        assert body["type"] == "text" and body["text"]["body"] == "¿Qué repito?"
    finally:
        await harness.__aexit__(None, None, None)


async def test_flow_edits_under_a_conversation(project):
    flows_dir = project.parent / "flows"
    templates_dir = project.parent / "message_templates"
    harness = await start(project)
    reloader = Reloader(harness.runtime.engine, flows_dir, templates_dir)
    try:
        await harness.send(PHONE, "eco")

        # The state still exists: the driver carries on in the new version.
        write_files(flows_dir, {"eco.yaml": ECO.replace("10m", "20m")})
        assert reloader.reload()
        assert texts(await harness.send(PHONE, "uno")) == ["Dijiste: uno"]

        # The state was renamed and `migrate` says where it went.
        renamed = ECO.replace("pedir:", "preguntar:") + "migrate:\n  pedir: preguntar\n"
        write_files(flows_dir, {"eco.yaml": ECO})
        assert reloader.reload()
        await harness.send(PHONE, "eco")
        write_files(flows_dir, {"eco.yaml": renamed})
        assert reloader.reload()
        assert texts(await harness.send(PHONE, "dos")) == ["Dijiste: dos"]

        # Renamed with no `migrate`: reset, told politely, message still handled.
        write_files(flows_dir, {"eco.yaml": ECO})
        assert reloader.reload()
        await harness.send(PHONE, "eco")
        write_files(flows_dir, {"eco.yaml": ECO.replace("pedir:", "otro:")})
        assert reloader.reload()
        # One message: the notice and the answer went as two.
        [reply] = texts(await harness.send(PHONE, "tres"))
        assert reply.startswith("Actualizamos esta conversación")
        assert "No entendí tu mensaje" in reply
        assert (await harness.conversation(PHONE)).flow is None
    finally:
        await harness.__aexit__(None, None, None)


async def test_start_words_changed_by_a_reload_route_at_once(project):
    # Routing answers are remembered per text (bot/engine/routes.py): a
    # reload must forget them, in both directions.
    flows_dir = project.parent / "flows"
    harness = await start(project)
    reloader = Reloader(
        harness.runtime.engine, flows_dir, project.parent / "message_templates"
    )
    try:
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]
        await harness.send(PHONE, "cancelar")
        fallback = texts(await harness.send(PHONE, "loro"))
        assert fallback != ["¿Qué repito?"]

        write_files(flows_dir, {"eco.yaml": ECO.replace("[eco, repetir]", "[loro]")})
        assert reloader.reload()
        assert texts(await harness.send(PHONE, "loro")) == ["¿Qué repito?"]
        await harness.send(PHONE, "cancelar")
        assert texts(await harness.send(PHONE, "eco")) == fallback
    finally:
        await harness.__aexit__(None, None, None)


async def test_a_handover_never_enters_a_flow_the_number_may_not_use(tmp_path):
    # A flow for anyone handed over to VINCULAR (for unlinked numbers): a
    # linked driver typed another driver's RUT and took over that account.
    turno = """
    name: turno
    start: [turno]
    states:
      inicio:
        reply: turno
        handover: vincular
    """
    vincular = (Path(__file__).parents[2] / "flows" / "vincular.yaml").read_text()
    config = make_project(
        tmp_path, {"turno": turno, "vincular": vincular}, {"turno": "Tu turno."}
    )
    harness = await start(config)
    linked, unlinked = "56911112222", "56911113333"
    link = Link(
        linked, "C17", "9876543-3", "Rodrigo Pizarro", "driver", "rut", utcnow()
    )
    await harness.runtime.store.save_link(link)
    try:
        first, refused = texts(await harness.send(linked, "turno"))
        assert first == "Tu turno."
        linked_to = "Tu número ya está vinculado a la cuenta de Rodrigo"
        assert refused.startswith(linked_to)
        conversation = await harness.conversation(linked)
        assert (conversation.flow, conversation.state) == (None, None)
        assert (await harness.runtime.store.get_link(linked)) == link

        # A number the target flow is for is handed over as before.
        replies = texts(await harness.send(unlinked, "turno"))
        assert replies[0] == "Tu turno." and "RUT" in replies[1]
        conversation = await harness.conversation(unlinked)
        assert conversation.flow == "vincular"
    finally:
        await harness.__aexit__(None, None, None)


async def test_a_template_saved_with_a_byte_order_mark_reads_without_it(tmp_path):
    # Notepad's BOM began every reply with an invisible U+FEFF.
    config = make_project(tmp_path, {"eco": ECO}, TEMPLATES)
    template = tmp_path / "message_templates" / "eco_pedir.j2"
    template.write_bytes("\ufeff¿Qué repito?".encode())
    flow = tmp_path / "flows" / "eco.yaml"
    flow.write_bytes(b"\xef\xbb\xbf" + flow.read_bytes())
    harness = await start(config)
    try:
        assert texts(await harness.send(PHONE, "eco")) == ["¿Qué repito?"]
    finally:
        await harness.__aexit__(None, None, None)


async def test_a_saved_pin_without_name_or_address_prints_them_empty(tmp_path):
    # `{{ pin.address }}` on a bare pin (most pins) gave the apology.
    flow = """
    name: donde
    start: [donde]
    states:
      pedir:
        reply: donde_pedir
        on:
          - input: location
            save: pin
            to: listo
      listo:
        reply: donde_listo
    """
    templates = {
        "donde_pedir": "¿Dónde estás?",
        "donde_listo": "Anotado: {{ pin.latitude }} [{{ pin.name }}|{{ pin.address }}]",
    }
    harness = await start(make_project(tmp_path, {"donde": flow}, templates))
    try:
        await harness.send(PHONE, "donde")
        pin = {"location": {"latitude": -23.65, "longitude": -70.4}}
        bodies = await harness.send(PHONE, pin)
        assert texts(bodies) == ["Anotado: -23.65 [|]"]
    finally:
        await harness.__aexit__(None, None, None)


@pytest.mark.parametrize("blank", ["", "   ", "\u200b", "\u2800"])
async def test_a_text_with_nothing_in_it_answers_no_question(project, blank):
    # An empty or invisible text was saved as the answer: the confirmation
    # read "Dijiste: " with nothing after it.
    harness = await start(project)
    try:
        await harness.send(PHONE, "eco")
        replies = texts(await harness.send(PHONE, blank))
        assert not any(r.startswith("Dijiste") for r in replies), replies
        assert (await harness.conversation(PHONE)).state == "pedir"
        assert texts(await harness.send(PHONE, "hola")) == ["Dijiste: hola"]
    finally:
        await harness.__aexit__(None, None, None)


async def test_a_reply_that_fails_keeps_the_driver_at_the_question(tmp_path):
    # The step went on with the apology in place of its reply: the answer
    # was gone, and "try again" got "No entendí".
    templates = {**TEMPLATES, "eco_repetir": "Dijiste: {{ dicho.nope }}"}
    harness = await start(make_project(tmp_path, {"eco": ECO}, templates))
    try:
        await harness.send(PHONE, "eco")
        assert texts(await harness.send(PHONE, "hola")) == [APOLOGY]
        conversation = await harness.conversation(PHONE)
        assert (conversation.flow, conversation.state) == ("eco", "pedir")
        assert "dicho" not in conversation.slots
    finally:
        await harness.__aexit__(None, None, None)


def test_a_notice_before_buttons_keeps_them():
    # A restart notice ahead of a reply with buttons: one message, its
    # buttons kept.
    asked = Reply.of("¿Eres tú?", {"type": "button", "action": {"buttons": []}})
    [reply] = _said_first(["Actualizamos."], [asked, "después"])[:1]
    assert str(reply) == "Actualizamos.\n\n¿Eres tú?"
    assert reply.interactive == asked.interactive
    assert _said_first(["Se acabó."], []) == ["Se acabó."]


def test_list_rows_that_are_not_a_list_send_the_text_alone():
    # A text slot's letters went as rows: Meta refused the message and the
    # driver got nothing, at every message after.
    spec = {"template": "eco", "list": {"rows": "numero"}}
    reply = render_reply(spec, lambda name, values: "Elige:", {"numero": "a, b"})
    assert str(reply) == "Elige:" and reply.interactive is None


async def test_the_engines_own_template_may_read_slots_like_any_other(tmp_path):
    # `{{ slots.rut }}` passed `tracbot check` and sent the apology.
    admins = "name: solo\nstart: [solo]\ncommand: SOLO\naudience: admin\n"
    admins += "states:\n  a:\n    reply: eco_pedir\n"
    templates = {**TEMPLATES, "no_disponible": "Solo admins ({{ slots | length }})."}
    project = make_project(tmp_path, {"eco": ECO, "solo": admins}, templates)
    harness = await start(project)
    try:
        assert texts(await harness.send(PHONE, "solo")) == ["Solo admins (0)."]
    finally:
        await harness.__aexit__(None, None, None)


def test_a_list_reply_is_split_only_past_what_a_list_holds():
    # Split at 1,024 like buttons: a list's text may be 4,096, and a 1,621
    # character menu went as two messages.
    rows = {"type": "list", "action": {"button": "Ver", "sections": []}}
    text = "\n\n".join([("línea " * 30).strip()] * 9)
    assert 1024 < len(text) < 4096
    [item] = text_messages("56911120011", "1", [Reply.of(text, rows)])
    assert item.body["interactive"]["body"]["text"] == text
    buttons = {"type": "button", "action": {"buttons": []}}
    assert len(text_messages("56911120011", "1", [Reply.of(text, buttons)])) == 2
