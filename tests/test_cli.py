"""The command line as a user runs it: real processes, loopback only."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from bot.chat import _webhook
from bot.config import load_settings
from tests.support import ROOT, signed_headers


def run_bot(*args: str, stdin: str = "", env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(ROOT / "config.yaml"), *args],
        input=stdin,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )


def demo_env(tmp_path) -> dict[str, str]:
    env = {"TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/chat.db"}
    for name in ("WHATSAPP_API_TOKEN", "WHATSAPP_API_BASE_URL"):
        env[name] = ""
    return env


def test_chat_answers_ayuda_and_an_unknown_text(tmp_path):
    result = run_bot(
        "chat", "+56911112222", stdin="ayuda\nqwerty zxcv\n", env=demo_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    replies = result.stdout.split("bot> ")[1:]
    assert len(replies) == 2
    assert "Comandos Disponibles" in replies[0]
    assert "AYUDA" in replies[1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("lines_read", [0, 1])
def test_chat_whose_reader_goes_away_stops_without_a_traceback(tmp_path, lines_read):
    # `tracbot chat … | head -1` printed a BrokenPipeError traceback, and,
    # when its first line was the one refused, never exited: its processing
    # thread kept the process alive.
    chat = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(ROOT / "config.yaml")]
        + ["chat", "+56911112222"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **demo_env(tmp_path)},
    )
    assert chat.stdout is not None and chat.stdin is not None
    for _ in range(lines_read):
        chat.stdout.readline()  # as `head -1` reads it
    chat.stdout.close()
    _, err = chat.communicate(b"ayuda\nestado\nguia\n", timeout=90)
    assert b"Traceback" not in err, err.decode()
    assert chat.returncode == 141


def test_conversation_tests_print_their_report_not_the_info_log(tmp_path):
    # Each case logged its whole tracbot's start at INFO: ~200 lines a file
    # on stderr around a report of a dozen.
    cases = ROOT / "tests" / "conversations" / "cancelar.yaml"
    result = run_bot("test", str(cases), env=demo_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "cases passed" in result.stdout
    assert "INFO" not in result.stderr


def test_a_template_failing_at_run_is_one_log_line_with_its_place(tmp_path):
    # 80 lines of traceback through the state machine, and a line of the
    # `transitions` library's own without the place, for each message.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("flows", "message_templates", "demo"):
        shutil.copytree(ROOT / name, project / name)
    shutil.copy(ROOT / "config.yaml", project / "config.yaml")
    template = project / "message_templates" / "estado_viajes.j2"
    template.write_text(template.read_text("utf-8").replace("v.patente", "v.patnete"))

    result = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(project / "config.yaml")]
        + ["chat", "+56911112222"],
        input="estado\n",
        env={**os.environ, **demo_env(tmp_path)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "Lo siento" in result.stdout
    [line] = result.stderr.splitlines()
    assert "ERROR tracbot.dispatcher reply failed" in line
    assert "estado_viajes.j2:6: 'dict object' has no attribute 'patnete'" in line


def test_chat_rejects_something_that_is_not_a_number(tmp_path):
    result = run_bot("chat", "abc", env=demo_env(tmp_path))
    assert result.returncode == 2
    assert "not a phone number" in result.stderr


def test_chat_beside_a_running_demo_gets_every_reply_on_a_copy(tmp_path):
    # Both processes ran a dispatcher and a sender on one file: now and then
    # the demo took a chat message and printed its reply on its own console.
    env = demo_env(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(ROOT / "config.yaml")]
        + ["serve", "--port", str(free_port())],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    database = tmp_path / "chat.db"
    try:
        _retry(lambda: _owned(database))
        said = ["ayuda", "estado", "guia", "qwerty", "ayuda", "estado"]
        result = run_bot("chat", "+56911112222", stdin="\n".join(said), env=env)
    finally:
        server.terminate()
        console = server.communicate(timeout=30)[0]

    assert result.returncode == 0, result.stderr
    assert "este chat usa una copia" in result.stdout
    assert len(result.stdout.split("bot> ")[1:]) == len(said)
    assert "sin respuesta" not in result.stdout
    assert "WARNING" not in result.stderr
    # Nothing of the chat reached the demo's file or its console.
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM inbox").fetchone() == (0,)
    assert "…2222" not in console


def _owned(database) -> None:
    # The server owns its file once its store is open.
    with open(f"{database}-owner", "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        fcntl.flock(handle, fcntl.LOCK_UN)
    raise OSError("the server has not opened its database yet")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_simulator_runs_by_hand_and_keeps_what_it_received():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "simulator", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        body = {"to": "56911112222", "type": "text", "text": {"body": "hola"}}
        request = urllib.request.Request(
            f"{base}/v23.0/200000000000002/messages",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
        )
        with _retry(lambda: urllib.request.urlopen(request, timeout=5)) as answer:
            sent = json.load(answer)
        assert sent["messages"][0]["id"].startswith("wamid.")
        assert sent["contacts"][0]["wa_id"] == "56911112222"

        with urllib.request.urlopen(f"{base}/_sim/messages", timeout=5) as response:
            received = json.load(response)
        assert [r["body"]["text"]["body"] for r in received] == ["hola"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _retry(call, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_port_no_server_can_take_is_refused():
    # `serve --port 99999` announced that address and listened elsewhere.
    for port in ("99999", "0", "ocho"):
        result = run_bot("serve", "--port", port)
        assert result.returncode == 2
        assert "--port" in result.stderr and "Traceback" not in result.stderr


def test_a_shell_holding_only_the_token_still_chats_checks_and_tests(tmp_path):
    # A production token in the shell stopped every command, chat (which
    # never sends for real) included, for want of the other secrets.
    env = demo_env(tmp_path)
    env["WHATSAPP_API_TOKEN"] = "EAAproduction"
    for name in (
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
        "WHATSAPP_PHONE_NUMBER_ID",
    ):
        env[name] = ""

    chat = run_bot("chat", "+56911112222", stdin="ayuda\n", env=env)
    assert chat.returncode == 0, chat.stderr
    assert "Comandos Disponibles" in chat.stdout

    check = run_bot("check", env=env)
    assert check.returncode == 0, check.stderr
    cases = ROOT / "tests" / "conversations" / "cancelar.yaml"
    test = run_bot("test", str(cases), env=env)
    assert test.returncode == 0, test.stderr
    migrate = run_bot("migrate", env=env)
    assert migrate.returncode == 0, migrate.stderr

    # serve talks to Meta: there the missing secrets are still named.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve = run_bot("serve", "--port", str(port), env=env)
    assert serve.returncode == 2
    assert "WHATSAPP_APP_SECRET" in serve.stderr


def test_the_demo_simulator_listens_where_it_is_told(tmp_path):
    # It took any free port: an operator could not keep it in a range, and
    # found it only in a log line.
    port, simulator_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(ROOT / "config.yaml")]
        + ["serve", "--port", str(port), "--simulator-port", str(simulator_port)],
        env={**os.environ, **demo_env(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        settings = load_settings(ROOT / "config.yaml", env={})
        body = json.dumps(_webhook(settings, "56911112222", "ayuda")).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhook",
            data=body,
            headers=signed_headers(body, settings.whatsapp.app_secret),
        )
        with _retry(lambda: urllib.request.urlopen(request, timeout=5)) as answer:
            assert answer.status == 200

        def replied() -> list:
            url = f"http://127.0.0.1:{simulator_port}/_sim/messages"
            with urllib.request.urlopen(url, timeout=5) as response:
                sent = [r["body"].get("to") for r in json.load(response)]
            if "56911112222" not in sent:
                raise OSError("no reply yet")
            return sent

        _retry(replied)
    finally:
        server.terminate()
        console = server.communicate(timeout=30)[0]
    assert f"simulator at http://127.0.0.1:{simulator_port}" in console


def test_a_simulator_port_with_a_token_is_refused(tmp_path):
    env = {**demo_env(tmp_path), "WHATSAPP_API_TOKEN": "t", "WHATSAPP_APP_SECRET": "s"}
    env |= {"WHATSAPP_WEBHOOK_VERIFY_TOKEN": "v", "WHATSAPP_PHONE_NUMBER_ID": "1"}
    result = run_bot("serve", "--simulator-port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "--simulator-port is for demo mode" in result.stderr


def test_prune_deletes_old_handled_rows_and_keeps_the_rest(tmp_path):
    env = demo_env(tmp_path)
    chat = run_bot("chat", "+56911112222", stdin="ayuda\nestado\n", env=env)
    assert chat.returncode == 0, chat.stderr
    database = tmp_path / "chat.db"
    # The first exchange happened long ago; the second today.
    with sqlite3.connect(database) as db:
        old = "2020-01-01T00:00:00+00:00"
        first_in = db.execute("SELECT MIN(id) FROM inbox").fetchone()[0]
        db.execute("UPDATE inbox SET received_at = ? WHERE id = ?", (old, first_in))
        aged = db.execute(
            "UPDATE outbox SET updated_at = ? WHERE inbox_id = ?", (old, first_in)
        ).rowcount
        outbox = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert aged >= 1

    result = run_bot("prune", "--days", "30", env=env)
    assert result.returncode == 0, result.stderr
    said = f"outbox {aged}, inbox 1, link_attempts 0, api_requests 0"
    assert said in result.stdout
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM inbox").fetchone() == (1,)
        left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert left == outbox - aged > 0

    # Fewer days than Meta's redelivery would forget handled webhooks.
    refused = run_bot("prune", "--days", "7", env=env)
    assert refused.returncode == 2
    assert "keep at least 8 days" in refused.stderr


def test_a_simulator_port_in_use_is_one_line(tmp_path):
    # A traceback through uvloop; and the same port twice blamed --port.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = run_bot(
            "serve",
            "--port",
            str(free_port()),
            "--simulator-port",
            str(busy),
            env=demo_env(tmp_path),
        )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"tracbot: port {busy} on 127.0.0.1 is already in use (--simulator-port)"
    )
    assert "Traceback" not in result.stderr

    port = str(free_port())
    twice = run_bot(
        "serve", "--port", port, "--simulator-port", port, env=demo_env(tmp_path)
    )
    assert twice.stderr.splitlines()[-1] == (
        f"tracbot: --simulator-port {port} is the server's port too"
    )


def test_a_storage_folder_that_cannot_be_made_is_one_line(tmp_path):
    # A file where the database's folder goes: a traceback ending in
    # "[Errno 17] File exists", once even "cannot listen on 127.0.0.1:0".
    (tmp_path / "afile").write_text("")
    env = {
        **demo_env(tmp_path),
        "TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/afile/x.db",
    }
    result = run_bot("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"tracbot: storage: cannot make the database's folder {tmp_path}/afile: "
        "File exists"
    )
