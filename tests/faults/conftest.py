"""Fixtures of the fault suite: a real server and simulator per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import Stack


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start stacks on demand; every one is stopped after the test."""
    started: list[Stack] = []

    def make(**options: object) -> Stack:
        # Kept before it starts: a server that fails to start must not
        # leave its simulator running.
        stack = Stack(tmp_path, **options)  # type: ignore[arg-type]
        started.append(stack)
        return stack.start()

    yield make
    for stack in started:
        stack.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session
