"""What a reply template may turn into text: never a whole record or list.

Templates get records (a trip, a saved location, a command of the menu) and
lists of them. Made text whole, any of them reaches the driver as Python's
own text, braces, quotes and ids included: `{'id': 'C14', …}`; a value that
is None reads "None". Every way a template makes text is guarded here:
`{{ value }}` (the environment's `finalize`), the filters that make text of
their value (`|upper`, `|string`, `|format`…), `~`, `%` and `str.format`.
A refused value raises `WholeValueError` (None a `RenderError`): the driver
gets the apology, the log and `tracbot check` the template's line.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import do_default, do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.errors import RenderError

# Types printed as they are, without a look at what else they might be.
_PLAIN = frozenset({str, int, float, bool})

# Filters made to take a whole record or list: they give a part of it, a
# count, or the values in another order or chosen, never text of it. Every
# other filter makes text of what it is given (|urlencode and |xmlattr make
# key=value text of every field), custom ones included, and refuses a whole
# value and None.
WHOLE_VALUE_FILTERS = frozenset(
    {
        "attr",
        "batch",
        "count",
        "d",
        "default",
        "dictsort",
        "first",
        "groupby",
        "items",
        "last",
        "length",
        "list",
        "map",
        "max",
        "min",
        "random",
        "reject",
        "rejectattr",
        "reverse",
        "select",
        "selectattr",
        "slice",
        "sort",
        "sum",
        "unique",
    }
)

# `%(name)s` in a `%` format: the value is looked up in a mapping by name.
_NAMED = re.compile(r"%\(([^)]*)\)")

# A value str.format was not given.
_MISSING = object()


class WholeValueError(RenderError):
    """A template made text of a whole record or list instead of its fields."""


def printable(value: Any) -> Any:
    """`value`, if printing it shows the driver what it means (the
    environment's `finalize`, run on every `{{ … }}`)."""
    # Most printed values are text or numbers: the checks below go through
    # the ABCs' isinstance, slow enough to show in a profile of a message.
    if type(value) in _PLAIN:
        return value
    if value is None:
        raise RenderError("a template printed a value that is None")
    if isinstance(value, Mapping):
        raise WholeValueError(
            "a template printed a whole record: print one of its fields, "
            "like {{ conductor.name }}"
        )
    # Filters such as map, batch or reverse give generators and iterators,
    # printed as "<generator object …>".
    if whole(value):
        raise WholeValueError(
            "a template printed a whole list: loop over it, like "
            "{% for item in items %}{{ item }}{% endfor %}"
        )
    return value


def whole(value: Any) -> bool:
    """Whether making text of `value` would show a whole record or list (a
    generator or a dict view included)."""
    return isinstance(
        value,
        Mapping | list | tuple | set | frozenset | range | Iterator | MappingView,
    )


def guard_filters(filters: dict[str, Callable[..., Any]]) -> None:
    """Make every filter that makes text refuse whole values, in place."""
    for name, jinja_filter in filters.items():
        if name == "join":
            filters[name] = _join
        elif name in ("default", "d"):
            filters[name] = _default
        elif name not in WHOLE_VALUE_FILTERS:
            filters[name] = _refusing_whole(name, jinja_filter)


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    # Jinja's `default` stands in for an undefined name only, and a column
    # left empty in the business data (`{{ viaje.ubicacion|default('sin
    # datos') }}`) is None: the driver got the apology instead of the
    # default the template asked for.
    if value is None:
        return default_value
    return do_default(value, default_value, boolean)


@jinja2.pass_eval_context
def _join(
    eval_ctx: EvalContext,
    value: Iterable[Any],
    d: str = "",
    attribute: str | int | None = None,
) -> str:
    # `{{ commands|join(', ') }}` printed each record as Python's text.
    items = list(value)
    if attribute is None and any(whole(item) for item in items):
        raise WholeValueError(
            "a template joined whole records: join one of their fields, like "
            "{{ items|map(attribute='name')|join(', ') }}"
        )
    return do_join(eval_ctx, items, d, attribute)


def _refusing_whole(name: str, jinja_filter: Callable[..., Any]) -> Callable[..., Any]:
    """`jinja_filter`, refusing whole records and lists among its values."""
    # A filter marked pass_context, pass_eval_context or pass_environment
    # gets that first; a context is a Mapping, and no value of the template.
    skip = 1 if getattr(jinja_filter, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(jinja_filter)  # keeps Jinja's pass_… mark
    def refusing(*args: Any, **kwargs: Any) -> Any:
        # |upper gave "NONE" and |int 0 for a value that is None.
        if len(args) > skip and args[skip] is None:
            _refuse(None, f"|{name}")
        for value in (*args[skip:], *kwargs.values()):
            if whole(value):
                _refuse(value, f"|{name}")
        return jinja_filter(*args, **kwargs)

    return refusing


class _Compiler(CodeGenerator):
    """Jinja's compiler, with `~` joining through `join_text`.

    Jinja compiles `{{ conductor ~ "" }}` to `str()` of each side, before
    `finalize` sees anything.
    """

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # The compiled template sees its environment as `environment`.
        self.write("environment.join_text((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with `~`, `%` and `str.format` refusing whole values."""

    code_generator_class = _Compiler
    intercepted_binops = frozenset({"%"})

    @staticmethod
    def join_text(values: Iterable[Any]) -> str:
        """What `a ~ b` gives, refusing what `printable` refuses."""
        parts = []
        for value in values:
            if value is None:
                raise RenderError("a template joined a value that is None with ~")
            if type(value) not in _PLAIN and whole(value):
                raise WholeValueError(
                    "a template joined a whole record or list with ~: join one "
                    "of its fields, like {{ conductor.name ~ '!' }}"
                )
            parts.append(str(value))
        return "".join(parts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text: str = value.__self__
        by_name = value.__name__ == "format_map"

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            if by_name:
                _check_format(text, (), args[0] if args else {})
            else:
                _check_format(text, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked


def _check_percent(text: str, values: Any) -> None:
    # `'%s' % conductor` is Python's text of it; `'%(name)s' % conductor`
    # one of its fields, and a tuple holds the values of several `%s`.
    if isinstance(values, Mapping) and _NAMED.search(text):
        chosen = [values.get(name) for name in _NAMED.findall(text)]
    elif isinstance(values, tuple):
        chosen = list(values)
    else:
        chosen = [values]
    for value in chosen:
        if value is None or whole(value):
            _refuse(value, "%")


def _check_format(text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    # Only a bare field ({} {0} {viaje}) is the value itself; {0.patente}
    # and {viaje[patente]} reach into it through the sandbox.
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text)]
    except ValueError:
        return  # str.format itself says what is wrong with the text
    automatic = 0
    for field in fields:
        if field is None or "." in field or "[" in field:
            continue
        if field == "":
            field, automatic = str(automatic), automatic + 1
        if field.isdigit():
            index = int(field)
            value = args[index] if index < len(args) else _MISSING
        else:
            value = kwargs.get(field, _MISSING)
        # A missing value: str.format says so itself.
        if value is not _MISSING and (value is None or whole(value)):
            _refuse(value, "str.format")


def _refuse(value: Any, how: str) -> None:
    if value is None:
        raise RenderError(f"a template made text of a value that is None with {how}")
    raise WholeValueError(
        f"a template made text of a whole record or list with {how}: print one "
        "of its fields"
    )
