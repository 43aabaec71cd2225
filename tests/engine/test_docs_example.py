"""The flow that docs/flows.md shows as "small but complete" is one that
`tracbot check` accepts with the shipped templates and Tracmin's actions:
copied as it is, it gave six errors (an action and two templates that did
not exist, variables no step provided)."""

from __future__ import annotations

from bot.engine.check import check_project
from tests.engine.project import documented, make_project


def test_the_documented_flow_passes_the_checker(tmp_path):
    flow = documented("## A flow file", "yaml")
    assert "name: vincular" in flow
    # It stands in for the shipped VINCULAR, as an author would edit it.
    make_project(tmp_path, {"vincular": flow})
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    assert [str(problem) for problem in found] == []
