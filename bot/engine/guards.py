"""What a reply template may turn into text: never a whole record or list.

Templates get records (a trip, a saved location, a command of the menu) and
lists of them. Made text whole, any of them reaches the driver as Python's
own text, braces, quotes and ids included: `{'id': 'C14', …}`; a value that
is None reads "None", a function or one of Jinja's objects "<built-in
method …>" or "<Namespace …>". Every way a template makes text is guarded
here: `{{ value }}` (the environment's `finalize`), the filters that make
text of their value (`|upper`, `|string`, `|join`…), `~`, `%` and
`str.format`.
A refused value raises `WholeValueError` (None a `RenderError`): the driver
gets the apology, the log and `tracbot check` the template's line.
"""

from __future__ import annotations

import functools
import types
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MappingView,
    MutableMapping,
)
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import do_default, do_join, make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Cycler, Namespace
from markupsafe import Markup

from bot.errors import RenderError

# Types printed as they are, without a look at what else they might be.
_PLAIN = frozenset({str, int, float, bool})

# The most items a template may build with `*` or `range`: a WhatsApp text
# holds 4,096 characters. Without it, `"x" * 300000000` took 300 MB, and
# nested `range(100000)` loops ran for hours in the checker and the reload.
MAX_BUILT = 10_000
# The largest exponent of `**`: 10 ** 10 ** 7 is a number of ten million
# digits, built before anything is printed.
MAX_EXPONENT = 64


class TooBig(RenderError):
    """A template built more than a reply can hold (see MAX_BUILT)."""


def bounded_range(*args: int) -> range:
    """`range` for templates, of at most MAX_BUILT numbers."""
    numbers = range(*args)
    if len(numbers) > MAX_BUILT:
        raise TooBig(
            f"a template asked for a range of {len(numbers):,} numbers; "
            f"at most {MAX_BUILT:,}"
        )
    return numbers


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if (
            isinstance(seq, str | list | tuple)
            and isinstance(times, int)
            and len(seq) * times > MAX_BUILT
        ):
            raise TooBig(
                f"a template built {len(seq) * times:,} items with *; "
                f"at most {MAX_BUILT:,}"
            )


def _check_power(left: Any, right: Any) -> None:
    if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
        raise TooBig(
            f"a template raised a number to the power {right}; at most {MAX_EXPONENT}"
        )


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

# Jinja's own objects, printed as "<Namespace {…}>", "<LoopContext 1/3>"…
_OPAQUE = (Namespace, Cycler, LoopContext, jinja2.runtime.TemplateReference)


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
    if opaque(value):
        raise WholeValueError(_opaque_said(value, "printed"))
    return value


def whole(value: Any) -> bool:
    """Whether making text of `value` would show a whole record or list (a
    generator or a dict view included)."""
    return isinstance(
        value,
        Mapping | list | tuple | set | frozenset | range | Iterator | MappingView,
    )


def opaque(value: Any) -> bool:
    """Whether `value` is a function or an object of Jinja's whose text is
    Python's (`{{ conductor.items }}`, `{{ self }}`, a macro not called)."""
    if isinstance(value, jinja2.Undefined):
        return False  # its own error names what is undefined
    if getattr(type(value), "template_value", False):
        return False  # says it prints as a value (`tracbot check`'s stand-in)
    return callable(value) or isinstance(value, _OPAQUE)


def check_text(value: Any, how: str) -> None:
    """Refuse `value` as a part of text made `how` (`~`, `%`, `|upper`…).

    Raises:
        RenderError: `value` is None.
        WholeValueError: a whole record or list, or a Python object.
    """
    if type(value) in _PLAIN:
        return
    if value is None:
        raise RenderError(f"a template made text of a value that is None with {how}")
    if whole(value):
        raise WholeValueError(
            f"a template made text of a whole record or list with {how}: print "
            "one of its fields"
        )
    if opaque(value):
        raise WholeValueError(_opaque_said(value, f"made text with {how} of"))


def _opaque_said(value: Any, did: str) -> str:
    kind = type(value).__name__
    return (
        f"a template {did} a Python object ({kind}), not a value: call it or "
        "print one of its fields"
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
    # `{{ commands|join(', ') }}` printed each record as Python's text, and
    # `attribute=` can pick a record, or None, as well as a field.
    items = list(value)
    if attribute is not None:
        items = list(map(make_attrgetter(eval_ctx.environment, attribute), items))
    check_text(d, "|join")
    for item in items:
        if item is not None and whole(item):
            raise WholeValueError(
                "a template joined whole records: join one of their fields, like "
                "{{ items|map(attribute='name')|join(', ') }}"
            )
        check_text(item, "|join")
    return do_join(eval_ctx, items, d)


def _refusing_whole(name: str, jinja_filter: Callable[..., Any]) -> Callable[..., Any]:
    """`jinja_filter`, refusing whole records and lists among its values."""
    # A filter marked pass_context, pass_eval_context or pass_environment
    # gets that first; a context is a Mapping, and no value of the template.
    skip = 1 if getattr(jinja_filter, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(jinja_filter)  # keeps Jinja's pass_… mark
    def refusing(*args: Any, **kwargs: Any) -> Any:
        # |upper gave "NONE", |int 0, |replace('X', none) "None".
        for value in (*args[skip:], *kwargs.values()):
            check_text(value, f"|{name}")
        return jinja_filter(*args, **kwargs)

    return refusing


class _Compiler(CodeGenerator):
    """Jinja's compiler, with `~` joining through `join_text`.

    Jinja compiles `{{ conductor ~ "" }}` to `str()` of each side, before
    `finalize` sees anything.
    """

    def _output_child_to_const(
        self, node: nodes.Expr, frame: Frame, finalize: Any
    ) -> str:
        # A `~` of literals (`{{ {'id': 1} ~ '' }}`, `{{ none ~ '!' }}`) was
        # made text here, while compiling, by str() of each side.
        if isinstance(node, nodes.Concat) or any(node.find_all(nodes.Concat)):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

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
    intercepted_binops = frozenset({"%", "*", "**"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = bounded_range

    def make_globals(self, d: MutableMapping[str, Any] | None) -> dict[str, Any]:
        # Jinja chains the environment's globals behind each template's, and
        # every render copied that ChainMap twice (a third of the render of a
        # short reply). Our globals are set once, before any template loads,
        # so a plain snapshot is the same map.
        return {**self.globals, **(d or {})}

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
            check_text(value, "~")
            parts.append(str(value))
        return "".join(parts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            right = _percent_values(left, right)
        if operator == "*":
            _check_repeat(left, right)
        if operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`text.format` and `text.format_map`, each field checked as the
        formatter turns it into text (`{0[camion]}`, `{0:{1}}` included)."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        text = value.__self__
        if value.__name__ not in ("format", "format_map") or not isinstance(text, str):
            return None
        formatter: SandboxedFormatter
        if isinstance(text, Markup):
            formatter = _CheckedEscapeFormatter(self, escape=text.escape)
        else:
            formatter = _CheckedFormatter(self)
        by_name = value.__name__ == "format_map"

        def formatted(*args: Any, **kwargs: Any) -> str:
            if by_name:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                args, kwargs = (), args[0]
            return type(text)(formatter.vformat(text, args, kwargs))

        return functools.update_wrapper(formatted, value)


class _Checks:
    """A formatter's `format_field`, refusing what `check_text` refuses."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_text(value, "str.format")
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _CheckedFormatter(_Checks, SandboxedFormatter):
    pass


class _CheckedEscapeFormatter(_Checks, SandboxedEscapeFormatter):
    pass


class _CheckedValues(Mapping[Any, Any]):
    """The mapping of a `'%(name)s' % record`: each value Python takes out
    is checked; the mapping itself never becomes text."""

    def __init__(self, values: Mapping[Any, Any]) -> None:
        self._values = values

    def __getitem__(self, key: Any) -> Any:
        value = self._values[key]
        check_text(value, "%")
        return value

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __str__(self) -> str:
        check_text(self._values, "%")
        return ""

    __repr__ = __str__


def _percent_values(text: str, values: Any) -> Any:
    # `'%s' % conductor` is Python's text of it; `'%(name)s' % conductor`
    # one of its fields, and a tuple holds the values of several `%s`.
    if isinstance(values, tuple):
        for value in values:
            check_text(value, "%")
        return values
    if isinstance(values, Mapping) and "%(" in text.replace("%%", ""):
        return _CheckedValues(values)
    check_text(values, "%")
    return values
