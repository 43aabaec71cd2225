"""Versioned schema migrations, one folder of numbered SQL files per dialect.

`0001_init.sql`, `0002_….sql`, … are applied in order, each once, and the
applied versions are recorded in a `schema_migrations` table by the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """Split the file into statements (our files put none inside strings)."""
        return [s.strip() for s in self.sql.split(";") if _has_code(s)]


def _has_code(chunk: str) -> bool:
    lines = (line.strip() for line in chunk.splitlines())
    return any(line and not line.startswith("--") for line in lines)


def migrations(dialect: str) -> list[Migration]:
    """Return the migrations of a dialect, in the order they apply."""
    found = []
    for path in sorted((_HERE / dialect).glob("*.sql")):
        number = path.name.split("_", 1)[0]
        found.append(Migration(int(number), path.stem, path.read_text("utf-8")))
    return found
