"""The YAML conversation tests of tests/conversations/, one pytest test a case.

Each case runs through the whole service (see bot/engine/convtest.py); a
failing case shows the step, its line and what differed.
"""

from __future__ import annotations

import pytest

from bot.engine.convtest import load_cases, run_case
from tests.engine.project import REPO

CONFIG = REPO / "config.yaml"
FILES = sorted((REPO / "tests" / "conversations").glob("*.yaml"))
CASES = [case for path in FILES for case in load_cases(path)]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.path.stem}:{c.line}:{c.name}" for c in CASES]
)
async def test_conversation(case):
    result, _ = await run_case(case, CONFIG)
    assert result.passed, "\n".join([case.where, *result.failures])


def test_conversation_files_exist():
    names = {path.name for path in FILES}
    assert {"ayuda.yaml", "no_entendi.yaml", "cancelar.yaml"} <= names
