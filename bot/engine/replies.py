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

import hashlib
import logging
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.engine.guards import GuardedEnvironment, guard_filters, printable
from bot.engine.source import read_text
from bot.errors import FlowError, RenderError

log = logging.getLogger("tracbot.engine")

SUFFIX = ".j2"
APOLOGY = (
    "Lo siento, tuvimos un problema al preparar tu respuesta. "
    "Intenta de nuevo en unos minutos."
)


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
            sources[path.name] = read_text(path)
        except FileNotFoundError:
            continue  # deleted since the folder was listed
        except OSError as exc:
            raise FlowError(f"{path}:1: cannot read the template: {exc}") from exc
    return sources


def make_environment(sources: dict[str, str]) -> ImmutableSandboxedEnvironment:
    """Return the sandboxed environment every reply is rendered in."""
    env = GuardedEnvironment(
        loader=jinja2.DictLoader(dict(sources)),
        auto_reload=False,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=printable,
    )
    guard_filters(env.filters)
    return env


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
        except jinja2.TemplateNotFound as exc:
            raise RenderError(f"template {name}: no such file {exc}") from exc
        except jinja2.TemplateSyntaxError as exc:
            where = f"{self.templates_dir / template_file(name)}:{exc.lineno}"
            raise RenderError(f"{where}: {exc.message}") from exc

        # Whatever fails while it runs is told with the file and the line it
        # ran (a guard, an undefined name, a filter or a value's __str__,
        # which can raise anything); the driver gets the apology.
        try:
            text = template.render(context).strip()
        except Exception as exc:
            where = f"{self.templates_dir / template.name}:{template_line(exc)}"
            if isinstance(exc, RenderError):
                raise type(exc)(f"{where}: {exc}") from exc
            if isinstance(exc, jinja2.TemplateError):
                raise RenderError(f"{where}: {exc}") from exc
            raise RenderError(f"{where}: {type(exc).__name__}: {exc}") from exc

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
