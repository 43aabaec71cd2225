"""Fuzzing the webhook parser: no JSON value makes it raise.

Two sources of input: any JSON value at all, and the real-shaped bodies of
/work/shared/webhooks/ with one subtree replaced, removed or retyped, which
is where a parser that trusts Meta's shapes breaks. Every event found must
also survive the trip into the inbox and back (key, JSON, rebuild).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.whatsapp.events import from_json, to_json
from bot.whatsapp.payloads import parse_body

CORPUS = Path("/work/shared/webhooks")
BODIES = {
    path.name: json.loads(path.read_bytes())
    for path in sorted(CORPUS.glob("*.json"))
    if not path.name.startswith("graph_")
}

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    # Values the parser compares against, so that mutations reach deep code.
    | st.sampled_from(
        ["messages", "text", "interactive", "button_reply", "list_reply", "image"]
    )
    | st.sampled_from(["whatsapp_business_account", "statuses", "read", "failed"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node of a JSON document (dict keys, list indexes)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def replaced(document: Any, path: tuple, new: Any, *, delete: bool) -> Any:
    """A copy of `document` with the node at `path` replaced or deleted."""
    if not path:
        return new
    document = copy.deepcopy(document)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return document


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A corpus body with one node replaced by any JSON value, or removed."""
    body = BODIES[draw(st.sampled_from(sorted(BODIES)))]
    path = draw(st.sampled_from(paths(body)))
    delete = bool(path) and draw(st.booleans())
    return replaced(body, path, draw(JSON_VALUES), delete=delete)


def assert_parses_and_stores(data: Any) -> None:
    result = parse_body(data)

    for event in result.events:
        assert isinstance(event.key, str) and event.key
        stored = json.dumps(to_json(event), ensure_ascii=False)
        rebuilt = from_json(json.loads(stored))
        assert json.dumps(to_json(rebuilt), ensure_ascii=False) == stored
    assert all(isinstance(problem, str) for problem in result.problems)


def test_corpus_bodies_parse_to_events() -> None:
    # The base of the mutations: every unmutated body yields something.
    for name, body in BODIES.items():
        assert parse_body(body).events, name


@FUZZ
@given(JSON_VALUES)
def test_any_json_value_never_raises(data: Any) -> None:
    assert_parses_and_stores(data)


@FUZZ
@given(mutated_bodies())
def test_mutated_corpus_bodies_never_raise(data: Any) -> None:
    assert_parses_and_stores(data)


@FUZZ
@given(st.sampled_from(sorted(BODIES)), st.data())
def test_every_message_field_may_be_any_type(name: str, data: st.DataObject) -> None:
    # Concentrate on the messages and statuses: each field retyped at once.
    body = copy.deepcopy(BODIES[name])
    for entry in body.get("entry", []):
        for change in entry.get("changes", []):
            value = change.get("value", {})
            for item in value.get("messages", []) + value.get("statuses", []):
                for key in list(item):
                    if data.draw(st.booleans()):
                        item[key] = data.draw(JSON_VALUES)
    assert_parses_and_stores(body)
