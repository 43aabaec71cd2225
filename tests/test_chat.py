"""`tracbot chat` never touches what a running service owns."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from bot.chat import choices_of, offline, typed_message
from bot.config import load_settings
from tests.support import ROOT


def test_chat_on_a_server_database_works_on_a_scratch_one(tmp_path):
    # A shell without the token, beside a service on the shared PostgreSQL:
    # chat's sender took the service's queued alerts and "sent" them to its
    # own simulator, and they never reached Meta.
    env = {"TRACBOT_STORAGE_URL": "postgresql://tracbot@127.0.0.1:1/tracbot"}
    settings = load_settings(ROOT / "config.yaml", env=env)
    assert settings.demo

    chat = offline(settings, tmp_path)
    assert chat.storage_url == f"sqlite:///{tmp_path / 'chat.db'}"
    assert chat.whatsapp.access_token is None


def test_chat_on_the_demo_file_keeps_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    settings = load_settings(ROOT / "config.yaml", env={"TRACBOT_STORAGE_URL": url})
    assert offline(settings, tmp_path / "scratch").storage_url == url


def test_a_line_written_as_a_shown_choice_is_a_tap_on_it():
    # Chat could only send text: a state that takes only a button or a list
    # row could not be tried from it, and `[Día]` looked tappable.
    buttons = {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "¿Turno?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "dia", "title": "Día"}},
                    {"type": "reply", "reply": {"id": "noche", "title": "Noche"}},
                ]
            },
        },
    }
    offered = choices_of(buttons)
    assert typed_message("[día]", offered) == {
        "type": "interactive",
        "interactive": {
            "type": "button_reply",
            "button_reply": {"id": "dia", "title": "Día"},
        },
    }
    # Not a choice shown, or not in brackets: the text as typed.
    for line in ("[Tarde]", "Día"):
        assert typed_message(line, offered) == {"type": "text", "text": {"body": line}}

    rows = {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "action": {
                "button": "Ver",
                "sections": [{"title": "F", "rows": [{"id": "n", "title": "Norte"}]}],
            },
        },
    }
    tap = typed_message(" [Norte] ", choices_of(rows))
    assert tap["interactive"]["list_reply"] == {"id": "n", "title": "Norte"}
    # A text reply leaves the last choices standing.
    assert choices_of({"type": "text", "text": {"body": "hola"}}) is None


def test_a_pin_is_typed_as_its_coordinates():
    assert typed_message("📍 -23.65, -70.40", []) == {
        "type": "location",
        "location": {"latitude": -23.65, "longitude": -70.4},
    }
    # Meant as a pin, not written as one: chat says how, sends nothing.
    for line in ("📍 cerca", "📍 -23,65, -70,40", "[📍 Enviar ubicación]"):
        assert typed_message(line, []) is None


def test_chat_taps_a_button_only_state_through_the_whole_bot(tmp_path):
    # VINCULAR's confirmation, answered by its button, not by typing "si".
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(ROOT / "config.yaml")]
        + ["chat", "+56911113377"],
        input="vincular\n12.345.678-5\n[Sí, soy yo]\n",
        env={
            **os.environ,
            "TRACBOT_STORAGE_URL": f"sqlite:///{tmp_path}/chat.db",
            "WHATSAPP_API_TOKEN": "",
        },
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "quedó vinculado" in result.stdout.split("bot> ")[-1]
    db = sqlite3.connect(tmp_path / "chat.db")
    [(payload,)] = db.execute(
        "SELECT payload FROM inbox WHERE payload LIKE '%button_reply%'"
    ).fetchall()
    assert '"id": "si"' in payload or '"id":"si"' in payload
