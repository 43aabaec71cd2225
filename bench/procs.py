"""Processes of a benchmark or fault run: the server, the simulator, peers.

Each runs as a real subprocess on 127.0.0.1, optionally pinned to one core
with `taskset`, so that the server under test and the load generator do not
share a core. CPU time and resident memory are read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TRACBOT = Path(sys.executable).with_name("tracbot")

TOKEN = "bench-token-0123456789"
APP_SECRET = "bench-app-secret"
VERIFY_TOKEN = "bench-verify-token"
PHONE_NUMBER_ID = "200000000000002"
VERSION = "v23.0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """Prefix a command with `taskset -c cpu` when a core is asked for."""
    if cpu is None or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


@dataclass
class Proc:
    """A subprocess listening on a loopback port."""

    name: str
    command: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    def start(self, timeout: float = 20.0) -> Proc:
        """Start the process and wait until its port accepts connections."""
        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115
        with log:
            self.popen = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        self._wait_port(timeout)
        return self

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen in {timeout}s")

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far."""
        return _cpu_seconds(Path(f"/proc/{self.pid}/stat"))

    def thread_cpu_seconds(self) -> dict[str, float]:
        """The same for each of its threads, by thread id."""
        tasks = Path(f"/proc/{self.pid}/task")
        return {task.name: _cpu_seconds(task / "stat") for task in tasks.iterdir()}

    def rss_mib(self) -> float:
        """Resident memory of the process, in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill9(self) -> None:
        """Kill the process without warning, as a crash would."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop with SIGTERM (graceful), SIGKILL after `timeout`."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()


def simulator(
    *,
    delay: float = 0.0,
    cpu: int | None = None,
    log_dir: Path | None = None,
    webhook_url: str | None = None,
) -> Proc:
    """A `tracbot simulator` that requires the bench token; with
    `webhook_url`, it posts status webhooks there, signed as Meta would."""
    port = free_port()
    command = [
        str(TRACBOT),
        "--log-level",
        "WARNING",
        "simulator",
        "--port",
        str(port),
        "--delay",
        str(delay),
        "--token",
        TOKEN,
    ]
    if webhook_url is not None:
        command += ["--webhook-url", webhook_url, "--app-secret", APP_SECRET]
    return Proc(
        "simulator",
        pinned(command, cpu),
        port,
        log_path=log_dir / "simulator.log" if log_dir else None,
    )


def _cpu_seconds(stat_path: Path) -> float:
    # Fields 14 and 15 of /proc/…/stat, after the parenthesised name.
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tracbot_env(graph_url: str, storage_url: str) -> dict[str, str]:
    """The environment of a non-demo `tracbot serve` aimed at a simulator."""
    return {
        "WHATSAPP_API_TOKEN": TOKEN,
        "WHATSAPP_API_BASE_URL": graph_url,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "TRACBOT_STORAGE_URL": storage_url,
    }


def write_config(folder: Path, overrides: Mapping[str, object]) -> Path:
    """Copy config.yaml into `folder`, with dotted-path overrides applied.

    Paths are read relative to the config file's folder, so every value
    that names a file or folder of the project is made absolute in the copy.
    """
    data = _absolute(yaml.safe_load((ROOT / "config.yaml").read_text("utf-8")))
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    return path


def _absolute(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _absolute(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_absolute(value) for value in node]
    if isinstance(node, str) and "/" not in node[:1] and (ROOT / node).exists():
        return str(ROOT / node)
    return node


def tracbot(
    graph_url: str,
    storage_url: str,
    folder: Path,
    *,
    overrides: Mapping[str, object] | None = None,
    cpu: int | None = None,
    log_level: str = "WARNING",
    port: int | None = None,
) -> Proc:
    """A `tracbot serve` subprocess (not started) with its own config copy."""
    port = port or free_port()
    config = write_config(folder, overrides or {})
    command = [
        str(TRACBOT),
        "--config",
        str(config),
        "--log-level",
        log_level,
        "serve",
        "--port",
        str(port),
    ]
    return Proc(
        "tracbot",
        pinned(command, cpu),
        port,
        env=tracbot_env(graph_url, storage_url),
        log_path=folder / "tracbot.log",
    )


def python_server(
    name: str, module: str, args: Sequence[str], *, cpu: int | None = None
) -> Proc:
    """One of the small peer servers of bench/, run as `python -m module`."""
    port = free_port()
    command = [sys.executable, "-m", module, "--port", str(port), *args]
    return Proc(name, pinned(command, cpu), port)


@contextlib.contextmanager
def workdir(prefix: str = "tracbot-bench-") -> Iterator[Path]:
    """A temporary folder for config copies, databases and logs."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
