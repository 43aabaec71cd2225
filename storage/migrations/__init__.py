"""Versioned schema migrations, one folder of numbered SQL files per dialect.

`0001_init.sql`, `0002_….sql`, … are applied in order, each once, and the
applied versions are recorded in a `schema_migrations` table by the backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from storage.errors import StorageError

log = logging.getLogger("tracbot.storage")

_HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """Split the file into statements.

        Comments are dropped first, so a `;` in one does not split; our
        files put no `;` or `--` inside string literals.
        """
        code = "\n".join(line.split("--", 1)[0] for line in self.sql.splitlines())
        return [s.strip() for s in code.split(";") if s.strip()]


def migrations(dialect: str) -> list[Migration]:
    """Return the migrations of a dialect, in the order they apply."""
    found = []
    for path in sorted((_HERE / dialect).glob("*.sql")):
        number = path.name.split("_", 1)[0]
        found.append(Migration(int(number), path.stem, path.read_text("utf-8")))
    return found


MIGRATE_MODES = ("auto", "refuse")


def check_migrate_mode(mode: str) -> str:
    """Return a valid `storage.migrate` setting, or raise ValueError."""
    if mode not in MIGRATE_MODES:
        raise ValueError(f"storage migrate: expected auto or refuse, got {mode!r}")
    return mode


def pending_of(backend: str, dialect: str, done: set[int]) -> list[Migration]:
    """The migrations of `dialect` not in `done`, in order; says so when the
    database has some this tracbot does not know (a deploy rolled back)."""
    known = migrations(dialect)
    unknown = sorted(done - {m.version for m in known})
    if unknown:
        log.warning(
            "the %s database has migrations this tracbot does not know "
            "(versions %s): a newer tracbot migrated it, and this one may "
            "fail on its schema",
            backend,
            ", ".join(map(str, unknown)),
        )
    return [m for m in known if m.version not in done]


def refuse_pending(backend: str, pending: list[Migration]) -> None:
    """Raise the error of a store that may not migrate its schema itself."""
    names = ", ".join(m.name for m in pending)
    raise StorageError(
        f"the {backend} database schema is behind this tracbot: migrations "
        f"{names} are not applied and storage.migrate is 'refuse'; run "
        "`tracbot migrate` first"
    )
