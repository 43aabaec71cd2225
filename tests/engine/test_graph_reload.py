"""`tracbot graph`, hot reload, and `tracbot serve` refusing invalid flows."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import yaml

from bot.cli import main
from bot.config import load_settings
from bot.engine import reload as reload_module
from bot.engine.flows import load_flow, load_flows
from bot.engine.graph import mermaid
from bot.engine.harness import Harness, demo_settings
from bot.engine.reload import Reloader
from bot.errors import FlowError
from bot.serve import serve
from tests.engine.project import REPO, make_project, write_files

FLOW = """
name: ruta
start: [ruta]
states:
  state:
    reply: ruta_a
    on:
      - {input: text, match: '^\\d+: ok', do: [], to: "paso 2"}
      - {input: button, id: [si, "no"], to: dirección}
  "paso 2":
    always:
      - to: dirección
  dirección:
    reply: ruta_b
"""
TEMPLATES = {"ruta_a": "A", "ruta_b": "B"}
TEMPLATES_FILES = {f"{k}.j2": v for k, v in TEMPLATES.items()}
PHONE = "56911120012"


def test_mermaid_uses_safe_ids_and_real_names(tmp_path):
    make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    text = mermaid(load_flow(tmp_path / "flows" / "ruta.yaml"))
    lines = [line.strip() for line in text.splitlines()]
    assert lines[:4] == ["---", "title: ruta", "---", "stateDiagram-v2"]
    assert 'state "state 💬 ruta_a" as s0' in lines
    assert 'state "paso 2" as s1' in lines
    assert 'state "dirección 💬 ruta_b" as s2' in lines
    assert "s0 --> s1: text ~^\\d+∶ ok" in lines
    assert "s0 --> s2: button si/no" in lines
    assert "s1 --> s2: (sin esperar)" in lines
    assert "[*] --> s0" in lines and "s2 --> [*]" in lines


def test_cli_graph_one_and_all(tmp_path, capsys):
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    assert main(["--config", str(config), "graph", "ruta"]) == 0
    assert "stateDiagram-v2" in capsys.readouterr().out
    assert main(["--config", str(config), "graph", "nada"]) == 2

    out = tmp_path / "diagramas"
    assert main(["--config", str(config), "graph", "--all", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ayuda.mmd", "cancelar.mmd", "no_entendi.mmd", "ruta.mmd"]


async def test_serve_refuses_invalid_flows(tmp_path):
    bad = FLOW.replace("to: dirección", "to: fin")
    config = make_project(tmp_path, {"ruta": bad}, TEMPLATES)
    with pytest.raises(FlowError, match=r"ruta.yaml:8: .*unknown state 'fin'"):
        await serve(load_settings(config, env={}), port=0)


async def test_watcher_reloads_valid_edits_and_refuses_invalid_ones(tmp_path, caplog):
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    settings = demo_settings(config, tmp_path)
    async with Harness(settings) as harness:
        reloader = Reloader(
            harness.runtime.engine, flows_dir, templates_dir, interval=0.02
        )
        watcher = asyncio.create_task(reloader.run())
        try:
            assert harness.runtime.engine.flows["ruta"].spec.version
            assert [b["text"]["body"] for b in await harness.send(PHONE, "ruta")] == [
                "A"
            ]

            with caplog.at_level(logging.INFO, "tracbot.engine"):
                write_files(templates_dir, {"ruta_a.j2": "A nueva"})
                await _until(lambda: reloader.reloads == 1)
            replies = await harness.send(PHONE, "ruta")
            assert [b["text"]["body"] for b in replies] == ["A nueva"]
            # The line names what was edited, not every flow's hash.
            assert "changed=- templates changed=ruta_a.j2" in caplog.text

            version = harness.runtime.engine.flows["ruta"].spec.version
            with caplog.at_level(logging.ERROR, "tracbot.engine"):
                write_files(flows_dir, {"ruta.yaml": FLOW + "  \tmal: 1\n"})
                await _until(lambda: reloader.refusals == 1)
            assert "reload refused" in caplog.text and "tab" in caplog.text
            assert harness.runtime.engine.flows["ruta"].spec.version == version
            replies = await harness.send(PHONE, "ruta")
            assert [b["text"]["body"] for b in replies] == ["A nueva"]

            # SIGHUP's path: reload on request even with no change.
            write_files(flows_dir, {"ruta.yaml": FLOW})
            await _until(lambda: reloader.reloads == 2)
            reloader.request()
            await _until(lambda: reloader.reloads == 3)
            assert set(harness.runtime.engine.flows) == set(load_flows(flows_dir))
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def test_a_reload_checks_off_the_loop(tmp_path):
    # The check and the compiling took the loop for ~100 ms with the shipped
    # flows, so webhooks waited; the loop now turns while they run.
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    async with Harness(demo_settings(config, tmp_path)) as harness:
        engine = harness.runtime.engine
        reloader = Reloader(engine, flows_dir, templates_dir)
        write_files(templates_dir, {"ruta_a.j2": "A nueva"})

        reload = asyncio.create_task(reloader.reload_off_loop())
        turns = 0
        while not reload.done():
            turns += 1
            await asyncio.sleep(0)
            # Until the swap, the version before serves every message.
            if not reload.done():
                assert reloader.reloads == 0

        assert await reload is True
        assert turns > 1
        replies = await harness.send(PHONE, "ruta")
        assert [b["text"]["body"] for b in replies] == ["A nueva"]


async def test_a_flow_saved_during_the_check_is_never_served_unchecked(
    tmp_path, monkeypatch
):
    # The check read the files, then the flows were read again to compile:
    # a save in between was served unchecked (a tester's editor, 6 in 6).
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    broken = FLOW.replace("reply: ruta_a", "reply: ruta_nope")
    async with Harness(demo_settings(config, tmp_path)) as harness:
        engine = harness.runtime.engine
        reloader = Reloader(engine, flows_dir, templates_dir)
        load_for_real = reload_module.load_flows

        def saved_meanwhile(folder):
            # Another editor saves right after the check, before the load.
            write_files(flows_dir, {"ruta.yaml": broken})
            return load_for_real(folder)

        monkeypatch.setattr(reload_module, "load_flows", saved_meanwhile)
        write_files(templates_dir, {"ruta_a.j2": "A nueva"})
        assert await reloader.reload_off_loop() is False
        monkeypatch.setattr(reload_module, "load_flows", load_for_real)

        replies = await harness.send(PHONE, "ruta")
        assert [b["text"]["body"] for b in replies] == ["A"]
        # Asked to look again, the watcher checks the saved file: refused.
        assert await reloader.reload_off_loop() is False
        assert reloader.refusals == 1 and reloader.reloads == 0


async def _until(predicate, seconds: float = 5.0) -> None:
    # The reloader reports through counters; polling them is the simple way.
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("name", ["vincular", "ruta-2", "true", "123", "null"])
def test_mermaid_front_matter_is_yaml_with_a_title(tmp_path, name):
    flow = FLOW.replace("name: ruta", f"name: {json.dumps(name)}")
    make_project(tmp_path, {"ruta": flow}, TEMPLATES)
    text = mermaid(load_flow(tmp_path / "flows" / "ruta.yaml"))
    first, front, rest = text.split("---\n", 2)
    assert first == "" and yaml.safe_load(front) == {"title": name}
    assert rest.startswith("stateDiagram-v2\n")


def test_cli_graph_and_test_bad_inputs_give_a_message(tmp_path, capsys):
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    assert main(["--config", str(config), "test", "nope.yaml"]) == 2
    assert capsys.readouterr().err == "tracbot test: nope.yaml: no such file\n"

    assert main(["--config", str(config), "graph"]) == 2
    (tmp_path / "flows" / "carpeta.yaml").mkdir()
    assert main(["--config", str(config), "graph", "ruta"]) == 2
    err = capsys.readouterr().err
    assert "name a flow" in err and "carpeta.yaml: Is a directory" in err

    (tmp_path / "flows" / "carpeta.yaml").rmdir()
    busy = tmp_path / "ocupado"
    busy.write_text("", "utf-8")
    assert main(["--config", str(config), "graph", "--all", str(busy)]) == 2
    assert "ocupado: File exists" in capsys.readouterr().err


async def test_serve_refuses_an_unknown_filter_with_the_checkers_line(tmp_path):
    templates = {"ruta_b": "📄 {{ text | mayus }}"}
    config = make_project(tmp_path, {"ruta": FLOW}, templates)
    with pytest.raises(FlowError, match=r"ruta_b.j2:1: unknown filter 'mayus'"):
        await serve(load_settings(config, env={}), port=0)


async def test_watcher_survives_a_bad_template_and_applies_the_next_edit(
    tmp_path, caplog
):
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    async with Harness(demo_settings(config, tmp_path)) as harness:
        reloader = Reloader(
            harness.runtime.engine, flows_dir, templates_dir, interval=0.02
        )
        watcher = asyncio.create_task(reloader.run())
        try:
            with caplog.at_level(logging.ERROR, "tracbot.engine"):
                write_files(templates_dir, {"ruta_a.j2": "📄 {{ text | mayus }}"})
                await _until(lambda: reloader.refusals == 1)
            assert "ruta_a.j2:1: unknown filter 'mayus'" in caplog.text
            assert [b["text"]["body"] for b in await harness.send(PHONE, "ruta")] == [
                "A"
            ]

            write_files(templates_dir, TEMPLATES_FILES)
            write_files(flows_dir, {"ruta.yaml": FLOW.replace("[ruta]", "[ruta, r]")})
            reloader.request()
            await _until(lambda: reloader.reloads == 1)
            assert harness.runtime.engine.flows["ruta"].spec.start == ("ruta", "r")
            assert not watcher.done()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def test_refused_template_edit_never_reaches_drivers(tmp_path):
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    async with Harness(demo_settings(config, tmp_path)) as harness:
        reloader = Reloader(harness.runtime.engine, flows_dir, templates_dir)
        # Rendered once, so Jinja holds it; the edit must not be re-read.
        assert [b["text"]["body"] for b in await harness.send(PHONE, "ruta")] == ["A"]

        write_files(templates_dir, {"ruta_a.j2": "A {% endfi %}"})
        assert not reloader.reload()
        await harness.send(PHONE, "cancelar")
        assert [b["text"]["body"] for b in await harness.send(PHONE, "ruta")] == ["A"]

        write_files(templates_dir, {"ruta_a.j2": "A nueva"})
        assert reloader.reload()
        await harness.send(PHONE, "cancelar")
        replies = await harness.send(PHONE, "ruta")
        assert [b["text"]["body"] for b in replies] == ["A nueva"]


async def test_deleted_flow_is_a_warning_and_its_drivers_start_over(tmp_path, caplog):
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    async with Harness(demo_settings(config, tmp_path)) as harness:
        reloader = Reloader(harness.runtime.engine, flows_dir, templates_dir)
        await harness.send(PHONE, "ruta")
        assert (await harness.conversation(PHONE)).flow == "ruta"

        (flows_dir / "ruta.yaml").unlink()
        with caplog.at_level(logging.INFO, "tracbot.engine"):
            assert reloader.reload()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warnings] == [
            "flow removed flow=ruta; drivers in it start over"
        ]

        [reply] = [b["text"]["body"] for b in await harness.send(PHONE, "hola")]
        assert reply.startswith("Actualizamos esta conversación")
        assert "No entendí tu mensaje" in reply
        assert (await harness.conversation(PHONE)).flow is None


async def test_a_template_only_reload_shows_in_the_log(tmp_path, caplog):
    # The line named only the flows' versions: a template edit looked like
    # nothing had changed.
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    async with Harness(demo_settings(config, tmp_path)) as harness:
        reloader = Reloader(harness.runtime.engine, flows_dir, templates_dir)
        with caplog.at_level(logging.INFO, "tracbot.engine"):
            assert reloader.reload()
            write_files(templates_dir, {"ruta_a.j2": "A nueva"})
            assert reloader.reload()
    lines = [r.getMessage() for r in caplog.records if "reloaded" in r.getMessage()]
    assert len(lines) == 2
    assert "changed=- templates changed=- " in lines[0]
    assert "changed=- templates changed=ruta_a.j2 " in lines[1]


async def test_notifications_follow_a_reloaded_template(tmp_path):
    # The API rendered with templates of its own, read once: an edit that
    # the flows took was not what the next notification said.
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    async with Harness(demo_settings(config, tmp_path)) as harness:
        reloader = Reloader(harness.runtime.engine, flows_dir, templates_dir)
        write_files(templates_dir, {"notificacion_guia.j2": "Guía {{ folio }} lista"})
        assert await reloader.reload_off_loop() is True

        await harness.send(PHONE, "ruta")  # the window is open
        session = harness._session
        assert session is not None
        url = (
            harness.url.removesuffix("/webhook") + "/api/whatsapp/notify/guide_created"
        )
        body = {"phone": PHONE, "folio": "F-1", "cliente": "Minera", "conductor": "Ana"}
        headers = {"Authorization": "Bearer demo-backend-token"}
        async with session.post(url, json=body, headers=headers) as answer:
            assert answer.status == 202
        replies = await harness.replies(PHONE)
        assert [b["text"]["body"] for b in replies] == ["Guía F-1 lista"]


async def test_readyz_warns_while_the_files_on_disk_are_refused(tmp_path):
    # A refused edit kept the old version serving, silently: the next
    # restart refused to start and every driver went unanswered.
    config = make_project(tmp_path, {"ruta": FLOW}, TEMPLATES)
    flows_dir, templates_dir = tmp_path / "flows", tmp_path / "message_templates"
    async with Harness(demo_settings(config, tmp_path)) as harness:
        runtime = harness.runtime
        runtime.reloader = Reloader(runtime.engine, flows_dir, templates_dir)
        session = harness._session
        assert session is not None
        readyz = harness.url.removesuffix("/webhook") + "/readyz"

        broken = FLOW.replace('to: "paso 2"', "to: bb")
        write_files(flows_dir, {"ruta.yaml": broken})
        assert runtime.reloader.reload() is False
        async with session.get(readyz) as answer:
            assert answer.status == 200
            [warning] = (await answer.json())["warnings"]
        assert "refused at reload" in warning and "unknown state 'bb'" in warning

        write_files(flows_dir, {"ruta.yaml": FLOW})
        assert runtime.reloader.reload() is True
        async with session.get(readyz) as answer:
            assert "warnings" not in await answer.json()


def test_mermaid_shows_a_reply_with_buttons_a_list_or_a_location_request(tmp_path):
    # Such states showed no reply at all: ubicacion.pedir, vincular.confirmar.
    text = mermaid(load_flow(REPO / "flows" / "vincular.yaml"))
    assert 'state "confirmar 💬 vincular_confirmar [buttons]" as s4' in [
        line.strip() for line in text.splitlines()
    ]
    text = mermaid(load_flow(REPO / "flows" / "ubicacion.yaml"))
    assert "ubicacion_pedir [location_request]" in text
