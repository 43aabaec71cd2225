"""`tracbot chat` never touches what a running service owns."""

from __future__ import annotations

from bot.chat import offline
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
