"""The conversation-test runner itself: its format, failures and coverage."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine.convtest import GIVEN, given, load_cases, run_files
from bot.engine.harness import build_message
from bot.errors import FlowError
from tests.engine.project import make_project, write_files
from tests.support import ROOT

FLOW = """
name: sino
start: [pregunta]
states:
  preguntar:
    reply: sino_preguntar
    on:
      - {input: text, one_of: [si, sí], to: si}
      - {input: text, one_of: ["no"], to: "no"}
  si:
    reply: sino_si
  "no":
    reply: sino_no
"""
TEMPLATES = {"sino_preguntar": "¿Sí o no?", "sino_si": "Bien", "sino_no": "Mal"}


def project(tmp_path: Path, cases: str) -> tuple[Path, Path]:
    config = make_project(tmp_path, {"sino": FLOW}, TEMPLATES)
    write_files(tmp_path, {"casos.yaml": cases})
    return config, tmp_path / "casos.yaml"


async def test_passing_case_and_coverage_report(tmp_path):
    config, cases = project(
        tmp_path,
        """
        cases:
          - name: dice que sí
            steps:
              - send: pregunta
                reply: ¿Sí o no?
                flow: sino
                state: preguntar
              - send: SÍ
                replies: [{exact: Bien}]
                state: null
        """,
    )
    report = await run_files([cases], config)
    assert report.passed, report.text()
    assert "sino.no" in report.not_entered and "sino.si" not in report.not_entered
    assert report.not_taken == ["sino.preguntar.on[1]"]
    assert "transitions no case took: sino.preguntar.on[1]" in report.text()
    # A flow no case entered is named once, not state by state.
    assert "ayuda" in report.not_entered
    assert not [n for n in report.not_entered if n.startswith("ayuda.")]
    assert not [n for n in report.not_taken if n.startswith("ayuda.")]


async def test_a_flow_or_state_no_flow_has_is_named_as_the_tests_slip(tmp_path):
    config, cases = project(
        tmp_path,
        """
        cases:
          - name: erratas
            steps:
              - send: pregunta
                flow: sinno
                state: preguntr
              - send: si
                state: null
        """,
    )
    report = await run_files([cases], config)
    [result] = report.results
    assert result.failures == [
        "step 1 (line 4): there is no flow 'sinno' (did you mean 'sino'?)",
        "step 1 (line 4): no flow has a state 'preguntr' (did you mean 'preguntar'?)",
    ]


async def test_failing_expectations_are_each_reported(tmp_path):
    config, cases = project(
        tmp_path,
        """
        cases:
          - name: espera otra cosa
            steps:
              - send: pregunta
                reply: {contains: [Sí, tal vez], matches: "^¿"}
                state: si
                flow: null
                slots: {respuesta: si}
        """,
    )
    report = await run_files([cases], config)
    assert not report.passed
    failures = report.results[0].failures
    assert any("does not contain 'tal vez'" in f for f in failures)
    assert any("state is 'preguntar', expected 'si'" in f for f in failures)
    assert any("flow is 'sino', expected null" in f for f in failures)
    assert any("slot 'respuesta' is not set" in f for f in failures)
    assert all(f.startswith("step 1 (line 4)") for f in failures)
    assert "FAIL" in report.text()


async def test_reply_count_mismatch(tmp_path):
    config, cases = project(
        tmp_path,
        "cases:\n  - name: x\n    steps:\n      - send: pregunta\n"
        "        no_reply: true\n",
    )
    report = await run_files([cases], config)
    assert report.results[0].failures == [
        "step 1 (line 4): 1 replies ('¿Sí o no?'), expected 0"
    ]


async def test_given_hooks_run_before_the_steps(tmp_path):
    seen = []

    @given("marca_de_prueba")
    def mark(runtime, value, phone):
        seen.append((value, phone, runtime.store is not None))

    try:
        config, cases = project(
            tmp_path,
            """
            cases:
              - name: con datos
                phone: "56911120099"
                given: {marca_de_prueba: 7}
                steps:
                  - send: pregunta
            """,
        )
        report = await run_files([cases], config)
        assert report.passed and seen == [(7, "56911120099", True)]
    finally:
        GIVEN.pop("marca_de_prueba")


def test_bad_test_files_name_the_line(tmp_path):
    write_files(tmp_path, {"a.yaml": "cases:\n  - name: x\n    stpes: []\n"})
    with pytest.raises(FlowError, match=r"a.yaml:2: a case needs"):
        load_cases(tmp_path / "a.yaml")
    write_files(
        tmp_path,
        {
            "b.yaml": "cases:\n  - name: x\n    steps:\n      - send: hola\n"
            "        rely: hola\n"
        },
    )
    with pytest.raises(FlowError, match=r"b.yaml:5: unknown key 'rely'"):
        load_cases(tmp_path / "b.yaml")


def test_a_misspelt_or_empty_reply_matcher_names_the_line(tmp_path):
    # Either checked nothing, so its case passed whatever the bot said.
    step = "cases:\n  - name: x\n    steps:\n      - send: hola\n"
    write_files(
        tmp_path,
        {
            "c.yaml": step + "        reply: {contians: zzz}\n",
            "d.yaml": step + "        replies:\n          - ok\n"
            "          - {exact: a, exactt: b}\n",
            "e.yaml": step + "        reply: {}\n",
        },
    )
    with pytest.raises(FlowError, match=r"c.yaml:5: unknown key 'contians'"):
        load_cases(tmp_path / "c.yaml")
    with pytest.raises(FlowError, match=r"d.yaml:7: unknown key 'exactt'"):
        load_cases(tmp_path / "d.yaml")
    with pytest.raises(FlowError, match=r"e.yaml:5: an empty reply matcher"):
        load_cases(tmp_path / "e.yaml")
    for empty in ("{contains: []}", '{contains: ""}', '{matches: ""}'):
        write_files(tmp_path, {"f.yaml": step + f"        reply: {empty}\n"})
        with pytest.raises(FlowError, match=r"f.yaml:5: an empty `\w+` checks"):
            load_cases(tmp_path / "f.yaml")


def test_a_case_without_steps_or_with_a_broken_regex_names_the_line(tmp_path):
    # `steps: []` passed, having checked nothing; a `matches:` that is no
    # regular expression failed its case as "error: error: missing )".
    step = "cases:\n  - name: x\n    steps:\n      - send: hola\n"
    write_files(
        tmp_path,
        {
            "g.yaml": "cases:\n  - name: x\n    steps: []\n",
            "h.yaml": step + '        reply: {matches: "(abc"}\n',
        },
    )
    with pytest.raises(FlowError, match=r"g.yaml:2: a case needs at least one step"):
        load_cases(tmp_path / "g.yaml")
    with pytest.raises(FlowError, match=r"h.yaml:5: `matches` is not a regular"):
        load_cases(tmp_path / "h.yaml")


@pytest.mark.parametrize(
    ("step", "said"),
    [
        # It failed only when the case ran: "error: ValueError: send needs
        # exactly one of …", naming neither the key nor the line.
        ("send: {buton: dia}", "4: send: unknown key 'buton' ("),
        ("send: {foo: 1}", "4: send: unknown key 'foo' ("),
        ("send: {media: gif}", "4: media must be one of"),
        ("send: {text: a, location: {latitude: 1, longitude: 2}}", "4: send needs"),
        # "error: ValueError: cannot send ['hola']" when the case ran.
        ("send: [hola]", "4: send: a text, or a mapping such as {button: si}"),
        # "a step needs send:" for a step that has it.
        ("{send: hola, expire: true}", "4: a step has `send:` or `expire: true`"),
        # "a step needs send:", naming nothing.
        ("sned: hola", "4: unknown key 'sned' ("),
    ],
)
def test_a_step_that_cannot_be_sent_is_refused_with_its_line(tmp_path, step, said):
    path = tmp_path / "c.yaml"
    path.write_text(f"cases:\n  - name: raro\n    steps:\n      - {step}\n")
    with pytest.raises(FlowError) as refused:
        load_cases(path)
    assert str(refused.value).startswith(f"{path}:{said}")
    if "buton" in step:
        assert str(refused.value).endswith("(did you mean 'button'?)")
    if "sned" in step:
        assert str(refused.value).endswith("(did you mean 'send'?)")


async def test_a_given_hook_that_raises_names_the_case(tmp_path):
    @given("falla_de_prueba")
    def broken(runtime, value, phone):
        raise KeyError("rut")

    try:
        config, cases = project(
            tmp_path,
            "cases:\n  - name: x\n    given: {falla_de_prueba: 1}\n"
            "    steps:\n      - send: pregunta\n",
        )
        report = await run_files([cases], config)
        # The case fails with the reason; the file's other cases still run.
        [result] = report.results
        assert result.failures == ["`given` 'falla_de_prueba' failed: KeyError: 'rut'"]
        assert "casos.yaml:2 x" in report.text()
    finally:
        GIVEN.pop("falla_de_prueba")


def test_an_unknown_given_is_reported_with_the_file_s_mistakes(tmp_path):
    cases = tmp_path / "casos.yaml"
    cases.write_text(
        "cases:\n  - name: x\n    given: {linked_drivr: 1}\n"
        "    steps:\n      - send: hola\n",
        encoding="utf-8",
    )
    with pytest.raises(FlowError, match=r"unknown `given` 'linked_drivr' \(linked_"):
        load_cases(cases)


def test_missing_test_file_is_a_flow_error(tmp_path):
    with pytest.raises(FlowError, match=r"nope.yaml: no such file"):
        load_cases(tmp_path / "nope.yaml")


def test_a_case_phone_is_read_as_its_digits(tmp_path):
    # "+56 9 1111 2222" ran as another, unlinked number.
    write_files(
        tmp_path,
        {
            "p.yaml": 'cases:\n  - name: x\n    phone: "+56 9 1111 2222"\n'
            "    steps:\n      - send: hola\n",
            "q.yaml": "cases:\n  - name: x\n    phone: rodrigo\n"
            "    steps:\n      - send: hola\n",
        },
    )
    [case] = load_cases(tmp_path / "p.yaml")
    assert case.phone == "56911112222"
    with pytest.raises(FlowError, match=r"q.yaml:2: phone 'rodrigo' is not"):
        load_cases(tmp_path / "q.yaml")


def test_a_quick_reply_step_takes_its_label_as_documented():
    # docs/flows.md's `send: {quick_reply: VER_VIAJE, text: "Ver viaje"}`
    # failed: `text` was read as a second message.
    message = build_message("56911112222", {"quick_reply": "VER", "text": "Ver"}, "w1")
    assert message["type"] == "button"
    assert message["button"] == {"payload": "VER", "text": "Ver"}
    with pytest.raises(ValueError, match="exactly one"):
        build_message("56911112222", {"button": "si", "text": "hola"}, "w2")


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ('{rut: "12.345.678-0"}', "not a valid RUT: the check digit does not"),
        ('{rut: "11.111.111-1"}', "no driver with RUT 11.111.111-1"),
        # Rodrigo's own number is on file: his account has a number already.
        ('{rut: "9.876.543-3"}', "has another number"),
        ('"12.345.678-5"', "expected a mapping like {rut:"),
    ],
)
async def test_linked_driver_says_why_it_cannot_link(tmp_path, value, said):
    cases = tmp_path / "casos.yaml"
    cases.write_text(
        "cases:\n  - name: x\n    phone: '56911113333'\n"
        f"    given: {{linked_driver: {value}}}\n"
        "    steps:\n      - send: estado\n",
        encoding="utf-8",
    )
    report = await run_files([cases], ROOT / "config.yaml")
    [result] = report.results
    assert len(result.failures) == 1 and said in result.failures[0]


def test_every_case_with_a_mistake_is_reported_at_once(tmp_path):
    # A tester had to run four times to see four mistakes.
    cases = tmp_path / "casos.yaml"
    cases.write_text(
        "cases:\n  - name: a\n    steps:\n      - reply: x\n  - name: b\n"
        "  - name: c\n    steps:\n      - send: hola\n        contians: x\n",
        encoding="utf-8",
    )
    with pytest.raises(FlowError) as raised:
        load_cases(cases)
    assert str(raised.value).splitlines() == [
        f"{cases}:4: a step needs `send:` (or `expire: true`)",
        f"{cases}:5: a case needs `name` and a `steps:` list",
        f"{cases}:9: unknown key 'contians' (expire, flow, no_reply, replies, reply,"
        " send, slots, state)",
    ]


async def test_expire_on_a_flow_without_a_timeout_says_why(tmp_path):
    # "error: AssertionError: the conversation has no deadline to expire".
    config, cases = project(
        tmp_path,
        """
        cases:
          - name: nada que expirar
            steps:
              - send: pregunta
              - expire: true
        """,
    )
    report = await run_files([cases], config)
    [failure] = report.results[0].failures
    assert "flow 'sino' has no `timeout:`" in failure


def test_a_location_step_needs_numbers_for_its_coordinates():
    # `send: {location: {latitude: abc}}` was sent as it was.
    with pytest.raises(ValueError, match="a number for latitude"):
        build_message("56911112222", {"location": {"latitude": "abc"}}, "w1")
    with pytest.raises(ValueError, match="a number for longitude"):
        build_message("56911112222", {"location": {"latitude": 1.5}}, "w2")
    pin = {"location": {"latitude": 999, "longitude": -70.4}}  # out of range: fair
    assert build_message("56911112222", pin, "w3")["location"]["latitude"] == 999
