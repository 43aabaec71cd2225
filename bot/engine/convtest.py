"""Conversation tests: YAML cases of what a driver sends and the bot answers.

A file holds `cases`; each case sends messages through a whole tracbot
(`harness.Harness`: signed webhooks in, simulator out) and checks each
step's replies, the resulting flow and state, and slots. The format is
described at the top of docs/flows.md. `run_files` runs them and reports
the states and transitions that no case went through; `tracbot test` and
pytest (tests/engine/test_conversations.py) both call it.

A case may set up data first with `given:`; each key names a setup hook
registered with `@given("key")` (an async or plain function of the
running `Runtime`, the key's value and the case's phone).
"""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.app import Runtime
from bot.engine import machine
from bot.engine.engine import Engine
from bot.engine.flows import FlowSpec
from bot.engine.harness import (
    SEND_EXTRAS,
    SEND_KINDS,
    Harness,
    build_message,
    demo_settings,
)
from bot.engine.source import load_yaml, read_text
from bot.engine.text import did_you_mean
from bot.errors import FlowError

DEFAULT_PHONE = "56911112222"
NONE_WORDS = (None, "none", "null", "~")

Setup = Callable[[Runtime, Any, str], Awaitable[None] | None]
GIVEN: dict[str, Setup] = {}


def given(name: str) -> Callable[[Setup], Setup]:
    """Register a setup hook that a case's `given: {name: ...}` runs."""

    def decorate(fn: Setup) -> Setup:
        GIVEN[name] = fn
        return fn

    return decorate


@dataclass(frozen=True, slots=True)
class Step:
    line: int
    send: Any = None
    expire: bool = False
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    path: Path
    line: int
    phone: str
    name_of_driver: str
    given: dict[str, Any]
    steps: tuple[Step, ...]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(slots=True)
class Result:
    case: Case
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class Report:
    results: list[Result]
    not_entered: list[str]
    not_taken: list[str]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def text(self) -> str:
        """The report `tracbot test` prints."""
        lines = []
        for result in self.results:
            mark = "ok  " if result.passed else "FAIL"
            lines.append(f"{mark} {result.case.where} {result.case.name}")
            lines += [f"     {failure}" for failure in result.failures]
        passed = sum(r.passed for r in self.results)
        lines.append(f"\n{passed} of {len(self.results)} cases passed")
        if self.not_entered:
            lines.append("not entered by any case: " + ", ".join(self.not_entered))
        if self.not_taken:
            lines.append("transitions no case took: " + ", ".join(self.not_taken))
        return "\n".join(lines)


# Reading cases


STEP_KEYS = {"send", "expire", "reply", "replies", "no_reply", "flow", "state"}
STEP_KEYS |= {"slots"}
CASE_KEYS = {"name", "phone", "profile_name", "given", "steps"}
REPLY_KEYS = {"exact", "contains", "matches", "buttons", "rows"}


def load_cases(path: Path) -> list[Case]:
    """Read the cases of one conversation-test file.

    Raises:
        FlowError: the file is not a valid test file; the message has the line.
    """
    try:
        text = read_text(path)
    except FileNotFoundError as exc:
        raise FlowError(f"{path}: no such file") from exc
    except OSError as exc:
        raise FlowError(f"{path}: cannot read the file: {exc}") from exc
    data, lines = load_yaml(text, path)
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise FlowError(f"{path}:1: a test file needs a `cases:` list")
    # Every case's first mistake at once, not one a run.
    cases, problems = [], []
    for i, raw in enumerate(data["cases"]):
        try:
            cases.append(_case(path, lines, f"cases[{i}]", raw))
        except FlowError as exc:
            problems.append(str(exc))
    if problems:
        raise FlowError("\n".join(problems))
    return cases


def _case(path: Path, lines: dict[str, int], at: str, raw: Any) -> Case:
    line = lines.get(at, 1)
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list):
        raise FlowError(f"{path}:{line}: a case needs `name` and a `steps:` list")
    if not raw["steps"]:
        # It passed, having checked nothing.
        raise FlowError(f"{path}:{line}: a case needs at least one step")
    if "driver_name" in raw:
        # It set the WhatsApp profile name (`name`), while templates read
        # `driver_name` as the linked driver's: "Camila" there changed
        # nothing a reply with {{ driver_name }} showed.
        place = lines.get(f"{at}.driver_name", line)
        raise FlowError(
            f"{path}:{place}: `driver_name` is now `profile_name`: the "
            "WhatsApp profile name the case writes with ({{ name }}); a "
            "driver's name ({{ driver_name }}) comes from the business data"
        )
    _known(path, lines, at, raw, CASE_KEYS)
    steps = []
    for i, step in enumerate(raw["steps"]):
        step_at = f"{at}.steps[{i}]"
        # Unknown keys first: `sned:` was "a step needs send:", naming
        # nothing.
        if isinstance(step, dict):
            _known(path, lines, step_at, step, STEP_KEYS)
        if isinstance(step, dict) and "send" in step and step.get("expire"):
            raise FlowError(
                f"{path}:{lines.get(step_at, line)}: a step has `send:` or "
                "`expire: true`, not both"
            )
        if not isinstance(step, dict) or ("send" in step) == bool(step.get("expire")):
            raise FlowError(
                f"{path}:{lines.get(step_at, line)}: a step needs `send:` "
                "(or `expire: true`)"
            )
        _sendable(path, lines, step_at, step)
        _replies_known(path, lines, step_at, step)
        expect = {k: v for k, v in step.items() if k not in ("send", "expire")}
        steps.append(
            Step(
                lines.get(step_at, line),
                step.get("send"),
                bool(step.get("expire")),
                expect,
            )
        )
    given_raw = raw.get("given") or {}
    if not isinstance(given_raw, dict):
        raise FlowError(f"{path}:{line}: `given` is a mapping of set-up hooks")
    for key in given_raw:
        if key not in GIVEN:
            known = ", ".join(sorted(GIVEN)) or "none registered"
            place = lines.get(f"{at}.given.{key}", line)
            raise FlowError(f"{path}:{place}: unknown `given` {key!r} ({known})")
    return Case(
        name=str(raw.get("name") or f"case {at}"),
        path=path,
        line=line,
        phone=_phone(path, line, raw.get("phone", DEFAULT_PHONE)),
        name_of_driver=str(raw.get("profile_name", "Conductor")),
        given=dict(given_raw),
        steps=tuple(steps),
    )


def _phone(path: Path, line: int, raw: Any) -> str:
    # "+56 9 1111 2222" as README and chat write it: Meta's wa_id is the
    # digits alone, and with the + kept the case ran as another number.
    digits = re.sub(r"[\s+\-().]", "", str(raw))
    if not digits.isdigit():
        raise FlowError(f"{path}:{line}: phone {raw!r} is not a phone number")
    return digits


def _known(path: Path, lines: dict, at: str, raw: dict, keys: set[str]) -> None:
    unknown = sorted(set(map(str, raw)) - keys)
    if unknown:
        line = lines.get(f"{at}.{unknown[0]}", lines.get(at, 1))
        allowed = ", ".join(sorted(keys))
        raise FlowError(
            f"{path}:{line}: unknown key {unknown[0]!r} ({allowed})"
            + did_you_mean(unknown[0], keys)
        )


def _sendable(path: Path, lines: dict, at: str, step: dict) -> None:
    # `send: {buton: dia}` failed only when its case ran, as "error:
    # ValueError: send needs exactly one of …".
    if "send" not in step:
        return  # an `expire: true` step
    what = step["send"]
    line = lines.get(f"{at}.send", lines.get(at, 1))
    if not isinstance(what, dict):
        if isinstance(what, str | int | float) and not isinstance(what, bool):
            return
        # `send: [hola]` failed when its case ran: "cannot send ['hola']".
        raise FlowError(
            f"{path}:{line}: send: a text, or a mapping such as "
            f"{{button: si}}; not {what!r}"
        )
    known = set(SEND_KINDS) | SEND_EXTRAS
    unknown = sorted(set(map(str, what)) - known)
    if unknown:
        allowed = ", ".join(sorted(known))
        message = f"send: unknown key {unknown[0]!r} ({allowed})"
        raise FlowError(f"{path}:{line}: {message}" + did_you_mean(unknown[0], known))
    try:
        build_message("0", what, "wamid.check")
    except ValueError as exc:
        raise FlowError(f"{path}:{line}: {exc}") from None


def _replies_known(path: Path, lines: dict, at: str, step: dict) -> None:
    # A misspelt matcher (`contians:`) would check nothing and pass.
    wanted = [(f"{at}.reply", step["reply"])] if "reply" in step else []
    if isinstance(step.get("replies"), list):
        wanted += [(f"{at}.replies[{i}]", w) for i, w in enumerate(step["replies"])]
    for where, want in wanted:
        if not isinstance(want, dict):
            continue  # a text is an exact match
        if not want:
            raise FlowError(
                f"{path}:{lines.get(where, 1)}: an empty reply matcher checks "
                f"nothing (use {', '.join(sorted(REPLY_KEYS))})"
            )
        _known(path, lines, where, want, REPLY_KEYS)
        for key in ("contains", "matches"):
            parts = _as_list(want.get(key, ["x"]))
            line = lines.get(f"{where}.{key}", lines.get(where, 1))
            if not parts or any(str(p) == "" for p in parts):
                raise FlowError(f"{path}:{line}: an empty `{key}` checks nothing")
        if "matches" in want:
            try:
                re.compile(str(want["matches"]))
            except re.error as exc:
                # Reported as the case's failure, "error: error: missing )".
                raise FlowError(
                    f"{path}:{line}: `matches` is not a regular expression: {exc}"
                ) from None


# Running cases


async def run_files(
    paths: Iterable[Path], config: str | Path = "config.yaml"
) -> Report:
    """Run every case of the files, each in a fresh tracbot; report coverage."""
    cases = [case for path in sorted(paths) for case in load_cases(path)]
    trace: list[tuple[str, str]] = []
    results = []
    flows: dict[str, FlowSpec] = {}
    for case in cases:
        result, engine = await run_case(case, config, trace)
        flows = {name: f.spec for name, f in engine.flows.items()}
        results.append(result)
    not_entered, not_taken = _uncovered(flows, set(trace))
    return Report(results, not_entered, not_taken)


async def run_case(
    case: Case,
    config: str | Path = "config.yaml",
    trace: list[tuple[str, str]] | None = None,
) -> tuple[Result, Engine]:
    """Run one case in its own tracbot, on its own SQLite file."""
    result = Result(case)
    with tempfile.TemporaryDirectory(prefix="tracbot-convtest-") as tmp:
        settings = demo_settings(config, Path(tmp))
        engine = Engine.from_dirs(
            settings.engine.flows_dir, settings.engine.templates_dir
        )
        # The dispatcher's tasks start inside the harness and inherit this
        # context, so the states they enter land in `trace`.
        token = machine.TRACE.set(trace if trace is not None else [])
        try:
            result.failures = _unknown_names(case, engine)
            if result.failures:
                return result, engine
            async with Harness(settings, engine) as harness:
                result.failures = await _setup(case, harness)
                if result.failures:
                    # This case cannot run; the others of the file still do.
                    return result, engine
                for number, step in enumerate(case.steps, start=1):
                    failures = await _run_step_or_error(harness, case, step)
                    result.failures += [
                        f"step {number} (line {step.line}): {f}" for f in failures
                    ]
                    if failures:
                        break
        finally:
            machine.TRACE.reset(token)
    return result, engine


def _unknown_names(case: Case, engine: Engine) -> list[str]:
    # `state: viajess` read "state is 'viajes', expected 'viajess'", as if
    # the bot were wrong; a name no flow has is the test's own slip.
    states = {state for f in engine.flows.values() for state in f.spec.states}
    failures = []
    for number, step in enumerate(case.steps, start=1):
        for key, known in (("flow", set(engine.flows)), ("state", states)):
            want = step.expect.get(key, None)
            if key in step.expect and want not in NONE_WORDS and want not in known:
                what = f"there is no flow {want!r}"
                if key == "state":
                    what = f"no flow has a state {want!r}"
                failures.append(
                    f"step {number} (line {step.line}): {what}"
                    + did_you_mean(str(want), known)
                )
    return failures


async def _setup(case: Case, harness: Harness) -> list[str]:
    """Run the case's `given` hooks; what failed, as the case's failures."""
    for key, value in case.given.items():
        try:
            done = GIVEN[key](harness.runtime, value, case.phone)
            if inspect.isawaitable(done):
                await done
        except Exception as exc:
            return [f"`given` {key!r} failed: {type(exc).__name__}: {exc}"]
    return []


async def _run_step_or_error(harness: Harness, case: Case, step: Step) -> list[str]:
    try:
        return await _run_step(harness, case, step)
    except Exception as exc:
        # A step the harness cannot play (`send: {foo: 1}`) fails its case
        # with the reason; it does not stop the other cases.
        return [f"error: {type(exc).__name__}: {exc}"]


async def _run_step(harness: Harness, case: Case, step: Step) -> list[str]:
    if step.expire:
        bodies = await harness.expire(case.phone)
    else:
        bodies = await harness.send(case.phone, step.send, case.name_of_driver)
    failures = check_replies(step.expect, bodies)
    conversation = await harness.conversation(case.phone)
    flow = conversation.flow if conversation else None
    state = conversation.state if conversation else None
    slots = conversation.slots if conversation else {}

    if "flow" in step.expect and not _same(step.expect["flow"], flow):
        failures.append(
            f"flow is {_shown(flow)}, expected {_shown(step.expect['flow'])}"
        )
    if "state" in step.expect and not _same(step.expect["state"], state):
        failures.append(
            f"state is {_shown(state)}, expected {_shown(step.expect['state'])}"
        )
    for key, want in (step.expect.get("slots") or {}).items():
        if key not in slots:
            failures.append(f"slot {key!r} is not set, expected {want!r}")
        elif slots[key] != want:
            failures.append(f"slot {key!r} is {slots[key]!r}, expected {want!r}")
    return failures


def _shown(value: Any) -> str:
    # As the test file writes it: `null`, not Python's None.
    return "null" if value is None else repr(value)


def _same(expected: Any, actual: str | None) -> bool:
    if expected in NONE_WORDS:
        return actual is None
    return str(expected) == actual


# Checking replies


def check_replies(expect: dict[str, Any], bodies: list[dict]) -> list[str]:
    """Compare the bodies sent with a step's `reply`/`replies`/`no_reply`."""
    if expect.get("no_reply"):
        wanted: list[Any] | None = []
    elif "reply" in expect:
        wanted = [expect["reply"]]
    elif "replies" in expect:
        wanted = list(expect["replies"] or [])
    else:
        return []

    got = [_readable(body) for body in bodies]
    if len(got) != len(wanted):
        shown = "; ".join(repr(g["text"][:60]) for g in got) or "nothing"
        return [f"{len(got)} replies ({shown}), expected {len(wanted)}"]
    failures = []
    for number, (want, reply) in enumerate(zip(wanted, got, strict=True), start=1):
        failures += [f"reply {number}: {f}" for f in _check_one(want, reply)]
    return failures


def _readable(body: dict) -> dict[str, Any]:
    """The text, button titles and list rows a driver would see."""
    kind = body.get("type")
    if kind == "text":
        return {"text": body["text"]["body"], "buttons": [], "rows": []}
    if kind == "interactive":
        interactive = body.get("interactive", {})
        action = interactive.get("action", {})
        buttons = [b["reply"]["title"] for b in action.get("buttons", [])]
        rows = [
            row["title"]
            for section in action.get("sections", [])
            for row in section.get("rows", [])
        ]
        text = interactive.get("body", {}).get("text", "")
        return {"text": text, "buttons": buttons, "rows": rows}
    if kind == "template":
        name = body.get("template", {}).get("name", "")
        return {"text": f"(template {name})", "buttons": [], "rows": []}
    return {"text": f"({kind})", "buttons": [], "rows": []}


def _check_one(want: Any, reply: dict[str, Any]) -> list[str]:
    text = reply["text"]
    if isinstance(want, str):
        want = {"exact": want}
    if not isinstance(want, dict):
        return [f"cannot compare with {want!r}"]
    failures = []
    if "exact" in want and text != str(want["exact"]).strip():
        failures.append(f"text is {text!r}, expected {want['exact']!r}")
    if "contains" in want:
        for part in _as_list(want["contains"]):
            if str(part) not in text:
                failures.append(f"text {text!r} does not contain {part!r}")
    if "matches" in want and not re.search(str(want["matches"]), text, re.S):
        failures.append(f"text {text!r} does not match {want['matches']!r}")
    for key in ("buttons", "rows"):
        if key in want and list(map(str, want[key])) != reply[key]:
            failures.append(f"{key} are {reply[key]!r}, expected {want[key]!r}")
    return failures


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# Coverage


def _uncovered(
    flows: dict[str, FlowSpec], seen: set[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    # A flow no case entered is named once, not state by state: `tracbot
    # test estado.yaml` listed every state of every other flow.
    entered = {name for name, _ in seen}
    not_entered = [name for name in sorted(flows) if name not in entered]
    not_taken: list[str] = []
    for name, spec in sorted(flows.items()):
        if name not in entered:
            continue
        for state in spec.states.values():
            if (name, state.name) not in seen:
                not_entered.append(f"{name}.{state.name}")
            for kind, items in (("on", state.on), ("always", state.always)):
                for i in range(len(items)):
                    label = machine.transition_label(state.name, kind, i)
                    if (name, label) not in seen:
                        not_taken.append(f"{name}.{label}")
    return not_entered, not_taken


# Tracmin's own hooks register themselves on import (`linked_driver`).
from bot.engine import givens  # noqa: E402, F401
