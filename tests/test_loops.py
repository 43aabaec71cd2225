"""The event loop of `tracbot serve` (`server.event_loop`, bot/loops.py)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from bot import loops
from bot.config import load_settings
from bot.errors import ConfigError

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_keeps_the_stdlib_loop() -> None:
    assert loops.run(_loop_module(), "asyncio").startswith("asyncio")


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed here")
@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_auto_and_uvloop_run_on_uvloop_when_installed(choice: str) -> None:
    assert loops.run(_loop_module(), choice).startswith("uvloop")


def test_an_unknown_loop_names_the_setting(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  event_loop: trio\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert "server.event_loop" in str(caught.value)
    assert "auto, asyncio, uvloop" in str(caught.value)


def test_the_default_is_auto(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: 8080\n", encoding="utf-8")
    assert load_settings(path, env={}).server.event_loop == "auto"
