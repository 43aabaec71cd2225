"""What a backend developer sees of the outbound rules, over loopback HTTP:
long texts to a closed window, error bodies, duplicate phones, template
parameters, and phone numbers kept out of the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.api.openapi import PREFIX
from tests.api.test_api import (
    ADMIN,
    BACKEND,
    CAMILA,
    _open_window,
    auth,
    post,
    sim_bodies,
)
from tests.api.test_api import api as api  # noqa: F401 (the fixture)
from tests.support import runtime_of, settle


def template_values(body: dict) -> list[str]:
    return [p["text"] for p in body["template"]["components"][0]["parameters"]]


def words(count: int) -> str:
    return " ".join(f"palabra{n:05d}" for n in range(count))


# Long texts and the window


async def test_long_text_to_a_closed_window_goes_whole_as_templates(api):
    message = words(400)  # 5,199 characters, one paragraph
    status, body = await post(api, "/send_text", {"phone": CAMILA, "message": message})

    assert status == 202
    await settle(runtime_of(api))
    sent = sim_bodies(api)
    # Every part went as a template (the window is closed), none free-form.
    assert {b["type"] for b in sent} == {"template"}
    assert len(sent) == len(body["message_ids"]) == 6
    values = [value for b in sent for value in template_values(b)]
    assert all(len(value) <= 1024 for value in values)
    assert " ".join(values) == message


async def test_long_text_inside_the_window_goes_free_form(api):
    await _open_window(api, "56911120011")
    message = words(400)
    status, body = await post(api, "/send_text", {"phone": CAMILA, "message": message})

    assert status == 202 and len(body["message_ids"]) == 2
    await settle(runtime_of(api))
    texts = [b["text"]["body"] for b in sim_bodies(api, "text")]
    assert " ".join(texts) == message
    assert sim_bodies(api, "template") == []


async def test_openapi_says_what_send_text_does_with_a_closed_window(api):
    response = await api.get(f"{PREFIX}/openapi.json")
    described = (await response.json())["paths"][f"{PREFIX}/send_text"]["post"]
    assert "1024" in described["description"]
    assert "409" in described["responses"]


# Error bodies


async def test_a_too_long_message_is_refused_without_echoing_it(api):
    status, body = await post(
        api, "/send_text", {"phone": CAMILA, "message": "C" * 20000}
    )
    assert status == 400
    assert body["error"] == "message: must be at most 16384 characters, got 20000"


async def test_an_unknown_field_is_named_and_a_long_value_cut(api):
    status, body = await post(
        api, "/send_text", {"phone": CAMILA, "message": "x", "X" * 500: 1}
    )
    assert status == 400
    assert body["error"].startswith("body: unknown field 'XXX")
    assert len(body["error"]) < 80


@pytest.mark.parametrize("phone", ["abc", "+56 2", "+56911112222x", "+5215512345678x"])
async def test_a_bad_phone_says_what_is_expected(api, phone):
    status, body = await post(api, "/send_text", {"phone": phone, "message": "x"})
    assert status == 400
    assert body["error"].startswith(f"{phone!r} is not a")
    assert body["error"].endswith("expected E.164 like +56912345678")
    assert "did not seem" not in body["error"]


@pytest.mark.parametrize("phone", ["+56 9 1111 22222", "+56 600 123 4567"])
async def test_a_number_of_the_wrong_length_for_a_phone_is_refused(api, phone):
    # A digit too many was queued as +569111122222: possible for Chile as
    # some kind of number, not as a mobile or a landline.
    status, body = await post(api, "/send_text", {"phone": phone, "message": "x"})
    assert status == 400
    assert "too many or too few digits for a mobile or a landline" in body["error"]


async def test_a_mexican_whatsapp_id_is_a_phone_kept_as_meta_sends_it(api):
    # WhatsApp's ids for Mexican mobiles keep a 1 the numbering plan dropped:
    # the wa_id of a driver's own webhook was refused as not valid.
    status, body = await post(
        api, "/send_text", {"phone": "5215512345678", "message": "x"}
    )
    assert status == 202 and body["phone"] == "+5215512345678"

    status, body = await post(
        api, "/send_text", {"phone": "+521 55 1234 56789", "message": "x"}
    )
    assert status == 400


# Alerts and template parameters


async def test_an_alert_to_the_same_phone_twice_is_sent_once(api):
    status, body = await post(
        api,
        "/alert",
        {
            "phones": ["+56911112222", "9 1111 2222", "nope"],
            "tipo_alerta": "Caída",
            "descripcion": "Servidor de guías sin respuesta",
        },
    )

    assert status == 202
    first, second, third = body["results"]
    assert first["status"] == "queued" and second["status"] == "duplicate"
    assert second["phone"] == "+56911112222"
    assert second["message_ids"] == first["message_ids"]
    assert third["status"] == "invalid"
    await settle(runtime_of(api))
    assert len([b for b in sim_bodies(api) if b["to"] == "56911112222"]) == 1


async def test_send_template_parameters_are_put_on_one_line(api):
    status, _ = await post(
        api,
        "/send_template",
        {
            "phone": CAMILA,
            "template_name": "mensaje_tracmin",
            "parameters": ["a\nb\tc      d"],
        },
    )
    assert status == 202
    await settle(runtime_of(api))
    [sent] = sim_bodies(api, "template")
    assert template_values(sent) == ["a b c d"]


# Logs


@pytest.fixture
def api_log(caplog):
    # The tracbot loggers may not propagate (logs.setup): listen on them.
    logger = logging.getLogger("tracbot")
    caplog.set_level(logging.INFO, logger="tracbot")
    if logger.propagate:
        yield caplog
        return
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


async def test_a_refused_history_call_logs_no_phone_number(api, api_log):
    caplog = api_log
    response = await api.get(f"{PREFIX}/history/+56911112222", headers=auth(BACKEND))

    assert response.status == 403
    assert "lacks role=admin" in caplog.text
    assert "11112222" not in caplog.text
    # The admin token still reads it.
    response = await api.get(f"{PREFIX}/history/+56911112222", headers=auth(ADMIN))
    assert response.status == 200


async def test_a_text_right_after_a_drivers_first_message_goes_as_text(
    tmp_path, aiohttp_client
):
    # Sent before the dispatcher had handled the driver's message, it saw
    # the window closed and went as the paid `text` template.
    import dataclasses

    from bot.app import create_app
    from tests import support

    settings = support.demo_settings(tmp_path, TRACBOT_API_TOKEN_BACKEND=BACKEND)
    paused = dataclasses.replace(settings.engine, max_concurrent_phones=0)
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, engine=paused))
    )
    assert await support.driver_says(client, "56911120011", "hola") == 200

    status, _ = await post(client, "/send_text", {"phone": CAMILA, "message": "ya"})
    assert status == 202
    # Processing is paused: the driver's message stays in the inbox.
    for _ in range(200):
        if sim_bodies(client):
            break
        await asyncio.sleep(0.02)
    [sent] = sim_bodies(client)
    assert sent["type"] == "text" and sent["text"]["body"] == "ya"
