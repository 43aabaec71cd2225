"""Building the demo business database from its readable fixture.

`demo/business.yaml` holds a schema and rows per table; the database is
written to a temporary file and renamed into place, so a half-built file
is never opened, and two processes starting together both end up with
the same complete database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ConfigError

log = logging.getLogger("tracbot.business")


def ensure_built(fixture: Path, db_path: Path) -> bool:
    """Build `db_path` from `fixture` unless it exists; True if built now."""
    if db_path.exists():
        return False
    build(fixture, db_path)
    log.info("business database built path=%s fixture=%s", db_path, fixture.name)
    return True


def build(fixture: Path, db_path: Path) -> None:
    """Write a fresh SQLite database with the fixture's schema and rows.

    Raises:
        ConfigError: the fixture cannot be read or does not fit its schema.
    """
    data = _read(fixture)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".business-", dir=db_path.parent)
    os.close(fd)
    try:
        _write(Path(tmp), data, fixture)
        os.replace(tmp, db_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(fixture: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(fixture.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{fixture}: cannot read the fixture: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("schema"), str):
        raise ConfigError(f"{fixture}: expected a `schema` text and `tables`")
    return data


def _write(path: Path, data: dict[str, Any], fixture: Path) -> None:
    db = sqlite3.connect(path)
    try:
        db.executescript(data["schema"])
        for table, rows in (data.get("tables") or {}).items():
            for i, row in enumerate(rows or []):
                _insert(db, table, row, f"{fixture}: tables.{table}[{i}]")
        db.commit()
    finally:
        db.close()


def _insert(db: sqlite3.Connection, table: str, row: Any, where: str) -> None:
    if not isinstance(row, dict) or not row:
        raise ConfigError(f"{where}: a row must be a mapping of columns")
    columns = ", ".join(f'"{name}"' for name in row)
    marks = ", ".join("?" for _ in row)
    values = [v if v is None else str(v) for v in row.values()]
    try:
        db.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', values)
    except sqlite3.Error as exc:
        raise ConfigError(f"{where}: {exc}") from exc
