"""Settings of the backend API: bearer tokens and their roles.

Tokens never live in config.yaml: each entry of `api.tokens` names the
environment variable that holds one. In demo mode (no WhatsApp access
token) an unset variable falls back to a fixed, public demo token, which is
harmless because a demo binds to loopback only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from bot.errors import ConfigError

ROLES = frozenset({"backend", "admin"})

# Public values, documented in config.yaml: they open nothing outside a demo.
DEMO_TOKENS = {
    "TRACBOT_API_TOKEN_BACKEND": "demo-backend-token",
    "TRACBOT_API_TOKEN_ADMIN": "demo-admin-token",
}
DEFAULT_TOKENS = (
    {"env": "TRACBOT_API_TOKEN_BACKEND", "roles": ["backend"]},
    {"env": "TRACBOT_API_TOKEN_ADMIN", "roles": ["backend", "admin"]},
)


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One bearer token; `env` names where it came from, for logs."""

    env: str
    token: str = field(repr=False)
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The `api:` section of config.yaml, tokens read from the environment."""

    tokens: tuple[ApiToken, ...] = ()
    unset: tuple[str, ...] = ()
    default_region: str = "CL"
    timezone: str = "America/Santiago"
    max_page: int = 200


def parse_api(path: Any, data: Any, env: Mapping[str, str], demo: bool) -> ApiSettings:
    """Read the `api:` section of config.yaml and the tokens it names.

    Raises:
        ConfigError: naming the file and the setting at fault.
    """
    data = data if data is not None else {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: api: expected a mapping")

    tokens, unset = [], []
    for index, entry in enumerate(data.get("tokens") or DEFAULT_TOKENS):
        where = f"{path}: api.tokens[{index}]"
        var, roles = _token_entry(where, entry)
        # Trimmed as the secrets are (bot/config.py); blank is unset.
        value = (env.get(var) or "").strip() or (DEMO_TOKENS.get(var) if demo else None)
        if value:
            tokens.append(ApiToken(var, value, roles))
        else:
            unset.append(
                f"{var} is not set"
                if env.get(var) is None
                else f"{var} is set but blank"
            )

    region = _text(path, data, "default_region", "CL")
    if region not in phonenumbers.SUPPORTED_REGIONS:
        # XX read every national number as invalid: each send a 400.
        raise ConfigError(
            f"{path}: api.default_region: expected a country code like CL, "
            f"got {region!r}"
        )
    timezone = _text(path, data, "timezone", "America/Santiago")
    try:
        ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):
        # Found out at the first alert otherwise, as a failed request.
        raise ConfigError(
            f"{path}: api.timezone: expected a zone like America/Santiago, "
            f"got {timezone!r}"
        ) from None
    max_page = data.get("max_page", 200)
    if isinstance(max_page, bool) or not isinstance(max_page, int) or max_page < 1:
        raise ConfigError(f"{path}: api.max_page: expected a positive integer")
    return ApiSettings(
        tokens=tuple(tokens),
        unset=tuple(unset),
        default_region=region,
        timezone=timezone,
        max_page=max_page,
    )


def _token_entry(where: str, entry: Any) -> tuple[str, frozenset[str]]:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with env and roles")
    var, roles = entry.get("env"), entry.get("roles")
    if not isinstance(var, str) or not var:
        raise ConfigError(f"{where}.env: expected an environment variable name")
    if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
        raise ConfigError(
            f"{where}.roles: expected a list of {', '.join(sorted(ROLES))}, "
            f"got {roles!r}"
        )
    return var, frozenset(roles)


def _text(path: Any, data: Mapping[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: api.{key}: expected a non-empty string")
    return value
