"""docs/flows.md lists every condition and action a flow can name."""

from __future__ import annotations

import re

from bot.engine import registry
from bot.engine.engine import Engine  # noqa: F401  registers the Tracmin hooks
from tests.engine.project import REPO

DOC = (REPO / "docs" / "flows.md").read_text("utf-8")


def documented(header: str) -> dict[str, str]:
    """The first column and the rest of each row of the table under `header`."""
    table = DOC.split(f"| {header} |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \|(.*)$", table, re.MULTILINE)
    return dict(rows)


def test_every_condition_is_documented_and_nothing_else():
    assert sorted(documented("condition")) == sorted(registry.CONDITIONS)


def test_every_action_is_documented_with_the_slots_it_sets():
    rows = documented("action")
    assert sorted(rows) == sorted(registry.ACTIONS)
    for name, rest in rows.items():
        slots = re.findall(r"`([a-z_]+)`", rest.rsplit("|", 2)[-2])
        assert slots == list(registry.PROVIDES.get(name, ())), name
