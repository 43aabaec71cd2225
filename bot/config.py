"""Settings: `config.yaml` parsed once into frozen dataclasses.

Secrets never live in the file: it names the environment variable that
holds each one. With no access token configured tracbot runs in demo mode:
the Graph API simulator in-process and demo values for the other secrets.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bot.api.settings import ApiSettings, parse_api
from bot.errors import ConfigError
from bot.whatsapp.templates import TemplateSpec, parse_templates

DEFAULT_BASE_URL = "https://graph.facebook.com"
# The backends storage.create_store knows.
STORAGE_SCHEMES = ("sqlite", "postgres", "postgresql", "odbc")
# Phones whose messages are handled at once, unless config.yaml says.
CONCURRENT_PHONES = 64
DEMO_SECRETS = {
    "phone_number_id": "200000000000002",
    "business_account_id": "100000000000001",
    "verify_token": "demo-verify-token",
    "app_secret": "demo-app-secret",
}
SECRET_NAMES = {
    "access_token": "WHATSAPP_API_TOKEN",
    "phone_number_id": "WHATSAPP_PHONE_NUMBER_ID",
    "business_account_id": "WHATSAPP_BUSINESS_ACCOUNT_ID",
    "verify_token": "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
    "app_secret": "WHATSAPP_APP_SECRET",
}


@dataclass(frozen=True, slots=True)
class WhatsAppSettings:
    api_base_url: str
    api_version: str
    access_token: str | None
    phone_number_id: str
    business_account_id: str | None
    verify_token: str
    app_secret: str
    timeout_seconds: float
    mark_read: bool
    typing_indicator: bool


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str
    port: int
    max_body_bytes: int
    # auto (uvloop when installed), asyncio or uvloop; see bot/loops.py.
    event_loop: str = "auto"
    # thread: the dispatcher and sender on a thread of their own
    # (bot/worker.py); inline: on the webhook's loop.
    processing: str = "thread"
    # The port of demo mode's Graph API simulator on loopback; 0, any free
    # one (`tracbot serve --simulator-port`).
    simulator_port: int = 0


EVENT_LOOPS = ("auto", "asyncio", "uvloop")
# Settings read by parsers of their own (bot/api/settings.py,
# bot/business/settings.py), not through `_Reader`.
OTHER_SETTINGS = frozenset(
    {"api.tokens", "api.default_region", "api.timezone", "api.max_page"}
    | {"business.url", "business.fixture", "business.admins"}
    | {"business.link_attempts_per_hour", "business.timeout_seconds"}
    | {"business.phone_recheck_seconds", "business.queries"}
)
# Checked by their own parsers (templates), or whose keys are names the
# file chooses (queries).
NAMED_SETTINGS = frozenset({"templates", "business.queries"})
PROCESSING = ("thread", "inline")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    flows_dir: Path
    templates_dir: Path
    max_concurrent_phones: int
    poll_seconds: float
    # Seconds a wake-up waits for more messages to handle with it.
    gather_seconds: float = 0.01


@dataclass(frozen=True, slots=True)
class SenderSettings:
    rate_per_second: float
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float
    # Seconds a wake-up waits for more replies to send with it.
    gather_seconds: float = 0.01


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Pool and schema settings of the storage (`storage.url` is apart)."""

    pool_max: int = 20
    acquire_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 10.0
    migrate: str = "auto"

    def options(self) -> dict[str, Any]:
        """Keyword arguments of `storage.create_store`."""
        return {
            "pool_max": self.pool_max,
            "acquire_timeout": self.acquire_timeout_seconds,
            "statement_timeout": self.statement_timeout_seconds,
            "migrate": self.migrate,
        }


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything tracbot reads from config.yaml and the environment."""

    path: Path
    whatsapp: WhatsAppSettings
    server: ServerSettings
    storage_url: str
    engine: EngineSettings
    sender: SenderSettings
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    api: ApiSettings = field(default_factory=ApiSettings)
    templates: Mapping[str, TemplateSpec] = field(default_factory=dict)
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def demo(self) -> bool:
        """Whether no access token is set, so the built-in simulator answers."""
        return not self.whatsapp.access_token


def load_settings(
    path: str | Path = "config.yaml",
    env: Mapping[str, str] | None = None,
    *,
    serving: bool = True,
) -> Settings:
    """Read a config file and the environment into `Settings`.

    With `serving` false (chat, check, test, migrate: nothing there talks
    to Meta), a secret left unset beside an access token takes its demo
    value instead of stopping the command.

    Raises:
        ConfigError: the file is missing or invalid, or a required secret is
            not set; the message names the file and the setting.
    """
    env = os.environ if env is None else env
    path = Path(path)
    raw = _read_yaml(path)
    reader = _Reader(path, raw)
    base = path.resolve().parent

    secrets = _secrets(reader, env, serving)
    whatsapp = WhatsAppSettings(
        api_base_url=_base_url(reader, env),
        api_version=reader.str("whatsapp.api_version", "v23.0"),
        timeout_seconds=reader.positive("whatsapp.timeout_seconds", 10.0),
        mark_read=reader.bool("whatsapp.mark_read", True),
        typing_indicator=reader.bool("whatsapp.typing_indicator", True),
        **secrets,
    )
    server = ServerSettings(
        host=reader.str("server.host", "127.0.0.1"),
        port=_port(reader),
        max_body_bytes=reader.whole("server.max_body_bytes", 4 * 1024**2),
        event_loop=reader.choice("server.event_loop", EVENT_LOOPS),
        processing=reader.choice("server.processing", PROCESSING),
    )
    engine = EngineSettings(
        flows_dir=base / reader.str("engine.flows_dir", "flows"),
        templates_dir=base / reader.str("engine.templates_dir", "message_templates"),
        max_concurrent_phones=reader.whole(
            "engine.max_concurrent_phones", CONCURRENT_PHONES
        ),
        poll_seconds=reader.number("engine.poll_seconds", 1.0),
        gather_seconds=reader.number("engine.gather_ms", 10) / 1000,
    )
    sender = SenderSettings(
        rate_per_second=reader.number("sender.rate_per_second", 80.0),
        max_attempts=reader.whole("sender.max_attempts", 8),
        backoff_seconds=reader.number("sender.backoff_seconds", 1.0),
        backoff_max_seconds=reader.number("sender.backoff_max_seconds", 300.0),
        gather_seconds=reader.number("sender.gather_ms", 10) / 1000,
    )
    file_url = reader.str("storage.url", "sqlite:///var/tracbot.db")
    storage_url = env.get("TRACBOT_STORAGE_URL") or file_url
    _check_storage_url(path, storage_url, bool(env.get("TRACBOT_STORAGE_URL")))
    settings = Settings(
        path=path,
        whatsapp=whatsapp,
        server=server,
        storage_url=_anchor_sqlite(storage_url, base),
        engine=engine,
        sender=sender,
        raw=raw,
        api=parse_api(path, raw.get("api"), env, not secrets["access_token"]),
        templates=parse_templates(path, raw.get("templates")),
        storage=_storage(reader),
    )
    reader.refuse_unknown(OTHER_SETTINGS, NAMED_SETTINGS)
    return settings


def _port(reader: _Reader) -> int:
    port = reader.whole("server.port", 8080)
    if not 1 <= port <= 65535:
        # The OS would pick a port of its own for 0, and 80800 wraps around.
        reader._fail("server.port", "expected a port from 1 to 65535", port)
    return port


def _base_url(reader: _Reader, env: Mapping[str, str]) -> str:
    """The Graph API address; a typo fails here, not at the first send."""
    in_file = reader.str("whatsapp.api_base_url", DEFAULT_BASE_URL)
    url = env.get("WHATSAPP_API_BASE_URL")
    where = "WHATSAPP_API_BASE_URL"
    if not url:
        url = in_file
        where = f"{reader.path}: whatsapp.api_base_url"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port == 0
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise ConfigError(
            f"{where}: expected an http(s)://host[:port] address, got {url!r}"
        )
    if re.search(r"/v\d+(\.\d+)?/?$", parts.path):
        # Meta's URLs carry the version; whatsapp.api_version adds it again.
        raise ConfigError(
            f"{where}: {url!r} ends with an API version; give the address "
            "without it (https://graph.facebook.com) and the version in "
            "whatsapp.api_version"
        )
    return url


def _check_storage_url(path: Path, url: str, from_env: bool) -> None:
    scheme = url.split(":", 1)[0].lower()
    where = "TRACBOT_STORAGE_URL" if from_env else f"{path}: storage.url"
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            f"{where}: unknown storage scheme {scheme!r} in {url.split('@')[-1]!r} "
            "(expected sqlite, postgresql or odbc)"
        )
    if scheme == "sqlite" and not _sqlite_url_ok(url):
        raise ConfigError(
            f"{where}: expected sqlite:///relative/file.db (from the config "
            f"folder), sqlite:////absolute/file.db or sqlite:// (in memory), "
            f"lower case and without ?options, got {url!r}"
        )


def _sqlite_url_ok(url: str) -> bool:
    if url in ("sqlite://", "sqlite:///:memory:"):
        return True
    # sqlite://x.db would be relative to wherever tracbot was started, and
    # SQLite would take ?mode=ro or :memory: as part of a file name.
    path = url.removeprefix("sqlite:///")
    return (
        url.startswith("sqlite:///")
        and path.strip("/") != ""
        and "?" not in path
        and ":memory:" not in path
    )


def _storage(reader: _Reader) -> StorageSettings:
    pool_max = reader.whole("storage.pool_max", 20)
    if pool_max < 2:
        reader._fail("storage.pool_max", "expected at least 2", pool_max)
    migrate = reader.str("storage.migrate", "auto")
    if migrate not in ("auto", "refuse"):
        reader._fail("storage.migrate", "expected auto or refuse", migrate)
    return StorageSettings(
        pool_max=pool_max,
        acquire_timeout_seconds=reader.positive("storage.acquire_timeout_seconds", 5.0),
        statement_timeout_seconds=reader.number(
            "storage.statement_timeout_seconds", 10.0
        ),
        migrate=migrate,
    )


def _secrets(
    reader: _Reader, env: Mapping[str, str], serving: bool = True
) -> dict[str, Any]:
    """Read each secret from the variable the file names for it."""
    values: dict[str, str | None] = {}
    for key, default_var in SECRET_NAMES.items():
        var = reader.str(f"whatsapp.secrets.{key}", default_var)
        # A secret mounted from a file often ends in a line break: kept, it
        # made every signature (and the handshake) fail, silently.
        raw = env.get(var)
        values[key] = (raw or "").strip() or None
        if key == "access_token" and raw and values[key] is None:
            # Blank is not unset: a token file mounted empty started a
            # deployment in demo mode, its replies sent to the simulator.
            raise ConfigError(
                f"{reader.path}: the variable {var} is set but blank: give it "
                "the access token, or unset it for demo mode"
            )

    # Without a token nothing can reach Meta, so the other secrets may take
    # demo values; with one, each secret must be set for real, for `serve`.
    # A shell that holds the production token must still chat and check.
    demo = values["access_token"] is None or not serving
    for key, demo_value in DEMO_SECRETS.items():
        if values[key] is None and demo:
            values[key] = demo_value
    missing = [
        reader.str(f"whatsapp.secrets.{key}", SECRET_NAMES[key])
        for key in ("phone_number_id", "verify_token", "app_secret")
        if values[key] is None
    ]
    if missing:
        raise ConfigError(
            f"{reader.path}: required setting missing: set the environment "
            f"variable {', '.join(missing)} (WHATSAPP_API_TOKEN is set, so "
            "tracbot is not in demo mode)"
        )

    # The token goes into a request header: a line break there (a token
    # pasted with one) would end the header. Spaces around it are trimmed.
    token = values["access_token"]
    if token is not None:
        token = values["access_token"] = token.strip()
        if not (token.isascii() and token.isprintable()):
            var = reader.str("whatsapp.secrets.access_token", "WHATSAPP_API_TOKEN")
            raise ConfigError(
                f"{reader.path}: the variable {var} holds a line break, a "
                "control character or a non-ASCII letter: an access token "
                "has none; copy it again from Meta's app dashboard"
            )
    return values


def _anchor_sqlite(url: str, base: Path) -> str:
    if url == "sqlite:///:memory:":
        # SQLite's own name for a database in memory, not a file name.
        return "sqlite://"
    # A relative SQLite path is relative to the config file, not the cwd.
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url.removeprefix("sqlite:///")
        return f"sqlite:///{base / relative}"
    return url


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        # "[Errno 2] No such file or directory: 'config.yaml'", run from
        # flows/: the path is relative to where tracbot runs.
        raise ConfigError(
            f"{path.absolute()}: no such config file: run tracbot from the "
            "project's folder, or name the file with --config"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


class _Reader:
    """Typed look-ups by dotted path, with errors that name the path."""

    def __init__(self, path: Path, data: Mapping[str, Any]) -> None:
        self.path = path
        self.data = data
        # Every setting looked up, so that the others can be told apart.
        self.asked: set[str] = set()

    def refuse_unknown(self, others: frozenset[str], named: frozenset[str]) -> None:
        """Fail on a setting nothing reads: `poll_secs` would be ignored
        without a word, and the default used. `others` are read elsewhere;
        under `named`, any key goes (a template's or a query's name)."""
        asked = self.asked | others | named
        known_paths = {
            ".".join(parts[:n])
            for parts in (d.split(".") for d in asked)
            for n in range(1, len(parts) + 1)
        }
        for dotted, value in _paths(self.data):
            if dotted.startswith("x-"):
                # A place for YAML anchors, as in Compose files: read by nobody.
                continue
            holds = any(d.startswith(f"{dotted}.") for d in known_paths)
            if holds and value is not None and not isinstance(value, Mapping):
                # `server: 9090` read as no server settings at all.
                self._fail(dotted, "expected a mapping of settings", value)
            if dotted in known_paths or any(dotted.startswith(f"{n}.") for n in named):
                continue
            parent, _, _ = dotted.rpartition(".")
            level = dotted.count(".")
            siblings = {
                d.split(".")[level]
                for d in known_paths
                if d.count(".") == level and d.startswith(f"{parent}.".lstrip("."))
            }
            where = f"in {parent}" if parent else "at the top level"
            raise ConfigError(
                f"{self.path}: {dotted}: unknown setting {where} "
                f"(known: {', '.join(sorted(siblings))})"
            )

    def get(self, dotted: str, default: Any) -> Any:
        self.asked.add(dotted)
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    def str(self, dotted: str, default: str) -> str:
        value = self.get(dotted, default)
        if not isinstance(value, str) or not value:
            self._fail(dotted, "expected a non-empty string", value)
        return value

    def choice(self, dotted: str, options: tuple[str, ...]) -> str:
        """One of `options`; the first is the default."""
        value = self.get(dotted, options[0])
        if value not in options:
            self._fail(dotted, "expected one of " + ", ".join(options), value)
        return value

    def number(self, dotted: str, default: float) -> float:
        value = self.get(dotted, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._fail(dotted, "expected a number", value)
        if not math.isfinite(value):
            # YAML's .inf and .nan: a wait of .inf never ends.
            self._fail(dotted, "expected a finite number", value)
        if value < 0:
            self._fail(dotted, "expected a number of at least 0", value)
        return value

    def positive(self, dotted: str, default: float) -> float:
        """A time that must pass: 0 failed every request before it left."""
        value = self.number(dotted, default)
        if value == 0:
            self._fail(dotted, "expected a number above 0", value)
        return value

    def whole(self, dotted: str, default: int) -> int:
        """A count or a port: 0.5 phones at once is a slip, not 0."""
        value = self.number(dotted, default)
        if value != int(value):
            self._fail(dotted, "expected a whole number", value)
        return int(value)

    def bool(self, dotted: str, default: bool) -> bool:
        value = self.get(dotted, default)
        if not isinstance(value, bool):
            self._fail(dotted, "expected true or false", value)
        return value

    def _fail(self, dotted: str, rule: str, value: Any) -> None:
        raise ConfigError(f"{self.path}: {dotted}: {rule}, got {value!r}")


def _paths(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The dotted path and value of every key, nested mappings included."""
    found = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        found.append((dotted, value))
        if isinstance(value, Mapping):
            found += _paths(value, dotted + ".")
    return found


def answering(settings: Settings) -> Settings:
    """`settings` with processing on: `engine.max_concurrent_phones: 0`
    pauses a server, but a chat or a conversation test is there for answers."""
    if settings.engine.max_concurrent_phones > 0:
        return settings
    engine = replace(settings.engine, max_concurrent_phones=CONCURRENT_PHONES)
    return replace(settings, engine=engine)
