"""Approved message templates and the 24-hour customer-service window.

Outside the window Meta accepts only approved templates (CLOUD_API.md §11).
`config.yaml` declares Tracmin's templates under `templates:`, each with the
name and language Meta approved and the names of its body parameters in
order; a message queued with a fallback carries the template body built
here, and the sender sends that instead when the window is closed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.errors import ConfigError
from bot.whatsapp.limits import (
    MAX_PARAMETER,
    between_characters,
    clean_parameter,
    split_text,
)
from bot.whatsapp.messages import template_body

WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """One approved template: its name, language and body parameters."""

    key: str
    name: str
    language: str
    parameters: tuple[str, ...]

    def body(self, to: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The template message for `to`, parameters taken from `values`."""
        filled = [_parameter(values.get(name)) for name in self.parameters]
        return template_body(to, self.name, self.language, filled)


def template_parts(text: str) -> list[str]:
    """`text` on one line, in parts that each fit one template parameter."""
    return split_text(clean_parameter(text), MAX_PARAMETER)


def window_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    """Whether a free-form message may reach a phone that last wrote then."""
    return last_inbound_at is not None and now - last_inbound_at < WINDOW


class WindowStarts:
    """When phones last wrote, as the steps of this process committed it.

    A conversation's window start only ever moves later (the dispatcher
    never moves one back), so a start committed once keeps the window open
    until it runs out: the sender asks the store only about phones not
    known here to have written in the last 24 hours. It asked about every
    take's phones, a read that was 3 % of the processing thread under load
    (bench/README.md, thirteenth pass). What the store answers is not kept:
    a message still waiting counts from its arrival there, and a
    redelivered old one, once handled, from its own earlier time.
    """

    def __init__(self, most: int = 10_000) -> None:
        self._starts: dict[str, datetime] = {}
        self._most = most

    def open(self, wa_id: str, now: datetime) -> bool:
        """Whether a free-form message may reach `wa_id` now, as known here."""
        return window_open(self._starts.get(wa_id), now)

    def learn(self, wa_id: str, start: datetime) -> None:
        """Keep a committed window start, if later than the one known."""
        known = self._starts.get(wa_id)
        if known is not None and known >= start:
            return
        if known is None and len(self._starts) >= self._most:
            self._starts.clear()
        self._starts[wa_id] = start


# What each entry of `templates:` carries a message for: the notifications
# of bot/api/notifications.py and the free text of `send_text`.
USES = ("trip_status", "guide_created", "alert", "text")
ENTRY_KEYS = ("name", "language", "parameters")


def parse_templates(path: Any, data: Any) -> dict[str, TemplateSpec]:
    """Read the `templates:` section of config.yaml.

    Raises:
        ConfigError: naming the file and the setting at fault.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: templates: expected a mapping")
    return {key: _spec(path, key, entry) for key, entry in data.items()}


def _spec(path: Any, key: str, entry: Any) -> TemplateSpec:
    where = f"{path}: templates.{key}"
    if key not in USES:
        # A misspelt use (`alertt`) left the alert without its template.
        raise ConfigError(f"{where}: unknown use (known: {', '.join(USES)})")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with name and language")
    unknown = sorted(set(map(str, entry)) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown setting (known: {', '.join(ENTRY_KEYS)})"
        )
    name, language = entry.get("name"), entry.get("language", "es")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: expected the approved template name")
    if not isinstance(language, str) or not re.fullmatch(
        r"[a-z]{2,3}(_[A-Z]{2})?", language
    ):
        raise ConfigError(
            f"{where}.language: expected a code like es or es_CL, got {language!r}"
        )
    parameters = entry.get("parameters") or []
    if not isinstance(parameters, list) or not all(
        isinstance(p, str) and p for p in parameters
    ):
        raise ConfigError(f"{where}.parameters: expected a list of names")
    return TemplateSpec(key, name, language, tuple(parameters))


def _parameter(value: Any) -> str:
    text = clean_parameter("" if value is None else str(value))
    if len(text) > MAX_PARAMETER:
        text = text[: between_characters(text, MAX_PARAMETER - 1)] + "…"
    return text or "-"
