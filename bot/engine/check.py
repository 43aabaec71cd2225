"""`tracbot check`: every mistake in the flows and templates, with its line.

Loading a flow stops at its first structural error; this module goes on and
reports everything it can find, one `file:line: what is wrong` each: YAML
errors, unknown keys, states, flows, conditions, actions and templates,
template syntax errors and sandbox escapes, states no path reaches or that
lead nowhere, `always`/handover loops that wait for no input, template
variables a state cannot provide, and replies over WhatsApp's limits.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
from jinja2 import meta, nodes

from bot.api.notifications import OPTIONAL_VALUES, TEMPLATE_VALUES
from bot.engine import audience, registry

# Also registers the conditions and actions.
from bot.engine.engine import UNAVAILABLE, UNAVAILABLE_VALUES, Engine
from bot.engine.flows import _FLOW_KEYS, FlowSpec, StateSpec, load_flow
from bot.engine.guards import TooBig, WholeValueError
from bot.engine.replies import (
    Renderer,
    make_environment,
    template_file,
    template_line,
)
from bot.engine.routes import StartWords
from bot.engine.source import line_of, load_yaml, read_text
from bot.engine.text import command_form, did_you_mean
from bot.errors import FlowError
from bot.whatsapp import limits

log = logging.getLogger("tracbot.engine")

STATE_KEYS = {"reply", "on", "always", "otherwise", "handover"}
# What a reply mapping holds (bot/engine/interactive.py).
REPLY_KEYS = {"template", "buttons", "list", "location_request"}
# The keys of a reply button, a list and a list row (bot/engine/interactive.py).
BUTTON_KEYS = frozenset({"id", "title"})
LIST_KEYS = frozenset({"button", "title", "rows"})
ROW_KEYS = frozenset({"id", "title", "description"})
# After an unknown condition or action that resembles none.
LISTED_IN_DOCS = " (docs/flows.md lists the conditions and actions there are)"
# A file nested past what the readers can follow ([[[[… or ((((… by the
# thousand).
TOO_DEEP = "nested too deep to read (brackets or parentheses inside each other)"
# Seconds a template may take to render with sample values (a reply takes
# a fraction of a millisecond).
RENDER_SECONDS = 2.0
REPLY_SHAPE = (
    "a reply is a template name, or a mapping with `template` and `buttons`, "
    "`list` or `location_request`"
)
TRANSITION_KEYS = {"input", "match", "one_of", "id", "save", "if", "unless", "do"}
TRANSITION_KEYS |= {"to", "reply"}
# What every reply template may read besides slots, if the engine cannot say.
CONTEXT = {"name", "in_flow", "text", "message_type", "voice_note", "wa_id", "slots"}
CONTEXT |= {"role", "linked", "driver_name", "commands"}
_LOCATED = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<rest>.*)$", re.S)


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One mistake: where it is and what is wrong."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def check_project(
    flows_dir: Path, templates_dir: Path, templates: Templates | None = None
) -> list[Problem]:
    """Check every flow and template; return the problems, sorted.

    Pass `templates` to check a copy already read (hot reload serves it).
    Never raises: a failure of the checker itself is reported as a problem.
    """
    # A folder that is not there read as one with no files: the report
    # was three "missing" notification templates, not the folder.
    missing = [
        Problem(str(folder), 1, f"no such folder (engine.{key} in the config)")
        for folder, key in ((flows_dir, "flows_dir"), (templates_dir, "templates_dir"))
        if not folder.is_dir()
    ]
    if missing:
        return missing
    try:
        return _check(flows_dir, templates or Templates(templates_dir))
    except Exception as exc:
        log.debug("checker failed", exc_info=True)
        return [Problem(str(flows_dir), 1, f"checker failed: {exc!r}")]


def _check(flows_dir: Path, templates: Templates) -> list[Problem]:
    templates_dir = templates.dir
    problems = list(templates.problems)
    flows: dict[str, FlowSpec] = {}
    # By name as a reader sees it: `Gracias` and `gracias` are one name.
    named: dict[str, FlowSpec] = {}
    # Flows that loaded with keys they do not know: `on:` indented under
    # `reply:` is such a key, and the paths it cut were reported as a
    # cascade of unreachable states and missing slots.
    misshapen: set[str] = set()
    for path in sorted(flows_dir.glob("*.yaml")):
        spec, found = _load(path)
        problems += found
        if spec is None:
            continue
        if found or _odd_replies(spec):
            misshapen.add(spec.name)
        first = named.get(spec.name.casefold())
        if first is not None:
            # Said in both files: which one is the copy, only the author knows.
            for one, other in ((spec, first), (first, spec)):
                message = f"flow name {one.name!r} is also the name in "
                problems.append(_at(one, "name", message + other.path.name))
            continue
        named[spec.name.casefold()] = flows[spec.name] = spec
    for path in sorted(flows_dir.glob("*.yml")):
        # Read by nobody: the flow it holds would silently not exist.
        problems.append(
            Problem(
                str(path),
                1,
                f"not read: flow files end in .yaml (rename it {path.stem}.yaml)",
            )
        )

    for spec in flows.values():
        checker = FlowChecker(spec, flows, templates)
        problems += checker.run(follow_paths=spec.name not in misshapen)
    problems += _project_rules(flows, templates_dir)
    problems += templates.sample_problems()
    problems += templates.engine_value_problems(engine_sample(flows))
    problems += templates.engine_template_problems(engine_sample(flows))
    problems += templates.notification_problems()
    problems += templates.single_brace_problems(_printable_names(flows, templates))
    if not problems:
        # Only a clean set is compiled: the engine stops at its first error,
        # which the checks above have already reported with its line.
        problems = _engine_rules(flows, templates)
    # After: a flow that lost its `fallback: true` is also the engine's "no
    # fallback", the more telling of the two.
    problems += _never_started(flows)
    return sorted(set(problems))


def context_names() -> set[str]:
    """The names the engine gives every reply template, besides the slots."""
    try:
        names = engine_sample({})
    except Exception:
        return set(CONTEXT)
    return set(names) | {"slots"}


def format_problems(problems: Iterable[Problem]) -> str:
    """The checker's report: one line a problem, then a count."""
    problems = list(problems)
    lines = [str(p) for p in problems]
    noun = "problem" if len(problems) == 1 else "problems"
    lines.append(f"{len(problems)} {noun} found" if problems else "all flows valid")
    return "\n".join(lines)


def _load(path: Path) -> tuple[FlowSpec | None, list[Problem]]:
    problems: list[Problem] = []
    try:
        data, lines = load_yaml(read_text(path), path)
        # Said even when the flow cannot load: `next: fin` for `to: fin` is
        # the cause of "every transition needs a target state".
        problems = list(_unknown_keys(path, data, lines))
        return load_flow(path), problems
    except (FlowError, OSError) as exc:
        return None, [*problems, _from_error(path, exc)]
    except RecursionError:
        # It stopped the whole check, naming the folder, not the file.
        return None, [Problem(str(path), 1, TOO_DEEP)]


def _printable_names(flows: dict[str, FlowSpec], templates: Templates) -> set[str]:
    """Every name some template may print: the engine's values, what any
    template reads, and every slot a flow saves or an action provides."""
    names = context_names() | set().union(*templates.variables.values())
    for spec in flows.values():
        saved, provided = _slots_of(spec)
        names |= saved | provided
    return names


def _slots_of(spec: FlowSpec) -> tuple[set[str], set[str]]:
    """The slots a flow's transitions `save:`, and those its actions provide."""
    saved: set[str] = set()
    provided: set[str] = set()
    for state in spec.states.values():
        for item in (*state.on, *state.always):
            if item.save:
                saved.add(item.save)
            for action in item.actions:
                provided |= set(registry.PROVIDES.get(action, ()))
    return saved, provided


def _odd_replies(spec: FlowSpec) -> bool:
    """Whether a reply mapping holds a key it does not know (`on:` indented
    under `reply: {template: …}`): its paths are cut like a state's."""
    return any(
        isinstance(reply, dict) and not set(map(str, reply)) <= REPLY_KEYS
        for state in spec.states.values()
        for reply in (state.reply, state.otherwise)
    )


def _from_error(path: Path, exc: Exception) -> Problem:
    found = _LOCATED.match(str(exc))
    if found:
        return Problem(found["path"], int(found["line"]), found["rest"])
    text = str(exc).removeprefix(f"{path}: ")
    return Problem(str(path), 1, text)


def _unknown_keys(path: Path, data: Any, lines: dict[str, int]) -> Iterator[Problem]:
    if not isinstance(data, dict):
        return
    # `x-…` keys hold YAML anchors to reuse, as in config.yaml: not a flow's.
    top = {k: v for k, v in data.items() if not str(k).startswith("x-")}
    yield from _extra(path, lines, "", top, _FLOW_KEYS)
    for name, state in (data.get("states") or {}).items():
        if not isinstance(state, dict):
            continue
        at = f"states.{name}"
        yield from _extra(path, lines, at, state, STATE_KEYS)
        for kind in ("on", "always"):
            for i, item in enumerate(state.get(kind) or []):
                if isinstance(item, dict):
                    yield from _extra(
                        path, lines, f"{at}.{kind}[{i}]", item, TRANSITION_KEYS
                    )


def _extra(
    path: Path, lines: dict[str, int], at: str, data: dict, known: set[str]
) -> Iterator[Problem]:
    for key in data:
        if str(key) not in known:
            where = f"{at}.{key}" if at else str(key)
            yield Problem(
                str(path),
                line_of(lines, where) or 1,
                f"{where}: unknown key {str(key)!r} "
                f"(expected one of {', '.join(sorted(known))})",
            )


def _at(spec: FlowSpec, at: str, message: str) -> Problem:
    return Problem(str(spec.path), spec.line(at) or 1, f"{at}: {message}")


# Templates

_REFERENCES = (nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)
# A placeholder a brace short, as text: `{ name }}`, `name }}`, and `{turno}`
# (single: maybe meant, see `Templates._braces`).
_HALF_PLACEHOLDER = re.compile(
    r"\{\s*(?P<name>[^\W\d][\w.]*)\s*\}\}"
    r"|(?<![\w{])(?P<bare>[^\W\d][\w.]*)\s*\}\}"
    r"|(?P<single>\{\s*(?P<one>[^\W\d][\w.]*)\s*\})"
)
SAMPLE = "muestra"


class Templates:
    """Every template of the folder, read and parsed once.

    `sources` is the copy that a `Renderer` built from this check serves, so
    what was checked is exactly what drivers get.
    """

    def __init__(self, templates_dir: Path) -> None:
        self.dir = templates_dir
        self.problems: list[Problem] = []
        self.sources: dict[str, str] = {}
        self.unreadable: set[str] = set()
        self.variables: dict[str, set[str]] = {}
        # Variables the template guards itself (`is defined`, `default`).
        self.optional: dict[str, set[str]] = {}
        self.static_length: dict[str, int] = {}
        self.referenced: set[str] = set()
        self.partials: set[str] = set()
        # Template → (template it includes, extends or imports, line).
        self.uses: dict[str, list[tuple[str, int]]] = {}
        # `{name}` in a template's text: (file, line, text, name).
        self.single_braces: list[tuple[Path, int, str, str]] = []
        for path in sorted(templates_dir.glob("*.j2")):
            self._read(path)
        # Includes resolve among these sources, so all are read first.
        self.env = make_environment(self.sources)
        self._trees: dict[str, nodes.Template] = {}
        for name, source in self.sources.items():
            self._parse(templates_dir / name, source)
        self._cycles()

    def exists(self, name: str) -> bool:
        name = template_file(name)
        return name in self.sources or name in self.unreadable

    def sample_problems(self) -> list[Problem]:
        """Render each template with sample values; report what would fail."""
        names = set().union(*self.variables.values(), context_names())
        sample = dict.fromkeys(names, SAMPLE)
        problems = []
        for name in self._trees.keys() - self.partials:
            problems += self._sample(name, sample)
        return problems

    def engine_value_problems(self, engine: dict[str, Any]) -> list[Problem]:
        """Render each template with the engine's own values as they are
        (`engine_sample`) and anything at all for every other name; report
        what the engine's values cannot give (`commands[0].nope`)."""
        problems = []
        for name in sorted(self._trees.keys() - self.partials):
            names = set(self.variables.get(name, ()))
            values: dict[str, Any] = dict.fromkeys(names, _ANYTHING)
            values.update(engine)
            values["slots"] = _AnySlots()
            try:
                render_within(self.env.get_template(name), values)
            except (TooSlow, TooBig) as exc:
                problems.append(
                    Problem(str(self.dir / name), template_line(exc), str(exc))
                )
            except jinja2.UndefinedError as exc:
                problems.append(
                    Problem(
                        str(self.dir / name),
                        template_line(exc),
                        f"{exc.message}: not in what the engine gives every "
                        "template (see docs/flows.md); the driver would get "
                        "the apology",
                    )
                )
            except WholeValueError as exc:
                problems.append(
                    Problem(
                        str(self.dir / name),
                        template_line(exc),
                        f"{exc}; the driver would get the apology",
                    )
                )
            except Exception:  # noqa: BLE001,S112  (a value only a run can give)
                continue
        return problems

    def notification_problems(self) -> list[Problem]:
        """The backend API's notification templates (bot/api/notifications.py)
        against the values each is given: a misspelt one passed, and every
        notify call answered 500 from the next start on."""
        problems = []
        for name, given in sorted(TEMPLATE_VALUES.items()):
            file = template_file(name)
            problems += self._given_only(
                file,
                given,
                "the backend API's notifications are written with it",
                "every such notification would fail",
                describe="this notification template (it gets "
                f"{', '.join(sorted(given))})",
            )
            if file in self._trees:
                problems += self._without_optional(
                    file, given, OPTIONAL_VALUES.get(name)
                )
        return problems

    def engine_template_problems(self, engine: dict[str, Any]) -> list[Problem]:
        """The template the engine itself answers with (no flow names it):
        a command that is not for the number (a driver typing RESUMEN).
        Deleted or misspelt, it passed, and those drivers got the apology."""
        given = frozenset(engine) | UNAVAILABLE_VALUES | {"slots"}
        listed = ", ".join(sorted(UNAVAILABLE_VALUES))
        return self._given_only(
            template_file(UNAVAILABLE),
            given,
            "the engine answers a command that is not for the number (a driver "
            "typing RESUMEN, a linked number typing VINCULAR) with it",
            "a driver typing a command that is not for them would get the apology",
            describe=f"this template (it gets {listed} and what every "
            "template gets, docs/flows.md)",
        )

    def _given_only(
        self,
        file: str,
        given: frozenset[str],
        used_for: str,
        outcome: str,
        *,
        describe: str,
    ) -> list[Problem]:
        """A template that must exist and read only the names it is given."""
        path = str(self.dir / file)
        if file not in self.sources:
            if file in self.unreadable:
                return []  # reported as unreadable already
            return [Problem(path, 1, f"missing: {used_for}")]
        tree = self._trees.get(file)
        if tree is None:
            return []  # its syntax error is reported already
        problems = []
        unknown = self.variables[file] - self.optional[file] - given
        for var in sorted(unknown):
            line = min(
                (n.lineno for n in tree.find_all(nodes.Name) if n.name == var),
                default=1,
            )
            message = f"{var!r} is not given to {describe}; {outcome}"
            problems.append(Problem(path, line, message + did_you_mean(var, given)))
        return problems

    def _without_optional(
        self, file: str, given: frozenset[str], optional: frozenset[str] | None
    ) -> list[Problem]:
        # `{{ ubicacion }}` unguarded passed, and every trip notification
        # without a location answered 500 ("printed a value that is None").
        if not optional:
            return []
        values: dict[str, Any] = dict.fromkeys(given, SAMPLE)
        try:
            render_within(self.env.get_template(file), values)
        except Exception:  # noqa: BLE001  (not the optional values' doing)
            # A name it is not given failed it too, and is reported as
            # such; blaming `ubicacion` for it sent the author astray.
            return []
        values.update(dict.fromkeys(optional, None))
        try:
            render_within(self.env.get_template(file), values)
        except Exception as exc:  # noqa: BLE001  (each is the author's to see)
            missing = ", ".join(sorted(optional))
            return [
                Problem(
                    str(self.dir / file),
                    template_line(exc),
                    f"{exc}, when a call leaves out {missing} (null): guard it "
                    f"with {{% if {sorted(optional)[0]} %}}…{{% endif %}}",
                )
            ]
        return []

    def _read(self, path: Path) -> None:
        try:
            self.sources[path.name] = read_text(path)
        except FileNotFoundError:
            return  # deleted since the folder was listed
        except (OSError, FlowError) as exc:
            self.unreadable.add(path.name)
            self.problems.append(_from_error(path, exc))

    def _parse(self, path: Path, source: str) -> None:
        try:
            tree = self.env.parse(source, path.name, str(path))
            # Unknown filters and tests only show when the tree is compiled.
            self.env.compile(tree, path.name, str(path))
            used = meta.find_undeclared_variables(tree) - set(self.env.globals)
        except jinja2.TemplateSyntaxError as exc:
            self._fail(path, exc.lineno or 1, _jinja_reason(exc))
            return
        except jinja2.TemplateError as exc:
            self._fail(path, getattr(exc, "lineno", None) or 1, _jinja_reason(exc))
            return
        except RecursionError:
            self._fail(path, 1, TOO_DEEP)
            return

        self._trees[path.name] = tree
        self._braces(path, source)
        self._unknown_names(path, tree)
        self._internals(path, tree)
        self._placeholders(path, tree)
        self._references(path, tree)
        self.variables[path.name] = used
        self.optional[path.name] = _guarded_names(tree)
        self.static_length[path.name] = sum(
            len(data.data) for data in tree.find_all(nodes.TemplateData)
        )

    def _fail(self, path: Path, line: int, message: str) -> None:
        self.problems.append(Problem(str(path), line, message))

    def tree(self, file: str) -> nodes.Template | None:
        """The parsed template of a file; None if it did not parse."""
        return self._trees.get(file)

    def where_used(self, file: str, name: str) -> str:
        """`turno.j2:3`: the first line of a template that reads `name`."""
        tree = self._trees.get(file)
        lines = [n.lineno for n in tree.find_all(nodes.Name) if n.name == name]
        return f"{file}:{min(lines)}" if tree is not None and lines else file

    def _unknown_names(self, path: Path, tree: nodes.Template) -> None:
        # Jinja defers an unknown filter or test inside `{% if %}` to run
        # time, so compiling finds only those outside any condition.
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            kind, known = (
                ("filter", self.env.filters)
                if isinstance(node, nodes.Filter)
                else ("test", self.env.tests)
            )
            if node.name not in known:
                self._fail(path, node.lineno, f"unknown {kind} {node.name!r}")

    def _internals(self, path: Path, tree: nodes.Template) -> None:
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            name = _attribute(node)
            if name is not None and name.startswith("_"):
                self._fail(
                    path,
                    node.lineno,
                    f"template reaches for {name!r}: names starting with _ "
                    "are Python internals, blocked by the sandbox",
                )

    def _braces(self, path: Path, source: str) -> None:
        """Placeholders a brace short or long, which Jinja takes for text:
        the driver got "¡De nada { name }}!". `{name}` and `name }}` alone
        may be meant (`{así}`, JSON's `true}}`): they are kept for the
        project's check, which knows the names a template may print. Text
        inside `{% raw %}` is meant as written."""
        raw = after_value = False
        opened = closed = 0
        extra: list[int] = []
        for line, kind, value in self.env.lex(source, path.name):
            if kind in ("raw_begin", "raw_end"):
                raw = kind == "raw_begin"
            if kind != "data" or raw:
                after_value = kind == "variable_end"
                continue
            opened, closed = opened + value.count("{"), closed + value.count("}")
            if after_value and value.startswith("}"):
                extra.append(line)
            for found in _HALF_PLACEHOLDER.finditer(value):
                at = line + value.count("\n", 0, found.start())
                if found["name"]:
                    self._fail(
                        path,
                        at,
                        f"{found[0].strip()!r} reaches the driver as written: a "
                        "value is printed with two braces each side, "
                        f"{{{{ {found['name']} }}}}",
                    )
                else:
                    name = found["bare"] or found["one"]
                    self.single_braces.append((path, at, found[0].strip(), name))
            after_value = False
        # `{{ name }}}`, unless the text's own braces need it (JSON around a
        # value: `{"id": {{ wa_id }}}`).
        if extra and closed > opened:
            self._fail(
                path,
                extra[0],
                "'}}}' reaches the driver as written: a brace too many after a value",
            )

    def single_brace_problems(self, names: set[str]) -> list[Problem]:
        """`{turno}` or `turno }}` where `turno` is a name a template may
        print."""
        return [
            Problem(
                str(path),
                line,
                f"{text!r} reaches the driver as written: a value is printed "
                f"with two braces each side, {{{{ {name} }}}}; to show the "
                f"braces, write {{% raw %}}{text}{{% endraw %}}",
            )
            for path, line, text, name in self.single_braces
            if name.split(".")[0] in names
        ]

    def _placeholders(self, path: Path, tree: nodes.Template) -> None:
        # `{{1}}` is a placeholder in Meta's templates; here it prints "1".
        for output in tree.find_all(nodes.Output):
            for node in output.nodes:
                if isinstance(node, nodes.Const) and type(node.value) is int:
                    self._fail(
                        path,
                        node.lineno,
                        f"{{{{{node.value}}}}} prints the number {node.value}: "
                        "numbered placeholders belong to Meta's templates; "
                        "here write the variable's name, like {{ driver_name }}",
                    )

    def _references(self, path: Path, tree: nodes.Template) -> None:
        for node in tree.find_all(_REFERENCES):
            target = node.template
            # A computed name can only be known when it renders.
            if not isinstance(target, nodes.Const) or getattr(
                node, "ignore_missing", False
            ):
                continue
            self.partials.add(target.value)
            self.uses.setdefault(path.name, []).append((target.value, node.lineno))
            if target.value not in self.sources:
                keyword = type(node).__name__.lower().replace("fromimport", "import")
                self._fail(
                    path,
                    node.lineno,
                    f"{keyword} of unknown template {target.value!r} "
                    f"(no such file in {self.dir})",
                )

    def _cycles(self) -> None:
        """A template that includes itself, directly or through others: it
        passed, and its render ran out of stack (the driver got the
        apology). Reported once, at the line of the first step."""
        reported: set[frozenset[str]] = set()
        for start in sorted(self.uses):
            path = self._cycle_from(start)
            if path is None or frozenset(path) in reported:
                continue
            reported.add(frozenset(path))
            line = next(line for used, line in self.uses[start] if used == path[1])
            chain = " → ".join(path)
            self._fail(
                self.dir / start,
                line,
                f"the template includes itself ({chain}): it would never end "
                "rendering, and the driver would get the apology",
            )

    def _cycle_from(self, start: str) -> list[str] | None:
        """The path back to `start` through what it uses, if there is one.

        A walk with a stack of its own: a chain of a thousand includes ran
        Python's out.
        """
        trail = [start]
        stack = [iter(self.uses.get(start, ()))]
        seen: set[str] = set()
        while stack:
            for used, _line in stack[-1]:
                if used == start:
                    return [*trail, used]
                if used not in seen:
                    seen.add(used)
                    trail.append(used)
                    stack.append(iter(self.uses.get(used, ())))
                    break
            else:
                stack.pop()
                trail.pop()
        return None

    def _sample(self, name: str, sample: dict[str, str]) -> list[Problem]:
        path = str(self.dir / name)
        if not self.sources[name].strip():
            return [
                Problem(
                    path,
                    1,
                    "the template is empty; the driver would get the apology "
                    "instead of a reply",
                )
            ]
        try:
            text = render_within(self.env.get_template(name), sample).strip()
        except (TooSlow, TooBig) as exc:
            return [Problem(path, template_line(exc), str(exc))]
        except Exception:
            # The sample strings cannot stand in for every value (a dict from
            # an action, a number): only `tracbot test` can render those.
            return []
        if not text:
            return [
                Problem(
                    path,
                    1,
                    "renders an empty message with sample values; the driver "
                    "would get the apology instead of a reply",
                )
            ]
        static = self.static_length.get(name, 0)
        if len(text) > limits.MAX_TEXT and not (
            static > limits.MAX_TEXT and name in self.referenced
        ):
            return [
                Problem(
                    path,
                    1,
                    f"renders {len(text)} characters with sample values; "
                    f"a WhatsApp text holds at most {limits.MAX_TEXT}",
                )
            ]
        return []


class _Anything:
    """A stand-in for a slot or an action's value: any attribute, item, or
    comparison works, so that only the engine's own values can fail."""

    # Printed as text although it can be called (bot/engine/guards.py).
    template_value = True

    def __getattr__(self, name: str) -> _Anything:
        # The sandbox asks these to decide whether a call is allowed.
        if name.startswith("__") or name in ("unsafe_callable", "alters_data"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: Any) -> _Anything:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
        return self

    def __iter__(self) -> Iterator[_Anything]:
        return iter((self,))

    def __len__(self) -> int:
        return 1

    def __str__(self) -> str:
        return SAMPLE

    def __int__(self) -> int:
        return 1

    def __float__(self) -> float:
        return 1.0

    def __lt__(self, other: Any) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__


_ANYTHING = _Anything()


class _AnySlots(Mapping[str, Any]):
    """A stand-in for `slots`: a record whose every field is anything, so
    that `{{ slots.rut }}` passes and `{{ slots }}` prints a whole record."""

    def __getitem__(self, key: str) -> Any:
        return _ANYTHING

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _startable(spec: FlowSpec) -> bool:
    """Whether a message can start the flow, not only a handover."""
    return bool(
        spec.start
        or spec.start_ids
        or spec.start_types
        or spec.command
        or spec.fallback
        or spec.is_global
    )


def _always_taken(state: StateSpec) -> bool:
    """Whether one of the state's `always` transitions surely holds: one
    without conditions, or `if: X` beside `unless: X`."""
    ifs, unlesses = set(), set()
    for item in state.always:
        if not item.conditions and not item.unless:
            return True
        if item.conditions and not item.unless:
            ifs.add(frozenset(item.conditions))
        if item.unless and not item.conditions:
            unlesses.add(frozenset(item.unless))
    # `if: [X]` and `unless: [X]` cover every case between them; with more
    # names, `unless: [X, Y]` holds only when neither does.
    return any(len(names) == 1 for names in ifs & unlesses)


def engine_sample(flows: dict[str, FlowSpec]) -> dict[str, Any]:
    """The values the engine gives every template, for these flows (every
    command listed, as for an admin)."""
    # The engine builds the values per message; a stand-in shows them.
    stand_in = SimpleNamespace(
        flows={}, _menus={None: audience.commands(flows.values())}
    )
    return Engine._values(  # type: ignore[arg-type]
        stand_in, "0", "", "", "text", voice_note=False, in_flow=False
    )


def _jinja_reason(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.TemplateAssertionError):
        # Jinja says "No filter named 'mayus'."; say it like the others.
        message = str(exc.message or exc).rstrip(".")
        found = re.match(r"No (\w+) named '(.+)'$", message)
        if found:
            return f"unknown {found[1]} {found[2]!r}"
        return f"template error: {message}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template syntax: {exc.message}"
    return f"template error: {type(exc).__name__}: {exc.message or exc}"


def _attribute(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    arg = getattr(node, "arg", None)
    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
        return arg.value
    return None


# One flow


class FlowChecker:
    """The checks of one flow against the others and the templates."""

    def __init__(
        self, spec: FlowSpec, flows: dict[str, FlowSpec], templates: Templates
    ) -> None:
        self.spec = spec
        self.flows = flows
        self.templates = templates
        self.problems: list[Problem] = []
        self.context = context_names()
        self._start_words = StartWords(flows.values())
        # Slots only `save:` fills (a text, a pin, an id), never an action.
        saved, provided = _slots_of(spec)
        self._saved_only = saved - provided

    def run(self, follow_paths: bool = True) -> list[Problem]:
        """Every problem of the flow; with `follow_paths` False, none of the
        checks that follow its paths (its shape is wrong: they would report
        what the shape cut, not the cause)."""
        self._menu_title()
        self._literal("description", self.spec.description)
        self._literal("title", self.spec.title)
        for state in self.spec.states.values():
            self._state(state)
        self._flow_templates()
        self._always_loops()
        self._silences()
        if follow_paths and not self._broken_ways():
            # A misspelt `to:` cuts the paths these two follow: each would
            # report a dozen states behind it, none the cause.
            self._reachability()
            self._slots()
        return self.problems

    def _keys(self, at: str, item: Any, known: frozenset[str]) -> None:
        if not isinstance(item, dict):
            return
        for key in sorted(set(map(str, item)) - known):
            self.fail(
                f"{at}.{key}",
                f"unknown key {key!r} (known: {', '.join(sorted(known))})"
                + did_you_mean(key, known),
            )

    def _literal(self, at: str, text: Any) -> None:
        # Only message_templates/ are Jinja: in a flow file the braces
        # reached the driver as written ("Tu turno, {{ driver_name }}").
        if isinstance(text, str) and ("{{" in text or "{%" in text):
            self.fail(
                at,
                f"{text!r} is shown to drivers as written: `{{{{ … }}}}` works "
                "only in the files of message_templates/",
            )

    def _menu_title(self) -> None:
        # The command is a row of the OPCIONES list, titled by `title`.
        spec = self.spec
        if spec.command is None:
            if spec.title is not None:
                self.fail(
                    "title",
                    "a title is the row of a command in the menus: "
                    "this flow has no `command`",
                )
            return
        title = spec.title or str(spec.command).capitalize()
        if len(title) > limits.MAX_ROW_TITLE:
            self.fail(
                "title" if spec.title else "command",
                f"menu title {title!r} is {len(title)} characters; a list row "
                f"holds {limits.MAX_ROW_TITLE} (set a shorter `title:`)",
            )

    def _broken_ways(self) -> bool:
        states = self.spec.states
        return any(
            item.dest not in states
            for state in states.values()
            for item in (*state.on, *state.always)
        )

    def fail(self, at: str, message: str) -> None:
        self.problems.append(_at(self.spec, at, message))

    def _handover_audience(self, at: str, name: str) -> None:
        # The engine hands over only to a flow the number may use; a flow
        # open to more numbers than its target would stop there for some.
        target = self.flows.get(name)
        if target is None:
            return
        ours = audience.ADMITS.get(self.spec.audience, set())
        theirs = audience.ADMITS.get(target.audience, set())
        left_out = sorted(ours - theirs)
        if left_out:
            self.fail(
                f"{at}.handover",
                f"flow {name!r} is for audience {target.audience!r}, but "
                f"{self.spec.name!r} is for {self.spec.audience!r}: a number "
                f"that is {' or '.join(left_out)} would be handed to a flow "
                f"it may not use (give {self.spec.name!r} `audience: "
                f"{target.audience}`)",
            )

    def _shadowed(self, at: str, kind: str, items: tuple[Any, ...]) -> None:
        # Tried in order: after one that takes every message of its kind,
        # those of that kind never fire (`one_of: [nada]` after `input:
        # any` passed, and never answered).
        for i, item in enumerate(items):
            if item.conditions or item.unless or item.one_of or item.match:
                continue
            if item.ids:
                continue
            takes = "any" if kind == "always" else item.input
            what = "message" if takes == "any" else f"{takes} message"
            for j in range(i + 1, len(items)):
                if takes == "any" or items[j].input == takes:
                    self.fail(
                        f"{at}.{kind}[{j}]",
                        f"never taken: {kind}[{i}] before it takes every {what}",
                    )
            return

    def _state(self, state: StateSpec) -> None:
        at = f"states.{state.name}"
        if not state.name.strip():
            self.fail(at, "a state needs a name")
        self._shadowed(at, "on", state.on)
        self._shadowed(at, "always", state.always)
        for key in ("reply", "otherwise"):
            self._template(f"{at}.{key}", getattr(state, key))
        if state.handover is not None:
            if state.handover not in self.flows:
                self.fail(
                    f"{at}.handover",
                    f"unknown flow {state.handover!r}"
                    + did_you_mean(state.handover, self.flows),
                )
            if not state.final:
                self.fail(
                    f"{at}.handover",
                    "a handover state cannot have `on` "
                    "or `always`: the next flow takes over",
                )
            self._handover_audience(at, state.handover)
        for kind, items in (("on", state.on), ("always", state.always)):
            for i, item in enumerate(items):
                where = f"{at}.{kind}[{i}]"
                if item.save in self.context:
                    # The slot wins in a reply: "Gracias Km 45" for a name.
                    self.fail(
                        f"{where}.save",
                        f"slot {item.save!r} hides the reply value of that "
                        "name, which every template may read: save the answer "
                        "under another name",
                    )
                if item.dest not in self.spec.states:
                    self.fail(
                        f"{where}.to",
                        f"unknown state {item.dest!r}"
                        + did_you_mean(item.dest, self.spec.states),
                    )
                said = [("if", n) for n in item.conditions]
                said += [("unless", n) for n in item.unless]
                for key, name in said:
                    if not name:
                        self.fail(f"{where}.{key}", "an empty condition name")
                    elif name not in registry.CONDITIONS:
                        self.fail(
                            f"{where}.{key}",
                            f"unknown condition {name!r}"
                            + (
                                did_you_mean(name, registry.CONDITIONS)
                                or LISTED_IN_DOCS
                            ),
                        )
                for name in item.actions:
                    if name not in registry.ACTIONS:
                        self.fail(
                            f"{where}.do",
                            f"unknown action {name!r}"
                            + (did_you_mean(name, registry.ACTIONS) or LISTED_IN_DOCS),
                        )
                    self._guarded(f"{where}.do", name, item.conditions)
                self._template(f"{where}.reply", item.reply)
                self._answered_first(f"{where}.one_of", item.one_of)

    def _answered_first(self, at: str, words: tuple[str, ...]) -> None:
        # A global flow answers its start words in any state, before the
        # state's own `on:` is tried.
        for word in words:
            for name in sorted(self._start_words.said(word)):
                if self.flows[name].is_global and name != self.spec.name:
                    self.fail(
                        at,
                        f"{word!r} starts the global flow {name!r}, which "
                        "answers it in any state first: this transition "
                        "never gets it",
                    )

    def _guarded(self, at: str, action: str, conditions: tuple[str, ...]) -> None:
        # Without its guard the action fails on a message it cannot take:
        # the step is undone and the driver gets the apology.
        needs = registry.NEEDS.get(action, ())
        if not needs or set(needs) & set(conditions):
            return
        wanted = " or ".join(f"`if: {name}`" for name in needs)
        self.fail(
            at,
            f"action {action!r} cannot take every message: put {wanted} on "
            "this transition, or a message it cannot take fails the step "
            "and the driver gets the apology",
        )

    def _flow_templates(self) -> None:
        timeout = self.spec.timeout
        self._template("timeout.reply", timeout.reply if timeout else None)
        self._template("migrate_reply", self.spec.migrate_reply)
        self._printed_empty("timeout.reply", timeout.reply if timeout else None)
        for old, new in self.spec.migrate.items():
            if new not in self.spec.states:
                self.fail(
                    f"migrate.{old}",
                    f"unknown state {new!r}" + did_you_mean(new, self.spec.states),
                )
            elif old in self.spec.states:
                self.fail(
                    f"migrate.{old}",
                    f"state {old!r} still exists: a driver there carries on in "
                    "it, and this line is never used",
                )

    def _printed_empty(self, at: str, reply: Any) -> None:
        # No message asked for a timeout reply: `name` and `text` are empty,
        # and `Hola {{ name }},` read "Hola , …".
        if isinstance(reply, dict):
            reply = reply.get("template")
        if not isinstance(reply, str):
            return
        file = template_file(reply)
        tree = self.templates.tree(file)
        if tree is None:
            return
        for output in tree.find_all(nodes.Output):
            for expr in output.nodes:
                if isinstance(expr, nodes.TemplateData) or _has_fallback(expr):
                    continue
                # Printed as is, through a filter or with `~`: "Hola ."
                for node in _within(expr, nodes.Name):
                    if node.name not in ("name", "text"):
                        continue
                    self.fail(
                        at,
                        f"template {reply!r} prints {{{{ {node.name} }}}} "
                        f"({file}:{node.lineno}), which is empty here (no "
                        f"message asked for this reply): write {{{{ "
                        f"{node.name} or '…' }}}}",
                    )

    def _template(self, at: str, reply: Any) -> None:
        if reply is None:
            return
        if isinstance(reply, dict):
            if self._reply_shape(at, reply):
                # Structured replies (buttons, lists) are checked by the limits.
                self._template(at, reply["template"])
                self._interactive(at, reply)
            return
        if not isinstance(reply, str) or not reply.strip():
            # `reply: 42` or a list of names: the driver got the apology.
            self.fail(at, f"{REPLY_SHAPE}, not {reply!r}")
            return
        self.templates.referenced.add(template_file(reply))
        if not self.templates.exists(reply):
            self.fail(
                at,
                f"unknown template {reply!r} (no {template_file(reply)} "
                f"in {self.templates.dir})",
            )
            return
        length = self.templates.static_length.get(template_file(reply), 0)
        if length > limits.MAX_TEXT:
            self.fail(
                at,
                f"template {reply!r} has {length} characters of fixed "
                f"text; a WhatsApp text holds {limits.MAX_TEXT}",
            )

    def _reply_shape(self, at: str, reply: dict[str, Any]) -> bool:
        """Whether a reply mapping names its template and nothing unknown."""
        unknown = sorted(set(map(str, reply)) - REPLY_KEYS)
        for key in unknown:
            # `buton:` was dropped without a word: no buttons went out.
            self.fail(
                f"{at}.{key}",
                f"unknown key {key!r} (known: {', '.join(sorted(REPLY_KEYS))})",
            )
        if not isinstance(reply.get("template"), str) or not reply["template"]:
            self.fail(at, f"{REPLY_SHAPE}: this mapping has no `template`")
            return False
        return not unknown

    def _interactive(self, at: str, reply: Any) -> None:
        if not isinstance(reply, dict):
            return
        buttons = reply.get("buttons") or []
        if not isinstance(buttons, list) or not all(map(_item_shape, buttons)):
            self.fail(
                f"{at}.buttons",
                "expected a list of words or of mappings with `id` (and `title`)",
            )
            return
        listing = reply.get("list")
        if listing is not None and not isinstance(listing, dict):
            self.fail(f"{at}.list", "expected a mapping with `rows` (and `button`)")
            return
        if len(buttons) > limits.MAX_BUTTONS:
            self.fail(
                at, f"{len(buttons)} buttons; WhatsApp allows {limits.MAX_BUTTONS}"
            )
        # One message has buttons or a list: the list was dropped unsaid.
        given = [
            key for key in ("buttons", "list", "location_request") if reply.get(key)
        ]
        if len(given) > 1:
            self.fail(
                at,
                f"{' and '.join(given)} in one reply: a message has one of them "
                f"(only its {given[0]} would go out)",
            )
        # Cut with "…" to WhatsApp's limits as they went out, unsaid.
        if isinstance(listing, dict):
            self._longest(
                at, "list title", listing.get("title"), limits.MAX_SECTION_TITLE
            )
            for row in _rows(reply):
                if isinstance(row, dict):
                    self._longest(
                        at,
                        "row description",
                        row.get("description"),
                        limits.MAX_ROW_DESCRIPTION,
                    )
        # `titel:` for `title:` made the button's title its id, silently.
        for i, button in enumerate(buttons):
            self._keys(f"{at}.buttons[{i}]", button, BUTTON_KEYS)
        if isinstance(listing, dict):
            self._keys(f"{at}.list", listing, LIST_KEYS)
            for i, row in enumerate(_rows(reply)):
                self._keys(f"{at}.list.rows[{i}]", row, ROW_KEYS)
        for i, button in enumerate(buttons):
            self._literal(f"{at}.buttons[{i}]", _title(button))
        for row_at, row in [(f"{at}.list", listing or {})] + [
            (f"{at}.list.rows[{i}]", row) for i, row in enumerate(_rows(reply))
        ]:
            if isinstance(row, dict):
                for key in ("button", "title", "description"):
                    self._literal(row_at, row.get(key))
            else:
                self._literal(row_at, row)
        for button in buttons:
            title = _title(button)
            if title and len(title) > limits.MAX_BUTTON_TITLE:
                self.fail(
                    at,
                    f"button title {title!r} is {len(title)} characters; "
                    f"WhatsApp allows {limits.MAX_BUTTON_TITLE}",
                )
        # Meta refuses a message whose buttons or rows share an id or a
        # title; a tap on one of two alike could not be told apart.
        rows = [r for r in _rows(reply) if _item_shape(r)]
        for what, items in (("buttons", buttons), ("list.rows", rows)):
            for part, values in (
                ("id", [_id(b) for b in items]),
                ("title", [_title(b) or _id(b) for b in items]),
            ):
                twice = sorted({v for v in values if values.count(v) > 1})
                if twice:
                    self.fail(
                        f"{at}.{what}",
                        f"two {what.removeprefix('list.')} have the {part} "
                        f"{twice[0]!r}; WhatsApp refuses the message (the driver "
                        "would get only its text)",
                    )
        if isinstance(listing, dict) and isinstance(listing.get("button"), str):
            button = listing["button"]
            if len(button) > limits.MAX_BUTTON_TITLE:
                self.fail(
                    at,
                    f"list button {button!r} is {len(button)} characters; "
                    f"WhatsApp allows {limits.MAX_BUTTON_TITLE}",
                )
        name = reply.get("template")
        length = self.templates.static_length.get(template_file(str(name)), 0)
        # A list's text may be four times a button message's.
        most = limits.body_limit("list" if listing else "button")
        if (buttons or listing) and length > most:
            self.fail(
                at,
                f"template {name!r} has {length} characters of fixed text; a "
                f"message with {'a list' if listing else 'buttons'} holds {most} "
                "(the rest would go ahead as a message of its own)",
            )
        if isinstance(listing, dict) and listing.get("rows") == "commands":
            self._menu_rows(at)
        rows = _rows(reply)
        if not all(map(_item_shape, rows)):
            self.fail(
                f"{at}.list.rows",
                "expected words or mappings with `id` (and `title`, `description`)",
            )
            return
        if len(rows) > limits.MAX_LIST_ROWS:
            self.fail(
                at, f"{len(rows)} list rows; WhatsApp allows {limits.MAX_LIST_ROWS}"
            )
        for row in rows:
            title = _title(row)
            if title and len(title) > limits.MAX_ROW_TITLE:
                self.fail(
                    at,
                    f"row title {title!r} is {len(title)} characters; "
                    f"WhatsApp allows {limits.MAX_ROW_TITLE}",
                )

    def _longest(self, at: str, what: str, text: Any, limit: int) -> None:
        if isinstance(text, str) and len(text) > limit:
            self.fail(
                at,
                f"{what} {text!r} is {len(text)} characters; WhatsApp allows "
                f"{limit} (it would be cut short with …)",
            )

    def _menu_rows(self, at: str) -> None:
        # A list shows 10 rows: the commands past them silently vanished
        # from the menu (AYUDA and CANCELAR, sorted last).
        for role in ("unlinked", "driver", "admin"):
            shown = [
                str(spec.command)
                for spec in self.flows.values()
                if spec.command and role in audience.ADMITS.get(spec.audience, ())
            ]
            if len(shown) > limits.MAX_LIST_ROWS:
                self.fail(
                    f"{at}.list.rows",
                    f"a number that is {role} may use {len(shown)} commands, "
                    f"and a list shows {limits.MAX_LIST_ROWS}: the last ones "
                    "would be left out of this menu",
                )
                return

    def _edges(self, state: StateSpec) -> list[str]:
        known = self.spec.states
        return [t.dest for t in (*state.on, *state.always) if t.dest in known]

    def _reachability(self) -> None:
        states = self.spec.states
        reached = _closure({self.spec.initial}, lambda s: self._edges(states[s]))
        for name in states:
            if name not in reached:
                self.fail(
                    f"states.{name}",
                    "unreachable: no transition leads here "
                    f"from the initial state {self.spec.initial!r}",
                )

        ends = {name for name, state in states.items() if state.final}
        reverse: dict[str, set[str]] = {name: set() for name in states}
        for name, state in states.items():
            for dest in self._edges(state):
                if dest in reverse:
                    reverse[dest].add(name)
        leading = _closure(ends, lambda s: reverse[s])
        for name in states:
            if name in reached and name not in leading:
                self.fail(
                    f"states.{name}",
                    "no way out: no path from here reaches a state that ends the flow",
                )

    def _silences(self) -> None:
        # A message must get an answer: a way that stops (to wait for the
        # next message, or for good) with nothing said leaves the driver
        # looking at their own message.
        spec, initial = self.spec, self.spec.initial
        end = self._silent_end(spec, initial, frozenset())
        # A flow only a handover reaches is checked from the handing side.
        if end is not None and _startable(spec):
            hint = ""
            if end == initial and spec.states[end].on:
                hint = ", or make its transitions `always` if it should not wait"
            self.fail(
                f"states.{initial}",
                "the message that starts this flow gets no reply: it stops in "
                f"{end!r}, which says nothing (give {end!r} a reply{hint})",
            )
        for name, state in spec.states.items():
            for i, item in enumerate(state.on):
                if item.reply:
                    continue
                end = self._silent_end(spec, item.dest, frozenset())
                if end is not None:
                    self.fail(
                        f"states.{name}.on[{i}]",
                        "a message taken here gets no reply: it stops in "
                        f"{end!r}, which says nothing (give this transition "
                        f"or {end!r} a reply)",
                    )

    def _silent_end(
        self, spec: FlowSpec, name: str, seen: frozenset[tuple[str, str]]
    ) -> str | None:
        """The state where a way into `name` can stop having said nothing
        (`flow.state` when a handover led into another flow)."""
        state = spec.states.get(name)
        if state is None or (spec.name, name) in seen:
            # Unknown states and loops are reported on their own.
            return None
        if state.reply is not None:
            return None
        seen = seen | {(spec.name, name)}
        if state.handover is not None:
            other = self.flows.get(state.handover)
            if other is None:
                return None
            end = self._silent_end(other, other.initial, seen)
            if end is None or "." in end:
                return end
            return f"{other.name}.{end}"
        # With only conditional `always` transitions, none may hold: the
        # state then waits (or ends) as it is.
        if not _always_taken(state):
            return name
        for item in state.always:
            if item.reply is None:
                end = self._silent_end(spec, item.dest, seen)
                if end is not None:
                    return end
        return None

    def _always_loops(self) -> None:
        states = self.spec.states
        for name, state in states.items():
            for i, item in enumerate(state.always):
                after = _closure(
                    {item.dest},
                    lambda s: (
                        [t.dest for t in states[s].always if t.dest in states]
                        if s in states
                        else []
                    ),
                )
                if name in after:
                    self.fail(
                        f"states.{name}.always[{i}]",
                        f"loops back to {name!r} without waiting for input",
                    )

    def _slots(self) -> None:
        states = self.spec.states
        available: dict[str, set[str]] = {name: set() for name in states}
        changed = True
        while changed:
            changed = False
            for name, state in states.items():
                for item in (*state.on, *state.always):
                    if item.dest in available:
                        new = _after(available[name], item)
                        if not new <= available[item.dest]:
                            available[item.dest] |= new
                            changed = True

        self._quiet_replies(available)
        for name, state in states.items():
            at = f"states.{name}"
            self._variables(f"{at}.reply", state.reply, available[name], name)
            self._variables(f"{at}.otherwise", state.otherwise, available[name], name)
            for kind, items in (("on", state.on), ("always", state.always)):
                for i, item in enumerate(items):
                    given = _after(available[name], item)
                    self._variables(f"{at}.{kind}[{i}].reply", item.reply, given, name)

    def _quiet_replies(self, available: dict[str, set[str]]) -> None:
        # The timeout reply may come in any state a driver waits in, with
        # that state's slots; the restart notice comes with none.
        spec = self.spec
        waiting = [available[name] for name, state in spec.states.items() if state.on]
        common = set.intersection(*waiting) if waiting else set()
        why = "not every state a driver may wait in has it when the time runs out"
        timeout = spec.timeout
        self._variables("timeout.reply", timeout and timeout.reply, common, "", why)
        why = "a driver who starts over has no slots left"
        self._variables("migrate_reply", spec.migrate_reply, set(), "", why)

    def _variables(
        self, at: str, reply: Any, slots: set[str], state: str, why: str = ""
    ) -> None:
        if isinstance(reply, dict):
            self._rows_value(at, reply, slots, state)
            reply = reply.get("template")
        if not isinstance(reply, str):
            return
        file = template_file(reply)
        used = self.templates.variables.get(file, set())
        used = used - self.templates.optional.get(file, set())
        for name in sorted(used - self.context - slots):
            if why:
                problem = (
                    f"{why}; put it inside `{{% if {name} is defined %}}…"
                    "{% endif %}`, or leave it out"
                )
            else:
                problem = f"which state {state!r} cannot provide (no earlier step "
                problem += "saves it; every reply has "
                problem += ", ".join(sorted(self.context - {"slots"})) + ")"
                problem += did_you_mean(name, self.context | slots)
            where = self.templates.where_used(file, name)
            self.fail(at, f"template {reply!r} uses {name!r} ({where}), {problem}")

    def _rows_value(
        self, at: str, reply: dict[str, Any], slots: set[str], state: str
    ) -> None:
        # `rows: comandos` for `rows: commands` read nothing: the list was
        # dropped without a word and the menu went as plain text.
        listing = reply.get("list")
        rows = listing.get("rows") if isinstance(listing, dict) else None
        if isinstance(rows, str) and rows in self._saved_only:
            self.fail(
                f"{at}.list.rows",
                f"{rows!r} holds what the driver sent (`save: {rows}`), not a "
                "list of rows: the list would be left out",
            )
            return
        if not isinstance(rows, str) or rows in self.context | slots:
            return
        self.fail(
            f"{at}.list.rows",
            f"{rows!r} is no value state {state!r} has (the menu of commands is "
            "`commands`; other rows come from a slot an earlier step saves): "
            "the list would be left out" + did_you_mean(rows, self.context | slots),
        )


class TooSlow(Exception):
    """A template rendered past its time with sample values."""


def render_within(template: jinja2.Template, values: dict[str, Any]) -> str:
    """Render with sample values, stopped after RENDER_SECONDS.

    A loop that never ends in a template held the reload thread for good
    (no reload after it, SIGTERM not obeyed). A trace function sees each
    line the template runs, so the checker alone pays for it, not a reply.
    """
    seconds = RENDER_SECONDS
    deadline = time.monotonic() + seconds

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if time.monotonic() > deadline:
            raise TooSlow(
                f"rendering takes longer than {seconds:g}s with sample values: "
                "a loop that runs too long? every reply behind it would wait"
            )
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return template.render(values)
    finally:
        sys.settrace(previous)


def _has_fallback(expr: nodes.Node) -> bool:
    """Whether an expression says what to print instead of an empty value:
    `a or b`, `a if a else b`, `a|default(b)`."""
    if any(True for _ in _within(expr, (nodes.Or, nodes.CondExpr))):
        return True
    return any(f.name in ("default", "d") for f in _within(expr, nodes.Filter))


def _within(expr: nodes.Node, kind: Any) -> Iterator[Any]:
    """The nodes of a kind in an expression, itself included (`find_all`
    looks only below it: `{{ name }}` alone has no Name below it)."""
    if isinstance(expr, kind):
        yield expr
    yield from expr.find_all(kind)


def _guarded_names(tree: nodes.Template) -> set[str]:
    """Names the template asks about before use: `x is defined`, `x is
    undefined`, `x|default(…)`; a state may rightly not have them."""
    guarded = set()
    for node in tree.find_all((nodes.Test, nodes.Filter)):
        asks = (
            node.name in ("defined", "undefined")
            if isinstance(node, nodes.Test)
            else node.name in ("default", "d")
        )
        if asks and isinstance(node.node, nodes.Name):
            guarded.add(node.node.name)
    return guarded


def _after(slots: set[str], item: Any) -> set[str]:
    new = set(slots)
    if item.save:
        new.add(item.save)
    for action in item.actions:
        new |= set(registry.PROVIDES.get(action, ()))
    return new


def _closure(start: set[str], step: Any) -> set[str]:
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _item_shape(item: Any) -> bool:
    """Whether a button or list row is a word or a mapping with an `id`."""
    if isinstance(item, dict):
        return item.get("id") is not None
    return isinstance(item, str | int) and not isinstance(item, bool)


def _id(item: Any) -> str:
    return str(item.get("id") if isinstance(item, dict) else item)


def _title(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("title"), str):
        return item["title"]
    return None


def _rows(reply: dict) -> list[Any]:
    listing = reply.get("list")
    rows = listing.get("rows") if isinstance(listing, dict) else None
    # Rows named by a context value (`rows: commands`) are only known later.
    return rows if isinstance(rows, list) else []


# The whole project


def _project_rules(flows: dict[str, FlowSpec], templates_dir: Path) -> list[Problem]:
    problems: list[Problem] = []
    owners: dict[str, tuple[FlowSpec, int]] = {}
    for spec in flows.values():
        for i, word in enumerate(spec.start):
            if not word:
                problems.append(
                    _at(
                        spec,
                        f"start[{i}]",
                        "this start word has no letter or digit (only "
                        "punctuation, or empty): no message can match it",
                    )
                )
            elif word in owners and owners[word][0].name != spec.name:
                # Said in both files: either may be the one just edited.
                first, j = owners[word]
                for one, k, other in ((spec, i, first), (first, j, spec)):
                    message = f"start word {word!r} also starts flow {other.name!r}"
                    message += f" ({other.path.name})"
                    problems.append(_at(one, f"start[{k}]", message))
            else:
                owners.setdefault(word, (spec, i))
    problems += _commands(flows)
    problems += _handover_loops(flows)
    problems += _fallbacks(flows)
    return problems


def _never_started(flows: dict[str, FlowSpec]) -> list[Problem]:
    """A flow no message starts and no other flow hands over to: it passed,
    and could never run."""
    handed = {
        state.handover
        for spec in flows.values()
        for state in spec.states.values()
        if state.handover
    }
    return [
        _at(
            spec,
            "name",
            "nothing starts this flow: give it `start:` words, a `command:`, "
            "`start_ids:` or `start_types:`, make it the `fallback: true`, or "
            "hand over to it from a state of another flow (`handover:`)",
        )
        for spec in flows.values()
        if not _startable(spec) and spec.name not in handed
    ]


def _commands(flows: dict[str, FlowSpec]) -> list[Problem]:
    """A command is what the menus tell a driver to type: it must start its
    flow, and no other flow's."""
    problems: list[Problem] = []
    owners: dict[str, FlowSpec] = {}
    # As the router reads what a driver types: a first word, a typo.
    words = StartWords(flows.values())
    for spec in flows.values():
        if spec.command is None:
            continue
        word = command_form(str(spec.command))
        if word and spec.name not in words.said(word):
            problems.append(
                _at(
                    spec,
                    "command",
                    f"the menus say to type {spec.command!r}, but it is not one "
                    "of this flow's start words: typing it starts nothing (add "
                    f"{word!r} to `start:`)",
                )
            )
        first = owners.setdefault(word, spec)
        if first is not spec:
            # Said in both files: either may be the one just edited.
            for one, other in ((spec, first), (first, spec)):
                message = f"command {one.command!r} is also the command of "
                message += f"flow {other.name!r} ({other.path.name})"
                problems.append(_at(one, "command", message))
    return problems


def _fallbacks(flows: dict[str, FlowSpec]) -> list[Problem]:
    """More than one general fallback: the engine could not choose."""
    found = [s for s in flows.values() if s.fallback and s.audience == "anyone"]
    if len(found) < 2:
        return []  # none at all is the engine's own refusal, reported later
    return [
        _at(
            spec,
            "fallback",
            "exactly one flow for anyone may say `fallback: true`; also in "
            + ", ".join(other.path.name for other in found if other is not spec),
        )
        for spec in found
    ]


def _engine_rules(flows: dict[str, FlowSpec], templates: Templates) -> list[Problem]:
    """Whatever else the engine refuses when it compiles the whole set."""
    if not flows:
        return []
    try:
        Engine(dict(flows), Renderer(templates.dir, templates.sources))
    except FlowError as exc:
        first = next(iter(flows.values()))
        found = _LOCATED.match(str(exc))
        if found:
            return [Problem(found["path"], int(found["line"]), found["rest"])]
        return [Problem(str(first.path.parent), 1, str(exc))]
    return []


def _handover_loops(flows: dict[str, FlowSpec]) -> list[Problem]:
    """Flows whose initial path hands over, without input, back to them."""

    def immediate(name: str) -> list[str]:
        spec = flows.get(name)
        if spec is None:
            return []
        # Entering a flow reaches its initial state, then `always` hops.
        states = _closure(
            {spec.initial},
            lambda s: [t.dest for t in spec.states[s].always if t.dest in spec.states],
        )
        return [h for s in states if (h := spec.states[s].handover)]

    problems = []
    for spec in flows.values():
        if spec.name not in _closure(set(immediate(spec.name)), immediate):
            continue
        for name, state in spec.states.items():
            if state.handover in immediate(spec.name):
                problems.append(
                    _at(
                        spec,
                        f"states.{name}.handover",
                        "hands over "
                        f"to {state.handover!r}, which comes back to "
                        f"{spec.name!r} without waiting for input",
                    )
                )
    return problems
