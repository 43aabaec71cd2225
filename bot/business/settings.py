"""The `business:` section of config.yaml, parsed into frozen settings.

It names the business database (`url`, overridden by TRACBOT_BUSINESS_URL),
the fixture the demo database is built from, the administrators' numbers,
the limit on wrong linking attempts, how long a phone found not on file is
not looked up again, and the named queries the flows run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import ConfigError

DEFAULT_URL = "sqlite:///var/business.db"


@dataclass(frozen=True, slots=True)
class BusinessSettings:
    url: str
    fixture: Path | None
    admins: frozenset[str]
    link_attempts_per_hour: int
    timeout_seconds: float
    queries: Mapping[str, str] = field(default_factory=dict)
    # How long "this phone is not on file" is believed before asking again.
    phone_recheck_seconds: float = 60.0

    @property
    def sqlite_path(self) -> Path | None:
        """The file of a SQLite business database, else None."""
        if not self.url.startswith("sqlite:///"):
            return None
        return Path(self.url.removeprefix("sqlite://").removeprefix("/"))


def business_settings(
    settings: Settings, env: Mapping[str, str] | None = None
) -> BusinessSettings:
    """Read the `business:` section of a loaded configuration.

    Raises:
        ConfigError: a value has the wrong type; the message names the file
            and the key.
    """
    env = os.environ if env is None else env
    raw = settings.raw.get("business") or {}
    where = f"{settings.path}: business"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    base = settings.path.resolve().parent

    url = env.get("TRACBOT_BUSINESS_URL") or _text(raw, "url", where, DEFAULT_URL)
    fixture = raw.get("fixture")
    return BusinessSettings(
        url=_anchor(url, base),
        fixture=base / _text(raw, "fixture", where, "") if fixture else None,
        admins=frozenset(_digits(a) for a in _list(raw, "admins", where)),
        link_attempts_per_hour=int(_number(raw, "link_attempts_per_hour", where, 3)),
        timeout_seconds=float(_number(raw, "timeout_seconds", where, 5)),
        queries=_queries(raw, where),
        phone_recheck_seconds=float(_number(raw, "phone_recheck_seconds", where, 60)),
    )


def _queries(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    queries = raw.get("queries") or {}
    if not isinstance(queries, Mapping):
        raise ConfigError(f"{where}.queries: expected a mapping of name: SQL")
    for name, sql in queries.items():
        if not isinstance(sql, str) or not sql.strip():
            raise ConfigError(f"{where}.queries.{name}: expected the SQL text")
    return {str(name): sql.strip() for name, sql in queries.items()}


def _text(raw: Mapping[str, Any], key: str, where: str, default: str) -> str:
    # Left empty (`url:`), a setting takes its default, as everywhere else.
    value = default if raw.get(key) is None else raw[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected a text, got {value!r}")
    return value


def _number(raw: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = default if raw.get(key) is None else raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}.{key}: expected a number >= 0, got {value!r}")
    return value


def _list(raw: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{key}: expected a list, got {value!r}")
    return [str(v) for v in value]


def _digits(phone: str) -> str:
    # Admins may be written +56 9 1234 5678; wa_ids are digits only.
    return "".join(ch for ch in phone if ch.isdigit())


def _anchor(url: str, base: Path) -> str:
    # A relative SQLite path is relative to the config file, not the cwd.
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{base / url.removeprefix('sqlite:///')}"
    return url
