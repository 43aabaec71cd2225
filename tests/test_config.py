"""Settings from config.yaml and the environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.business.settings import business_settings
from bot.config import load_settings
from bot.errors import ConfigError
from tests.support import ROOT

CONFIG = ROOT / "config.yaml"


def test_no_token_means_demo_mode_with_demo_secrets():
    settings = load_settings(CONFIG, env={})
    assert settings.demo
    assert settings.whatsapp.app_secret
    assert settings.whatsapp.api_base_url == "https://graph.facebook.com"


def test_base_url_is_overridden_by_the_environment():
    settings = load_settings(
        CONFIG, env={"WHATSAPP_API_BASE_URL": "http://127.0.0.1:9"}
    )
    assert settings.whatsapp.api_base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    "missing",
    [
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
        "WHATSAPP_PHONE_NUMBER_ID",
    ],
)
def test_with_a_token_each_missing_secret_is_named(missing):
    env = {
        "WHATSAPP_API_TOKEN": "t",
        "WHATSAPP_APP_SECRET": "s",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "v",
        "WHATSAPP_PHONE_NUMBER_ID": "1",
    }
    del env[missing]
    with pytest.raises(ConfigError, match=missing):
        load_settings(CONFIG, env=env)


SECRETS = {
    "WHATSAPP_APP_SECRET": "s",
    "WHATSAPP_WEBHOOK_VERIFY_TOKEN": "v",
    "WHATSAPP_PHONE_NUMBER_ID": "1",
}


def test_a_token_pasted_with_a_line_break_around_it_is_trimmed():
    env = {**SECRETS, "WHATSAPP_API_TOKEN": "  EAAtoken123\n"}
    settings = load_settings(CONFIG, env=env)
    assert settings.whatsapp.access_token == "EAAtoken123"


def test_secrets_read_from_files_lose_their_line_break():
    # Mounted secrets end in "\n": kept, every webhook got 401 and the
    # handshake 403, and an API token of " " silently disabled the role.
    env = {
        "WHATSAPP_API_TOKEN": "EAAtoken123",
        "WHATSAPP_APP_SECRET": "op-secret\n",
        "WHATSAPP_WEBHOOK_VERIFY_TOKEN": " vt\n",
        "WHATSAPP_PHONE_NUMBER_ID": "1\n",
        "TRACBOT_API_TOKEN_BACKEND": "be-tok\n",
        "TRACBOT_API_TOKEN_ADMIN": " ",
    }
    settings = load_settings(CONFIG, env=env)
    whatsapp = settings.whatsapp
    assert (whatsapp.app_secret, whatsapp.verify_token) == ("op-secret", "vt")
    assert whatsapp.phone_number_id == "1"
    tokens = {token.env: token.token for token in settings.api.tokens}
    assert tokens == {"TRACBOT_API_TOKEN_BACKEND": "be-tok"}


def test_a_blank_access_token_is_refused_not_taken_for_demo_mode():
    # A token file mounted empty started a deployment in demo mode: its
    # replies went to the built-in simulator, never to Meta.
    with pytest.raises(ConfigError, match="WHATSAPP_API_TOKEN is set but blank"):
        load_settings(CONFIG, env={**SECRETS, "WHATSAPP_API_TOKEN": "  \n"})
    env = {**SECRETS, "WHATSAPP_API_TOKEN": "EAAtoken", "TRACBOT_API_TOKEN_ADMIN": " "}
    settings = load_settings(CONFIG, env=env)
    assert "TRACBOT_API_TOKEN_ADMIN is set but blank" in settings.api.unset


@pytest.mark.parametrize("token", ["EAA\ntoken", "EAA\ttoken", "EAAtokén"])
def test_a_token_no_header_can_carry_is_refused_at_load(token):
    # It went into the Authorization header as is: a line break in it
    # would end the header and start another.
    env = {**SECRETS, "WHATSAPP_API_TOKEN": token}
    with pytest.raises(ConfigError, match="WHATSAPP_API_TOKEN holds a line break"):
        load_settings(CONFIG, env=env)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:18090?x=1", "expected an http"),
        ("http://127.0.0.1:99999", "expected an http"),
        ("http://127.0.0.1:0", "expected an http"),
        ("https://user@graph.example", "expected an http"),
        ("https://graph.facebook.com/v23.0", "ends with an API version"),
        ("http://127.0.0.1:18090/v23.0/", "ends with an API version"),
    ],
)
def test_a_base_url_no_send_could_use_is_refused_at_load(url, why):
    # Each started, then every send failed (and, before, every reply with it).
    with pytest.raises(ConfigError, match=f"WHATSAPP_API_BASE_URL: .*{why}"):
        load_settings(CONFIG, env={"WHATSAPP_API_BASE_URL": url})


def test_a_base_url_with_a_proxy_path_is_taken():
    url = "http://127.0.0.1:8080/graph-proxy"
    settings = load_settings(CONFIG, env={"WHATSAPP_API_BASE_URL": url})
    assert settings.whatsapp.api_base_url == url


def test_sqlite_path_is_relative_to_the_config_file():
    settings = load_settings(CONFIG, env={})
    assert settings.storage_url == f"sqlite:///{ROOT / 'var' / 'tracbot.db'}"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_sqlite_in_memory_stays_in_memory(url):
    # `:memory:` is SQLite's name for no file; it used to become one named
    # ":memory:" in the config folder.
    settings = load_settings(CONFIG, env={"TRACBOT_STORAGE_URL": url})
    assert settings.storage_url == "sqlite://"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:",
        "sqlite:tracbot.db",
        "sqlite:/x.db",
        "sqlite://x.db",
        "sqlite:///",
        "sqlite:////",
        "sqlite:////:memory:",
        "sqlite:///x.db?mode=ro",
        "SQLITE:///x.db",
    ],
)
def test_a_malformed_sqlite_url_is_a_config_error(url):
    with pytest.raises(ConfigError) as caught:
        load_settings(CONFIG, env={"TRACBOT_STORAGE_URL": url})
    assert "TRACBOT_STORAGE_URL" in str(caught.value)
    assert "sqlite:///relative/file.db" in str(caught.value)


def test_a_wrong_type_names_the_file_and_the_setting(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: ochenta\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert str(path) in str(caught.value)
    assert "server.port" in str(caught.value)


def test_serve_refuses_to_start_without_a_required_secret(tmp_path):
    env = {"WHATSAPP_API_TOKEN": "t", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(CONFIG), "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "WHATSAPP_PHONE_NUMBER_ID" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_count_must_be_whole(tmp_path):
    # 0.5 phones at once was taken as 0: nothing answered, the warning said 0.
    path = tmp_path / "config.yaml"
    path.write_text("engine:\n  max_concurrent_phones: 0.5\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match="engine.max_concurrent_phones: expected a whole"
    ):
        load_settings(path, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Each was ignored without a word, and the default used.
        (
            "engine:\n  poll_secs: 1.0\n",
            "engine.poll_secs: unknown setting in engine (known: flows_dir, "
            "gather_ms, max_concurrent_phones, poll_seconds, templates_dir)",
        ),
        ("enigne:\n  poll_seconds: 1\n", "enigne: unknown setting at the top level"),
        (
            "whatsapp:\n  secrets:\n    app_secert: APP\n",
            "whatsapp.secrets.app_secert: unknown setting in whatsapp.secrets",
        ),
        ("business:\n  fixtur: x.yaml\n", "business.fixtur: unknown setting"),
        ("api:\n  max_pages: 5\n", "api.max_pages: unknown setting in api"),
        ("server: 9090\n", "server: expected a mapping of settings, got 9090"),
        # Each found out only at the first alert or send, as a failed request.
        ("api:\n  timezone: Mars/Base\n", "api.timezone: expected a zone"),
        ("api:\n  default_region: XX\n", "api.default_region: expected a country"),
        # The alert would have gone out without its template, or its values.
        ("templates:\n  alertt: {name: a}\n", "templates.alertt: unknown use"),
        (
            "templates:\n  alert: {name: a, parmeters: [tipo]}\n",
            "templates.alert.parmeters: unknown setting",
        ),
    ],
)
def test_a_setting_nothing_reads_is_refused_with_the_known_ones(
    tmp_path, text, message
):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert message in str(caught.value)


def test_queries_take_any_name(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "templates:\n  alert: {name: aviso, language: es}\n"
        "business:\n  queries:\n    mi_consulta: SELECT 1\n",
        encoding="utf-8",
    )
    assert load_settings(path, env={}).templates["alert"].name == "aviso"


def test_the_shipped_config_has_no_unknown_setting():
    settings = load_settings(ROOT / "config.yaml", env={})
    assert settings.server.port == 8080


@pytest.mark.parametrize("port", [0, 80800, -1])
def test_a_port_out_of_range_is_refused(tmp_path, port):
    # 80800 was taken: the log said :80800, the OS listened elsewhere.
    path = tmp_path / "config.yaml"
    path.write_text(f"server:\n  port: {port}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"server.port: expected a"):
        load_settings(path, env={})


def test_a_business_setting_left_empty_takes_its_default(tmp_path):
    # `link_attempts_per_hour:` with no value stopped chat with "got None",
    # where every other section reads an empty setting as its default.
    path = tmp_path / "config.yaml"
    path.write_text(
        "business:\n  link_attempts_per_hour:\n  timeout_seconds:\n  url:\n",
        encoding="utf-8",
    )
    business = business_settings(load_settings(path, env={}), env={})
    assert business.link_attempts_per_hour == 3
    assert business.timeout_seconds == 5


def test_x_keys_hold_yaml_anchors(tmp_path):
    # As in Compose files: a place for anchors that nothing reads.
    path = tmp_path / "config.yaml"
    path.write_text(
        "x-esperas: &esperas\n  poll_seconds: 2.5\nengine:\n  <<: *esperas\n",
        encoding="utf-8",
    )
    assert load_settings(path, env={}).engine.poll_seconds == 2.5


@pytest.mark.parametrize(
    "text",
    [
        "whatsapp:\n  timeout_seconds: 0\n",
        "storage:\n  acquire_timeout_seconds: 0\n",
    ],
)
def test_a_time_of_zero_is_refused(tmp_path, text):
    # whatsapp.timeout_seconds: 0 started, and every send failed "timed out
    # after 0 s".
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="timeout_seconds: expected a number above 0"):
        load_settings(path, env={})


def test_a_missing_config_file_says_where_to_run_from(tmp_path, monkeypatch):
    # Run from flows/: "[Errno 2] No such file or directory: 'config.yaml'".
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_settings(Path("config.yaml"), env={})
    said = str(refused.value)
    assert said.startswith(f"{tmp_path / 'config.yaml'}: no such config file")
    assert "--config" in said
