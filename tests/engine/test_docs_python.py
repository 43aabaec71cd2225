"""The Python that docs/flows.md shows for a new condition and action runs
as written: copied, it called a method BusinessData does not have and
registered a name Tracmin's actions already hold, which stops the start."""

from __future__ import annotations

import pytest

from bench import procs
from bot.engine import registry
from bot.engine.convtest import run_files
from tests.engine.project import documented, make_project, write_files

FLOW = """\
name: contar
command: CONTAR
start: [contar]
audience: driver
initial: inicio
states:
  inicio:
    always:
      - do: contar_viajes
        to: pedir
  pedir:
    reply: contar_total
    on:
      - input: text
        if: rut_de_empresa
        to: empresa
      - input: text
        to: persona
  empresa:
    reply: contar_empresa
  persona:
    reply: contar_persona
"""
TEMPLATES = {
    "contar_total": "Tienes {{ total_viajes }} viajes. ¿Tu RUT?",
    "contar_empresa": "Empresa",
    "contar_persona": "Persona",
}
CASES = """\
cases:
  - name: the documented hooks answer
    phone: "56911113333"
    given:
      linked_driver: {rut: "12.345.678-5"}
    steps:
      - send: contar
        reply: {contains: "Tienes 1 viajes"}
      - send: 76.086.428-5
        reply: Empresa
  - name: a person's RUT
    phone: "56911113333"
    given:
      linked_driver: {rut: "12.345.678-5"}
    steps:
      - send: contar
      - send: 12.345.678-5
        reply: Persona
"""


@pytest.fixture
def documented_hooks():
    python = documented("## Conditions and actions: the Python side", "python")
    exec(compile(python, "docs/flows.md", "exec"), {})
    yield
    registry.CONDITIONS.pop("rut_de_empresa", None)
    registry.ACTIONS.pop("contar_viajes", None)


async def test_the_documented_condition_and_action_work(tmp_path, documented_hooks):
    make_project(tmp_path, {"contar": FLOW}, TEMPLATES)
    # The shipped config, for Tracmin's business queries, on these flows.
    (tmp_path / "shipped").mkdir()
    folders = {
        "engine.flows_dir": str(tmp_path / "flows"),
        "engine.templates_dir": str(tmp_path / "message_templates"),
    }
    config = procs.write_config(tmp_path / "shipped", folders)
    write_files(tmp_path, {"casos.yaml": CASES})

    report = await run_files([tmp_path / "casos.yaml"], config)

    assert report.passed, report.text()
