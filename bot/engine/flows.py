"""Flow files: YAML read into frozen specs that the machine compiler uses.

The language is documented in docs/flows.md. This module only reads and
shapes it; `check.py` finds the mistakes a product person can make and
`machine.py` compiles a spec into a `transitions` machine.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engine.source import Lines, decode, line_of, load_yaml
from bot.engine.text import answer_form, command_form
from bot.errors import FlowError

INPUT_KINDS = ("any", "text", "location", "button", "list", "quick_reply", "media")
AUDIENCES = ("anyone", "unlinked", "driver", "admin")
# Inputs that carry an id (`id:` on a transition).
ID_INPUTS = ("button", "list", "quick_reply")

# Words a template reads as Jinja's own, never as a slot's name.
JINJA_WORDS = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in"}
    | {"is", "if", "else", "elif", "for", "recursive", "with", "loop", "self"}
)

# What a flow may be called: it names files and menu ids.
FLOW_NAME = re.compile(r"\w[\w-]*")


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """One way out of a state: what input it takes and where it leads."""

    dest: str
    input: str = "any"
    match: re.Pattern[str] | None = None
    one_of: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    save: str | None = None
    conditions: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class StateSpec:
    """A state: the reply sent on entering it and the inputs it accepts."""

    name: str
    reply: str | None = None
    on: tuple[TransitionSpec, ...] = ()
    always: tuple[TransitionSpec, ...] = ()
    otherwise: str | None = None
    handover: str | None = None

    @property
    def final(self) -> bool:
        """A state with no way out ends the conversation once entered."""
        return not self.on and not self.always


@dataclass(frozen=True, slots=True)
class TimeoutSpec:
    """How long a flow waits for the driver, and what it says when it gives up."""

    seconds: float
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A whole flow file."""

    name: str
    path: Path
    initial: str
    states: dict[str, StateSpec]
    start: tuple[str, ...] = ()
    audience: str = "anyone"
    is_global: bool = False
    fallback: bool = False
    description: str = ""
    command: str | None = None
    # The command's row in a menu (OPCIONES); the command, capitalised, if
    # none (GUIA is typed without its accent, Guía reads better).
    title: str | None = None
    # Start words also start the flow from inside a short sentence
    # ("¿dónde está mi guía?"); see bot.engine.keywords.
    keywords: bool = False
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    timeout: TimeoutSpec | None = None
    migrate: dict[str, str] = field(default_factory=dict)
    migrate_reply: str | None = None
    cancels: bool = False
    # Button, list-row or quick-reply ids that start the flow; `PREFIX:`
    # matches `PREFIX:anything` (a template payload like TRIP_STATUS:VJ-1).
    start_ids: tuple[str, ...] = ()
    # Message types that start the flow by themselves (a `location` pin).
    start_types: tuple[str, ...] = ()
    lines: Lines = field(default_factory=dict, compare=False, repr=False)

    def line(self, at: str) -> int | None:
        """The line of a dotted key path in the flow file (for messages)."""
        return line_of(self.lines, at)


def load_flows(flows_dir: Path) -> dict[str, FlowSpec]:
    """Read every `*.yaml` flow of a folder.

    Raises:
        FlowError: a file is invalid; the message names file and place.
    """
    flows: dict[str, FlowSpec] = {}
    for path in sorted(flows_dir.glob("*.yaml")):
        flow = load_flow(path)
        if flow.name in flows:
            raise FlowError(
                f"{path}: flow name {flow.name!r} is already used by "
                f"{flows[flow.name].path.name}"
            )
        flows[flow.name] = flow
    return flows


def load_flow(path: Path) -> FlowSpec:
    """Read one flow file into a `FlowSpec`."""
    raw_bytes = path.read_bytes()
    data, lines = load_yaml(decode(raw_bytes, path), path)
    if data is None:
        raise FlowError(
            f"{path}:1: the file is empty: a flow needs name:, states: and their keys"
        )
    if not isinstance(data, dict):
        raise FlowError(
            f"{path}:1: a flow file is keys at the left margin (name:, start:, "
            f"states:), not a {'list' if isinstance(data, list) else 'single value'}"
        )

    where = _Where(path, lines)
    states_raw = where.mapping(data, "states")
    states = {
        str(name): _state(where, f"states.{name}", str(name), body)
        for name, body in states_raw.items()
    }
    name = where.text(data, "name")
    if not FLOW_NAME.fullmatch(name):
        # It names files (`tracbot graph --all` wrote `../../x.mmd` outside
        # its folder) and the ids of menu rows.
        raise where.fail(
            "name", f"{name!r}: a flow name is letters, digits, _ and - only"
        )
    initial = where.text(data, "initial", default=next(iter(states), ""))
    if initial not in states:
        raise where.fail("initial", f"unknown state {initial!r}")

    return FlowSpec(
        name=name,
        path=path,
        initial=initial,
        states=states,
        start=tuple(command_form(w) for w in where.words(data, "start")),
        audience=where.choice(data, "audience", AUDIENCES, "anyone"),
        is_global=where.flag(data, "global"),
        fallback=where.flag(data, "fallback"),
        description=str(data.get("description", "")),
        command=data.get("command"),
        title=None if data.get("title") is None else str(data["title"]),
        keywords=where.flag(data, "keywords"),
        version=hashlib.sha256(raw_bytes).hexdigest()[:16],
        extra={k: v for k, v in data.items() if k not in _FLOW_KEYS},
        timeout=_timeout(where, data.get("timeout")),
        migrate={str(k): str(v) for k, v in where.optional_mapping(data, "migrate")},
        migrate_reply=data.get("migrate_reply"),
        cancels=where.flag(data, "cancels"),
        start_ids=tuple(where.words(data, "start_ids")),
        start_types=tuple(where.words(data, "start_types")),
        lines=lines,
    )


_FLOW_KEYS = {
    "name",
    "initial",
    "states",
    "start",
    "audience",
    "global",
    "fallback",
    "description",
    "command",
    "title",
    "timeout",
    "migrate",
    "migrate_reply",
    "cancels",
    "start_ids",
    "start_types",
    "keywords",
}

_UNITS = {"s": 1, "m": 60, "h": 3600}


def _timeout(where: _Where, raw: Any) -> TimeoutSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise where.fail("timeout", "expected a mapping with `after` and `reply`")
    seconds = parse_duration(raw.get("after"))
    if seconds is None:
        raise where.fail("timeout.after", "expected a duration like 90s, 10m or 2h")
    return TimeoutSpec(seconds=seconds, reply=raw.get("reply"))


def parse_duration(raw: Any) -> float | None:
    """Seconds of `90`, `90s`, `10m` or `2h`; None when it is not one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw) if raw > 0 else None
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(raw or ""))
    if found is None or float(found[1]) <= 0:
        return None
    return float(found[1]) * _UNITS[found[2] or "s"]


def _state(where: _Where, at: str, name: str, body: Any) -> StateSpec:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        if name in ("reply", "on", "always", "otherwise", "handover"):
            # `inicio:` left empty and its keys one level too far left.
            raise where.fail(
                at,
                f"{name!r} is read as a state of its own, not as a key of the "
                "state above it: indent it under that state",
            )
        raise where.fail(
            at,
            f"state {name!r} must be a mapping of its keys (reply, on, always, "
            f"otherwise, handover), not {body!r}",
        )
    return StateSpec(
        name=name,
        reply=body.get("reply"),
        on=tuple(
            _transition(where, f"{at}.on[{i}]", item)
            for i, item in enumerate(_transitions(where, at, body, "on"))
        ),
        always=tuple(
            _transition(where, f"{at}.always[{i}]", item)
            for i, item in enumerate(_transitions(where, at, body, "always"))
        ),
        otherwise=body.get("otherwise"),
        handover=body.get("handover"),
    )


def _transitions(where: _Where, at: str, body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key) or []
    if not isinstance(value, list):
        # Reported at the state's own line: it was the file's `name:` line.
        raise where.fail(
            f"{at}.{key}",
            "expected a list of transitions, each starting with `- ` "
            "(for example `- input: text`, then `to: …` under it)",
        )
    return value


def _transition(where: _Where, at: str, body: Any) -> TransitionSpec:
    if not isinstance(body, dict):
        raise where.fail(at, "a transition must be a mapping")
    dest = body.get("to")
    if not isinstance(dest, str) or not dest:
        shown = "" if dest is None else f", not {dest!r}"
        raise where.fail(
            f"{at}.to", f"every transition needs `to:` and the name of a state{shown}"
        )

    pattern = body.get("match")
    if pattern is not None and not isinstance(pattern, str):
        # `match: 5` stopped the checker with a TypeError naming no file.
        raise where.fail(
            f"{at}.match",
            f"expected a pattern in quotes, like match: '^\\d+$', not {pattern!r}",
        )
    try:
        match = re.compile(pattern, re.IGNORECASE) if pattern else None
    except re.error as exc:
        raise where.fail(f"{at}.match", f"invalid pattern: {exc}") from exc

    kind = where.choice(body, "input", INPUT_KINDS, "any", at=at)
    one_of = tuple(answer_form(w) for w in where.words(body, "one_of", at))
    if "one_of" in body and (not one_of or "" in one_of):
        # `one_of: []` took every text; `one_of: ['']` none.
        raise where.fail(
            f"{at}.one_of",
            "an empty list or word: list the words the driver may answer, or "
            "leave one_of out to take any text",
        )
    ids = tuple(str(i) for i in where.words(body, "id", at))
    if ids and kind not in ID_INPUTS:
        # A text has no id: the transition took every text, unsaid.
        raise where.fail(
            f"{at}.id",
            f"an id is what a tap sends: it needs input: {' or '.join(ID_INPUTS)}, "
            f"not {kind} (a typed answer is matched with one_of)",
        )

    return TransitionSpec(
        dest=dest,
        input=kind,
        match=match,
        one_of=one_of,
        ids=ids,
        save=_slot_name(where, f"{at}.save", body.get("save")),
        conditions=tuple(where.words(body, "if", at)),
        unless=tuple(where.words(body, "unless", at)),
        actions=tuple(where.words(body, "do", at)),
        reply=body.get("reply"),
    )


def _slot_name(where: _Where, at: str, name: Any) -> str | None:
    """The slot a transition saves the input in: a name templates can print.

    `save: turno-dia` was taken, and `{{ turno-dia }}` reads as a
    subtraction; `save: 5` or `save: [a, b]` stopped the checker with a
    TypeError that named no file.
    """
    if name is None:
        return None
    if isinstance(name, str) and name in JINJA_WORDS:
        # `{{ none }}` is Jinja's None, `{{ not }}` a syntax error.
        raise where.fail(
            at,
            f"{name!r} cannot be a slot name: templates read it as Jinja's own "
            "word; pick another",
        )
    if not isinstance(name, str) or not name.isidentifier():
        raise where.fail(
            at,
            f"{name!r} cannot be a slot name: use letters, digits and _ "
            "(not first a digit), like save: turno_dia, so that a template "
            "can print it as {{ turno_dia }}",
        )
    return name


class _Where:
    """Typed reads from a flow mapping, with errors naming file and key."""

    def __init__(self, path: Path, lines: Lines | None = None) -> None:
        self.path = path
        self.lines = lines or {}

    def fail(self, key: str, rule: str) -> FlowError:
        line = line_of(self.lines, key)
        place = f"{self.path}:{line}" if line else str(self.path)
        return FlowError(f"{place}: {key}: {rule}")

    def optional_mapping(self, data: dict[str, Any], key: str) -> list[Any]:
        value = data.get(key) or {}
        if not isinstance(value, dict):
            raise self.fail(key, "expected a mapping")
        return list(value.items())

    def text(self, data: dict[str, Any], key: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected a non-empty text")
        return value

    def mapping(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key)
        if not isinstance(value, dict) or not value:
            raise self.fail(key, "expected a mapping with at least one entry")
        return value

    def words(self, data: dict[str, Any], key: str, at: str = "") -> list[str]:
        """A word or a list of words; `at` is the path of `data` in the file
        (a transition's `one_of` was reported at the flow's `name:` line)."""
        place = f"{at}.{key}" if at else key
        value = data.get(key)
        if value is None:
            return []
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = [value]  # `start: 0` was no word at all
        if not isinstance(value, list):
            raise self.fail(place, "expected a word or a list of words")
        for item in value:
            # `null` and `true` became the words "None" and "True": a driver
            # typing them started the flow; 1.5 is no command word.
            if isinstance(item, bool) or not isinstance(item, str | int):
                shown = "an empty entry (~ or null)" if item is None else repr(item)
                raise self.fail(
                    place, f"expected a word or a list of words; {shown} is not a word"
                )
        return [str(v) for v in value]

    def flag(self, data: dict[str, Any], key: str) -> bool:
        value = data.get(key)
        if value is None:
            return False  # `keywords:` left empty
        if not isinstance(value, bool):
            # `keywords: 'false'` (a text) was true.
            raise self.fail(key, f"expected true or false, not {value!r}")
        return value

    def choice(
        self,
        data: dict[str, Any],
        key: str,
        allowed: tuple[str, ...],
        default: str,
        at: str = "",
    ) -> str:
        value = data.get(key, default)
        if value not in allowed:
            place = f"{at}.{key}" if at else key
            raise self.fail(place, f"expected one of {', '.join(allowed)}")
        return value
