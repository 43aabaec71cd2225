"""`tracbot serve` with a real token, against `tracbot simulator`, as two
subprocesses on loopback: a backend call goes out through the Graph API,
the simulator's signed status webhooks come back, and history shows them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRACBOT = Path(sys.executable).with_name("tracbot")
TOKEN = "e2e-graph-token"
SECRET = "e2e-app-secret"
BACKEND = "e2e-backend-token"
ADMIN = "e2e-admin-token"
CAMILA = "+56911120011"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: dict | None = None, token: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(check, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with_value = check()
        if with_value:
            return with_value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture
def processes(tmp_path):
    with running(tmp_path) as urls:
        yield urls


@contextlib.contextmanager
def running(tmp_path: Path, config: Path = ROOT / "config.yaml"):
    """`tracbot simulator` and `tracbot serve --config config`; their URLs."""
    sim_port, bot_port = free_port(), free_port()
    logs = []

    def start(name: str, args: list[str], env: dict[str, str]):
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
        logs.append(log)
        return subprocess.Popen(
            [str(TRACBOT), *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    simulator = start(
        "simulator",
        [
            "simulator",
            "--port",
            str(sim_port),
            "--token",
            TOKEN,
            "--webhook-url",
            f"http://127.0.0.1:{bot_port}/webhook",
            "--app-secret",
            SECRET,
        ],
        {},
    )
    env = {
        "WHATSAPP_API_TOKEN": TOKEN,
        "WHATSAPP_API_BASE_URL": f"http://127.0.0.1:{sim_port}",
        "WHATSAPP_PHONE_NUMBER_ID": "200000000000002",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "e2e-verify",
        "WHATSAPP_APP_SECRET": SECRET,
        "TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/e2e.db",
        "TRACBOT_API_TOKEN_BACKEND": BACKEND,
        "TRACBOT_API_TOKEN_ADMIN": ADMIN,
    }
    bot = start(
        "serve", ["--config", str(config), "serve", "--port", str(bot_port)], env
    )
    try:
        try:
            wait_until(lambda: up(f"http://127.0.0.1:{bot_port}/healthz"))
        except TimeoutError:
            tail = (tmp_path / "serve.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"tracbot serve did not start:\n{tail}")
        yield f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{bot_port}"
    finally:
        for proc in (bot, simulator):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def test_backend_notification_goes_out_and_its_statuses_come_back(processes):
    graph, bot = processes
    api = f"{bot}/api/whatsapp"

    status, body = call(
        f"{api}/notify/trip_status",
        {"phone": CAMILA, "patente": "AB-12-CD", "estado": "En Carga"},
        BACKEND,
    )
    assert status == 202, body

    def delivered():
        _, history = call(f"{api}/history/{CAMILA}", token=ADMIN)
        states = {m["status"] for m in history["messages"]}
        return history if "delivered" in states else None

    history = wait_until(delivered)
    _, received = call(f"{graph}/_sim/messages")

    # Camila never wrote: the approved template went out, once.
    sent = [r for r in received if r["status"] == 200]
    assert len(sent) == 1
    assert sent[0]["body"]["template"]["name"] == "viaje_actualizado"
    template = next(m for m in history["messages"] if m["type"] == "template")
    assert template["message_id"] == sent[0]["wamid"]
    assert template["status"] == "delivered"

    _, ready = call(f"{bot}/readyz")
    assert ready["status"] == "ready"


def test_the_demo_shows_delivery_in_history(tmp_path):
    # The demo's simulator never told of deliveries: history stayed
    # `accepted` and the delivery rate 0 for a backend developer trying it.
    port = free_port()
    env = {
        **os.environ,
        "WHATSAPP_API_TOKEN": "",
        "WHATSAPP_API_BASE_URL": "",
        "TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/demo.db",
    }
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    bot = subprocess.Popen(
        [str(TRACBOT), "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: up(f"{base}/healthz"))
        api = f"{base}/api/whatsapp"
        message = {"phone": CAMILA, "message": "hola"}
        status, body = call(f"{api}/send_text", message, "demo-backend-token")
        assert status == 202, body

        def delivered():
            _, history = call(f"{api}/history/{CAMILA}", token="demo-admin-token")
            return history["messages"][0]["status"] == "delivered"

        wait_until(delivered)
        _, metrics = call(f"{api}/metrics", token="demo-admin-token")
        assert metrics["metrics"]["delivery_rate"] > 0, metrics
    finally:
        bot.send_signal(signal.SIGTERM)
        bot.wait(timeout=10)
        log.close()
