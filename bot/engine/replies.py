"""Rendering reply texts from `message_templates/` in a Jinja sandbox.

A template can only read the values it is given: the sandbox blocks access
to Python internals, an undefined variable is an error (never an empty
string), and printing `None` is an error too. A driver never sees a
traceback, `None` or a raw `{{ placeholder }}`; when a template fails at run
time the driver gets a short apology and the operator gets the log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.errors import RenderError

log = logging.getLogger("tracbot.engine")

SUFFIX = ".j2"
APOLOGY = (
    "Lo siento, tuvimos un problema al preparar tu respuesta. "
    "Intenta de nuevo en unos minutos."
)


def _no_none(value: Any) -> Any:
    if value is None:
        raise RenderError("a template printed a value that is None")
    return value


def make_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    """Return the sandboxed environment every reply is rendered in."""
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(templates_dir, encoding="utf-8"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_no_none,
    )


def template_file(name: str) -> str:
    """Return the file name of a template named in a flow (`.j2` optional)."""
    return name if name.endswith(SUFFIX) else name + SUFFIX


class Renderer:
    """Renders named templates; loaded templates are cached by Jinja."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = make_environment(templates_dir)

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render a template to the text a driver will read.

        Raises:
            RenderError: the template is missing, fails, or renders nothing.
        """
        try:
            template = self.env.get_template(template_file(name))
            text = template.render(context).strip()
        except RenderError:
            raise
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
