"""Throwaway database servers for tests, benchmarks and manual runs.

`PostgresServer` runs a private PostgreSQL cluster in a temporary folder:
`initdb`, then `postgres` listening on a free port of 127.0.0.1 only, with
its unix socket inside the folder and durability switched off for speed.
It is stopped and its folder deleted on `stop()`. PostgreSQL refuses to run
as root, so under root the cluster belongs to the `postgres` system user
(created when the package did not create it).

Run `python -m tests.servers postgres` to keep one running by hand: it
prints the DSN and the ODBC connection string and stops on Ctrl-C.
"""

from __future__ import annotations

import configparser
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
SUPERUSER = "tracbot"
ODBC_DRIVER = "PostgreSQL Unicode"
ODBCINST_PATHS = ("/etc/odbcinst.ini", "/usr/local/etc/odbcinst.ini")
SYSTEM_USER = "postgres"


class ServerError(RuntimeError):
    """A throwaway server could not be started."""


def find_postgres_bindir() -> Path:
    """Return the folder of `initdb` and `postgres`, newest version first."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        )
        candidates.append(out.stdout.strip())

    # Debian's pg_config may come from libpq-dev alone and point at a folder
    # without a server, so the versioned folders are tried as well.
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    versioned.sort(key=lambda path: int(Path(path).parent.name), reverse=True)
    candidates.extend(versioned)

    for candidate in candidates:
        bindir = Path(candidate)
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise ServerError(
        "no PostgreSQL server binaries found (pg_config --bindir, "
        "/usr/lib/postgresql/*/bin); run scripts/install-system-deps.sh"
    )


def odbc_driver_installed(name: str = ODBC_DRIVER) -> bool:
    """Return whether unixODBC knows a driver of this name."""
    for path in ODBCINST_PATHS:
        parser = configparser.ConfigParser(interpolation=None)
        with contextlib.suppress(OSError, configparser.Error):
            parser.read(path)
            if parser.has_section(name):
                return True
    return False


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _system_user() -> pwd.struct_passwd:
    """Return the account to run PostgreSQL as when we are root."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ],
        check=True,
    )
    return pwd.getpwnam(SYSTEM_USER)


class PostgresServer:
    """A private PostgreSQL server on 127.0.0.1; see the module docstring."""

    def __init__(self, database: str = "tracbot") -> None:
        self.bindir = find_postgres_bindir()
        self.database = database
        self.password = secrets.token_hex(12)
        self.port = 0
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._account: pwd.struct_passwd | None = None

    # Addresses

    def dsn_for(self, database: str) -> str:
        """Return the asyncpg DSN of one database of this server."""
        login = f"{SUPERUSER}:{self.password}"
        return f"postgresql://{login}@{HOST}:{self.port}/{database}"

    def odbc_for(self, database: str) -> str:
        """Return the psqlODBC connection string of one database."""
        return (
            f"Driver={{{ODBC_DRIVER}}};Server={HOST};Port={self.port};"
            f"Database={database};Uid={SUPERUSER};Pwd={self.password};"
        )

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    @property
    def odbc(self) -> str:
        return self.odbc_for(self.database)

    @property
    def pid(self) -> int:
        """The postmaster's process id (the server must be running)."""
        assert self._process is not None, "the server is not running"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # Lifecycle

    def start(self) -> None:
        """Create the cluster on first use, then run the server."""
        if self.root is None:
            self._init_cluster()
        if not self.port:
            self.port = free_port()
        self._launch()
        self._wait_ready()
        if not self._database_exists(self.database):
            self.create_database(self.database)

    def stop(self) -> None:
        """Stop the server, keeping its files so that `start()` resumes."""
        if self._process is None:
            return

        # SIGINT is PostgreSQL's fast shutdown: clients are disconnected
        # instead of waited for.
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def destroy(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # Databases

    def create_database(self, name: str, *, timezone: str | None = None) -> None:
        """Create an empty database, optionally with its own TimeZone."""
        self.psql(f'CREATE DATABASE "{name}"')
        if timezone is not None:
            self.psql(f"ALTER DATABASE \"{name}\" SET timezone = '{timezone}'")

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still on it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement through psql and return its unaligned output."""
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-h",
                HOST,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise ServerError(f"psql {sql!r}: {result.stderr.strip()}")
        return result.stdout.strip()

    # Helpers

    def _database_exists(self, name: str) -> bool:
        found = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        return found == "1"

    def _init_cluster(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tracbot-pg-"))
        if os.geteuid() == 0:
            self._account = _system_user()
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)

        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._account is not None:
            os.chown(pwfile, self._account.pw_uid, self._account.pw_gid)

        # --no-instructions and a fixed locale keep the output and the
        # collation the same on every machine.
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.root / "data"),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
                "--no-sync",
            ],
        )
        pwfile.unlink()

    def _launch(self) -> None:
        assert self.root is not None
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115
        command = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.root / "data"),
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "timezone=UTC",
        ]
        with log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **self._as_account(),
            )

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServerError(f"postgres exited; log:\n{self._log_tail()}")
            ready = subprocess.run(
                [
                    str(self.bindir / "pg_isready"),
                    "-q",
                    "-h",
                    HOST,
                    "-p",
                    str(self.port),
                ],
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"postgres not ready in {timeout}s; log:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        assert self.root is not None
        with contextlib.suppress(OSError):
            return (self.root / "postgres.log").read_text()[-3000:]
        return ""

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            command, capture_output=True, text=True, **self._as_account()
        )
        if result.returncode != 0:
            raise ServerError(f"{command[0]} failed: {result.stderr.strip()}")

    def _as_account(self) -> dict[str, object]:
        if self._account is None:
            return {}
        return {
            "user": self._account.pw_uid,
            "group": self._account.pw_gid,
            "extra_groups": [],
            "cwd": str(self.root),
        }


@contextlib.contextmanager
def running_postgres(database: str = "tracbot") -> Iterator[PostgresServer]:
    """Run a throwaway PostgreSQL for the duration of a `with` block."""
    server = PostgresServer(database)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


def _main(argv: list[str]) -> int:
    if argv[1:] != ["postgres"]:
        print("usage: python -m tests.servers postgres", file=sys.stderr)
        return 2
    with running_postgres() as server:
        print(f"dsn:  {server.dsn}")
        print(f"odbc: {server.odbc}")
        print("running; Ctrl-C stops it and deletes its files", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while server.running:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
