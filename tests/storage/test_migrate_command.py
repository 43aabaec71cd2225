"""`tracbot migrate`, and `tracbot serve` under `storage.migrate: refuse`.

Both run as real commands against a fresh database of the session's
PostgreSQL, the way an operator runs them before and during a deploy.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from bench import procs
from storage.migrations import migrations


def tracbot(config: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **procs.tracbot_env("http://127.0.0.1:9", url)}
    return subprocess.run(
        [str(procs.TRACBOT), "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_then_serve_refusing_migrations(postgres_db, tmp_path: Path) -> None:
    config = procs.write_config(tmp_path, {"storage.migrate": "refuse"})
    names = [m.name for m in migrations("postgres")]

    # A schema behind this tracbot: serve stops with a message, no traceback.
    refused = tracbot(config, postgres_db.dsn, "serve", "--port", "65000")
    assert refused.returncode == 2, refused.stderr
    assert "tracbot migrate" in refused.stderr and names[0] in refused.stderr
    assert "Traceback" not in refused.stderr

    applied = tracbot(config, postgres_db.dsn, "migrate")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == f"postgresql: applied {', '.join(names)}"

    again = tracbot(config, postgres_db.dsn, "migrate")
    assert again.stdout.strip() == "postgresql: schema up to date"


def test_migrate_names_an_unreachable_database(tmp_path: Path) -> None:
    config = procs.write_config(tmp_path, {"storage.acquire_timeout_seconds": 1})
    port = procs.free_port()
    url = f"postgresql://tracbot:x@127.0.0.1:{port}/tracbot"

    failed = tracbot(config, url, "migrate")

    assert failed.returncode == 1
    assert failed.stderr.startswith("tracbot migrate: cannot connect to PostgreSQL")
    assert "Traceback" not in failed.stderr


def test_migrate_says_when_a_newer_tracbot_migrated_the_database(
    tmp_path: Path,
) -> None:
    # A deploy rolled back: "schema up to date", and the old code ran on a
    # newer schema without a word.
    config = procs.write_config(tmp_path, {})
    url = f"sqlite:///{tmp_path}/t.db"
    assert tracbot(config, url, "migrate").returncode == 0
    with sqlite3.connect(tmp_path / "t.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (99, '0099_future', '')")

    again = tracbot(config, url, "migrate")
    assert again.returncode == 0, again.stderr
    assert "this tracbot does not know (versions 99)" in again.stderr


def test_chat_on_a_schema_it_may_not_migrate_says_so(tmp_path: Path) -> None:
    # serve gave one line; chat, on the same database, a traceback.
    config = procs.write_config(tmp_path, {"storage.migrate": "refuse"})
    url = f"sqlite:///{tmp_path}/fresh.db"

    refused = tracbot(config, url, "chat", "+56911112222")

    assert refused.returncode == 2, refused.stderr
    assert "\ntracbot chat: storage: " in refused.stderr
    assert "tracbot migrate" in refused.stderr
    assert "Traceback" not in refused.stderr
