"""Rendering reply texts from `message_templates/` in a Jinja sandbox.

A template can only read the values it is given: the sandbox blocks access
to Python internals, an undefined variable is an error (never an empty
string), and printing `None` is an error too. A driver never sees a
traceback, `None` or a raw `{{ placeholder }}`; when a template fails at run
time the driver gets a short apology and the operator gets the log line.

A `Renderer` holds a copy of the template files taken when it is built, not
the folder: an edit reaches drivers only when hot reload has checked it and
swapped in a new renderer (Jinja would otherwise re-read a changed file).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import do_join
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.errors import FlowError, RenderError

log = logging.getLogger("tracbot.engine")

SUFFIX = ".j2"
APOLOGY = (
    "Lo siento, tuvimos un problema al preparar tu respuesta. "
    "Intenta de nuevo en unos minutos."
)


# Types printed as they are, without a look at what else they might be.
_PLAIN = frozenset({str, int, float, bool})


class WholeValueError(RenderError):
    """A template printed a whole record or list instead of its fields."""


def _printable(value: Any) -> Any:
    # Most printed values are text or numbers: the checks below go through
    # the ABCs' isinstance, slow enough to show in a profile of a message.
    if type(value) in _PLAIN:
        return value
    if value is None:
        raise RenderError("a template printed a value that is None")
    # A whole record or list would reach the driver as Python's own text,
    # ids and quotes included: {'id': 'C14', 'name': …}.
    if isinstance(value, Mapping):
        raise WholeValueError(
            "a template printed a whole record: print one of its fields, "
            "like {{ conductor.name }}"
        )
    # Filters such as map, batch or reverse give generators and iterators,
    # printed as "<generator object …>".
    if _whole(value):
        raise WholeValueError(
            "a template printed a whole list: loop over it, like "
            "{% for item in items %}{{ item }}{% endfor %}"
        )
    return value


def template_line(exc: BaseException) -> int:
    """The template line an error was raised on, from its traceback (Jinja
    maps its compiled code's lines to the template's); 1 if none."""
    tb = exc.__traceback__
    line = 1
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename == "<template>" or filename.endswith(SUFFIX):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def read_templates(templates_dir: Path) -> dict[str, str]:
    """The text of every `.j2` file of a folder, by file name.

    Raises:
        FlowError: a file is not UTF-8 text.
    """
    sources = {}
    for path in sorted(templates_dir.glob(f"*{SUFFIX}")):
        try:
            sources[path.name] = path.read_text("utf-8")
        except FileNotFoundError:
            continue  # deleted since the folder was listed
        except (OSError, UnicodeDecodeError) as exc:
            raise FlowError(f"{path}:1: cannot read the template: {exc}") from exc
    return sources


class _Compiler(CodeGenerator):
    """Jinja's compiler, with `~` joining through `_join_text`.

    Jinja compiles `{{ conductor ~ "" }}` to `str()` of each side, before
    `finalize` (`_printable`) sees anything: a whole record reached the
    driver as Python's text, and a value that was None as "None".
    """

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # The compiled template sees its environment as `environment`.
        self.write("environment.join_text((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = _Compiler

    @staticmethod
    def join_text(values: Iterable[Any]) -> str:
        """What `a ~ b` gives, refusing what `_printable` refuses."""
        parts = []
        for value in values:
            if value is None:
                raise RenderError("a template joined a value that is None with ~")
            if type(value) not in _PLAIN and _whole(value):
                raise WholeValueError(
                    "a template joined a whole record or list with ~: join one "
                    "of its fields, like {{ conductor.name ~ '!' }}"
                )
            parts.append(str(value))
        return "".join(parts)


def make_environment(sources: dict[str, str]) -> ImmutableSandboxedEnvironment:
    """Return the sandboxed environment every reply is rendered in."""
    env = _Environment(
        loader=jinja2.DictLoader(dict(sources)),
        auto_reload=False,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_printable,
    )
    # These make text of whole records before `_printable` sees the value.
    env.filters["join"] = _join
    for name in ("string", "format", "pprint", "replace", "tojson"):
        env.filters[name] = _refusing_whole(name, env.filters[name])
    return env


@jinja2.pass_eval_context
def _join(
    eval_ctx: EvalContext,
    value: Iterable[Any],
    d: str = "",
    attribute: str | int | None = None,
) -> str:
    # `{{ commands|join(', ') }}` printed each record as Python's text.
    items = list(value)
    if attribute is None and any(_whole(item) for item in items):
        raise WholeValueError(
            "a template joined whole records: join one of their fields, like "
            "{{ items|map(attribute='name')|join(', ') }}"
        )
    return do_join(eval_ctx, items, d, attribute)


def _refusing_whole(name: str, jinja_filter: Callable[..., Any]) -> Callable[..., Any]:
    """`jinja_filter`, refusing whole records and lists among its values."""

    @functools.wraps(jinja_filter)  # keeps Jinja's pass_eval_context mark
    def refusing(*args: Any, **kwargs: Any) -> Any:
        if any(_whole(value) for value in (*args, *kwargs.values())):
            raise WholeValueError(
                f"a template made text of a whole record or list with |{name}: "
                "print one of its fields"
            )
        return jinja_filter(*args, **kwargs)

    return refusing


def _whole(value: Any) -> bool:
    """Whether printing `value` would show a whole record or list (a
    generator or a dict view included)."""
    return isinstance(
        value,
        Mapping | list | tuple | set | frozenset | range | Iterator | MappingView,
    )


def template_file(name: str) -> str:
    """Return the file name of a template named in a flow (`.j2` optional)."""
    return name if name.endswith(SUFFIX) else name + SUFFIX


class Renderer:
    """Renders named templates from a copy of the folder taken when built."""

    def __init__(
        self, templates_dir: Path, sources: dict[str, str] | None = None
    ) -> None:
        """Copy the templates of `templates_dir` (or use `sources`, by file name).

        Raises:
            FlowError: a template file cannot be read as UTF-8 text.
        """
        self.templates_dir = templates_dir
        if sources is None:
            sources = read_templates(templates_dir)
        self.sources = dict(sources)
        self.env = make_environment(sources)

    @property
    def version(self) -> str:
        """A hash of every template's name and text (the reload log shows it)."""
        digest = hashlib.sha256()
        for name, text in sorted(self.sources.items()):
            digest.update(f"{name}\0{text}\0".encode())
        return digest.hexdigest()

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render a template to the text a driver will read.

        Raises:
            RenderError: the template is missing, fails, or renders nothing.
        """
        try:
            template = self.env.get_template(template_file(name))
            text = template.render(context).strip()
        except RenderError as exc:
            # Raised by a guard while the template ran: say where.
            where = f"{self.templates_dir / template_file(name)}:{template_line(exc)}"
            raise type(exc)(f"{where}: {exc}") from exc
        except jinja2.TemplateError as exc:
            where = getattr(exc, "lineno", None)
            line = f" line {where}" if where else ""
            raise RenderError(f"template {name}{line}: {exc}") from exc
        except Exception as exc:
            # A filter or a value's __str__ can raise anything; the driver
            # still gets the apology, and the operator the cause.
            raise RenderError(f"template {name}: {type(exc).__name__}: {exc}") from exc

        if not text:
            raise RenderError(f"template {name} rendered an empty message")
        return text

    def render_or_apologise(self, name: str, context: dict[str, Any]) -> str:
        """Render, or log the failure and return the apology text."""
        try:
            return self.render(name, context)
        except RenderError as exc:
            log.error("reply failed template=%s error=%s", name, exc)
            return APOLOGY
