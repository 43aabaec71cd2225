"""The flow that docs/flows.md shows as "small but complete" is one that
`tracbot check` accepts with the shipped templates and Tracmin's actions:
copied as it is, it gave six errors (an action and two templates that did
not exist, variables no step provided)."""

from __future__ import annotations

import re

from bot.engine.check import check_project
from tests.engine.project import REPO, make_project


def documented_flow() -> str:
    doc = (REPO / "docs" / "flows.md").read_text("utf-8")
    section = doc[doc.index("## A flow file") :]
    found = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert found is not None, "no yaml example under '## A flow file'"
    return found.group(1)


def test_the_documented_flow_passes_the_checker(tmp_path):
    flow = documented_flow()
    assert "name: vincular" in flow
    # It stands in for the shipped VINCULAR, as an author would edit it.
    make_project(tmp_path, {"vincular": flow})
    found = check_project(tmp_path / "flows", tmp_path / "message_templates")
    assert [str(problem) for problem in found] == []
