"""Reading YAML written by people: line numbers, no tabs, no duplicate keys.

PyYAML silently keeps the last of two equal keys and reports a tab as a
puzzling token error. Product staff edit these files by hand, so this loader
rejects both with the line, and records the line of every mapping key under
a dotted path (`states.pedir_rut.on[1].to`) so that later checks can point
at the line of what they found wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot.errors import FlowError

Lines = dict[str, int]

# Keys and list items a file may read as, aliases expanded.
MAX_ENTRIES = 20_000

# Byte order marks of UTF-16, which some Windows editors save by default.
_UTF16 = (b"\xff\xfe", b"\xfe\xff")


def read_text(path: Path) -> str:
    """A file written by hand (flow, template, test), as text.

    Raises:
        FlowError: the file is not UTF-8, at the line where it stops being,
            or it is a folder.
    """
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        # "[Errno 21] Is a directory" was all a flow author read.
        raise FlowError(f"{path}:1: a folder, not a file: rename it") from None
    return decode(data, path)


def decode(data: bytes, path: Path | str) -> str:
    """UTF-8 text, with or without the byte order mark Notepad writes (kept,
    it began every reply with an invisible character).

    Raises:
        FlowError: not UTF-8, said in words, at the line of the first byte
            that is not.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if data.startswith(_UTF16):
            raise FlowError(
                f"{path}:1: the file is saved as UTF-16; save it as UTF-8"
            ) from exc
        line = data.count(b"\n", 0, exc.start) + 1
        raise FlowError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} on this "
            "line, as a Latin-1 or Windows editor writes an accent); save the "
            "file as UTF-8"
        ) from exc


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true and false.

    YAML 1.1 reads `on`, `off`, `yes`, `no`, `y` and `n` as booleans, which
    turns the `on:` key of every state into `True` and a `one_of: [si, no]`
    answer into `False`.
    """


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_yaml(text: str, path: Path | str) -> tuple[Any, Lines]:
    """Parse YAML text; return the data and the line of every key path.

    Raises:
        FlowError: tabs, a syntax error or a duplicate key, as `file:line: …`.
    """
    _reject_tabs(text, path)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise FlowError(f"{path}:{line}: invalid YAML: {_in_words(problem)}") from exc
    if node is None:
        return None, {}

    lines: Lines = {"": node.start_mark.line + 1}
    _walk(node, "", lines, path)
    data = _Loader(text).construct_document(node)
    return data, lines


# PyYAML's words for the usual slips, and what they mean to an author.
_SLIPS = (
    (
        "expected <block end>, but found",
        "the indentation does not line up: this line starts further left or "
        "right than the keys it belongs with",
    ),
    ("expected ',' or ']'", "a list opened with [ is not closed with ]"),
    ("expected ',' or '}'", "a mapping opened with { is not closed with }"),
    (
        "mapping values are not allowed here",
        "a ': ' where a value was expected: put text that holds ': ' in quotes",
    ),
    ("found unexpected end of stream", "a quote is opened and never closed"),
    (
        "found character '\\t' that cannot start any token",
        "a tab where a value begins: YAML needs spaces",
    ),
    (
        "found character",
        "a value cannot begin with this character (@, `, % and the like): "
        "put the value in quotes",
    ),
    (
        "found undefined alias",
        "a word that begins with * reads as a reference to an &anchor that "
        "does not exist: put it in quotes ('*turno')",
    ),
    (
        "expected the node content, but found '<stream end>'",
        "the file ends where a value was expected (a [ or { left open?)",
    ),
)


def _in_words(problem: str) -> str:
    for said, meant in _SLIPS:
        if problem.startswith(said):
            return f"{meant} (YAML says: {problem})"
    return problem


def line_of(lines: Lines, at: str) -> int | None:
    """The line of a dotted path, or of its nearest recorded parent."""
    while True:
        if at in lines:
            return lines[at]
        if not at:
            return None
        at = _parent(at)


def _parent(at: str) -> str:
    cut = max(at.rfind("."), at.rfind("["))
    return at[:cut] if cut > 0 else ""


def _reject_tabs(text: str, path: Path | str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            raise FlowError(
                f"{path}:{number}: a tab is used for indentation; YAML needs spaces"
            )


def _walk(node: yaml.Node, at: str, lines: Lines, path: Path | str) -> None:
    if len(lines) > MAX_ENTRIES:
        # Anchors used inside anchors used many times: 500 bytes read as
        # millions of keys (2.7 GB in `check`, then in the server's reload).
        raise FlowError(
            f"{path}:{node.start_mark.line + 1}: the file reads as more than "
            f"{MAX_ENTRIES:,} keys and items (an anchor used inside another "
            "that is used many times?); a flow has a few hundred"
        )
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise FlowError(
                    f"{path}:{line}: duplicate key {key!r} (first on line {seen[key]})"
                )
            seen[key] = line
            child = f"{at}.{key}" if at else key
            lines[child] = line
            _walk(value_node, child, lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{at}[{index}]"
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, path)
