"""Start-up and command-line mistakes, as a user meets them: real
processes on loopback, one `tracbot: …` line and exit status 2, never a
traceback; and `tracbot chat`, which never reaches the configured Graph API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

from tests.support import ROOT


def run(*args: str, env: dict[str, str] | None = None, stdin: str = ""):
    base = {**os.environ, "TRACBOT_STORAGE_URL": "", "WHATSAPP_API_TOKEN": ""}
    return subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(ROOT / "config.yaml"), *args],
        input=stdin,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tracbot: ")
    return line


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "--log-level",
            "WARNING",
            "serve",
            "--port",
            str(port),
            env={"TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/s.db"},
        )
    line = one_line(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_an_unknown_storage_scheme_names_the_variable():
    line = one_line(run("serve", env={"TRACBOT_STORAGE_URL": "mysql://x"}))
    assert "TRACBOT_STORAGE_URL" in line and "'mysql'" in line


def test_an_unknown_log_level_is_refused_by_the_parser():
    line = one_line(run("--log-level", "LOUD", "serve"))
    assert "LOUD" in line and "WARNING" in line


def test_an_invalid_graph_url_names_the_variable():
    line = one_line(run("serve", env={"WHATSAPP_API_BASE_URL": "not-a-url"}))
    assert "WHATSAPP_API_BASE_URL" in line and "http(s)://" in line


def test_chat_never_reaches_the_configured_graph_api(tmp_path):
    # A listener of our own stands where a deployment's Graph API would be.
    hits: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            hits.append(connection.recv(100))
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {
        "WHATSAPP_API_TOKEN": "a-real-looking-token",
        "WHATSAPP_API_BASE_URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
        "WHATSAPP_PHONE_NUMBER_ID": "200000000000002",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "verify",
        "WHATSAPP_APP_SECRET": "secret",
        "TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/deployment.db",
    }
    try:
        result = run("chat", "+56911112222", stdin="ayuda\n", env=env)
    finally:
        stop.set()
        thread.join()
        listener.close()

    assert result.returncode == 0, result.stderr
    assert hits == []
    first = result.stdout.splitlines()[0]
    assert "simulador local" in first and "nada se envía a WhatsApp" in first
    assert "Comandos Disponibles" in result.stdout
    # Warnings only by default, and the deployment's outbox left alone.
    assert " INFO " not in result.stderr
    assert not (tmp_path / "deployment.db").exists()


def test_chat_logs_info_when_asked(tmp_path):
    env = {"TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/chat.db"}
    result = run(
        "--log-level", "INFO", "chat", "+56911112222", stdin="ayuda\n", env=env
    )
    assert result.returncode == 0, result.stderr
    assert " INFO " in result.stderr


def test_chat_help_says_it_never_sends_for_real():
    result = run("chat", "--help")
    assert "never sends a real" in " ".join(result.stdout.split())
