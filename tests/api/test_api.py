"""The backend API over loopback HTTP: auth, sends, notifications, history,
metrics, operator endpoints, and the OpenAPI document against the server."""

from __future__ import annotations

import asyncio
import sqlite3

import jsonschema
import pytest

from bot.api.openapi import PREFIX
from tests.support import corpus, demo_settings, runtime_of, settle, signed_headers

BACKEND = "backend-secret-for-tests"
ADMIN = "admin-secret-for-tests"
CAMILA = "+56911120011"


@pytest.fixture
async def api(tmp_path, aiohttp_client):
    from bot.app import create_app

    settings = demo_settings(
        tmp_path,
        TRACBOT_API_TOKEN_BACKEND=BACKEND,
        TRACBOT_API_TOKEN_ADMIN=ADMIN,
    )
    return await aiohttp_client(create_app(settings))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(api, path: str, body: dict, token: str = BACKEND):
    response = await api.post(f"{PREFIX}{path}", json=body, headers=auth(token))
    return response.status, await response.json()


def sim_bodies(api, kind: str | None = None) -> list[dict]:
    received = runtime_of(api).simulator.received
    return [
        r["body"]
        for r in received
        if r["status"] == 200 and (kind is None or r["body"].get("type") == kind)
    ]


# Authentication


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {BACKEND}"}],
)
async def test_missing_or_unknown_token_is_401(api, headers):
    response = await api.post(
        f"{PREFIX}/send_text", json={"phone": CAMILA, "message": "x"}, headers=headers
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "error" in await response.json()


async def test_token_without_the_role_is_403(api):
    response = await api.get(f"{PREFIX}/history/{CAMILA}", headers=auth(BACKEND))
    assert response.status == 403


# Sending


async def test_send_text_queues_and_answers_at_once(api):
    status, body = await post(
        api, "/send_text", {"phone": "9 1112 0011", "message": "Hola"}
    )

    assert status == 202
    assert body["status"] == "queued" and body["phone"] == CAMILA
    assert len(body["message_ids"]) == 1
    await settle(runtime_of(api))
    # Camila never wrote: her window is closed, the template goes instead.
    [sent] = sim_bodies(api)
    assert sent["type"] == "template"
    assert sent["template"]["name"] == "mensaje_tracmin"
    assert sent["to"] == "56911120011"


@pytest.mark.parametrize(
    "phone", ["12", "+56 2", "hola", "", 56911120011, "+56911120011x99"]
)
async def test_invalid_phone_is_a_clear_400(api, phone):
    status, body = await post(api, "/send_text", {"phone": phone, "message": "Hola"})
    assert status == 400
    assert "phone" in body["error"]


@pytest.mark.parametrize(
    "message",
    [
        *("   ", "\n\t ", "\u200b", "\ufeff", "\u2060\u200d", "\u00ad", "\u0000"),
        # Letters that draw nothing: a Braille blank, Hangul fillers.
        *("\u2800", "\u3164", "\u115f\u1160"),
    ],
)
async def test_a_text_of_only_spaces_is_a_clear_400(api, message):
    # Spaces were answered 200 with no message ids; a zero-width space or a
    # control character reached the driver as an empty message.
    status, body = await post(api, "/send_text", {"phone": CAMILA, "message": message})
    assert status == 400
    assert body["error"] == ("message has no text, only spaces or invisible characters")


async def test_blank_notification_fields_are_refused_or_left_out(api):
    # "📄 Folio:  / 👤 Cliente: ​ / 🚚 Conductor: " reached the driver.
    guide = {"phone": CAMILA, "folio": " ", "cliente": "\u200b", "conductor": "\n"}
    status, body = await post(api, "/notify/guide_created", guide)
    assert status == 400
    assert body["error"].startswith("folio has no text")

    # An optional field left blank is as if not given.
    trip = {"phone": CAMILA, "patente": "AB-12", "estado": "En ruta", "ubicacion": "  "}
    status, _ = await post(api, "/notify/trip_status", trip)
    assert status == 202
    await settle(runtime_of(api))
    [sent] = [b for b in sim_bodies(api) if b.get("to") == CAMILA.lstrip("+")]
    assert "Ubicación" not in str(sent)


async def test_long_text_is_split_into_parts(api):
    await _open_window(api, "56911120011")
    paragraph = "Línea de reporte. " * 100
    message = "\n\n".join([paragraph] * 4)  # about 7,200 characters
    status, body = await post(api, "/send_text", {"phone": CAMILA, "message": message})

    assert status == 202 and len(body["message_ids"]) == 2


async def test_send_template_uses_name_language_and_parameters(api):
    status, body = await post(
        api,
        "/send_template",
        {
            "phone": CAMILA,
            "template_name": "viaje_actualizado",
            "language": "es_CL",
            "parameters": ["AB-12-CD", "En Tránsito"],
        },
    )
    assert status == 202
    await settle(runtime_of(api))
    [sent] = sim_bodies(api, "template")
    assert sent["template"]["language"] == {"code": "es_CL"}
    values = [p["text"] for p in sent["template"]["components"][0]["parameters"]]
    assert values == ["AB-12-CD", "En Tránsito"]


async def test_send_template_refuses_a_configured_template_short_of_values(api):
    # Accepted with one of its three values, then refused by Meta (132000).
    status, body = await post(
        api,
        "/send_template",
        {
            "phone": CAMILA,
            "template_name": "viaje_actualizado",
            "language": "es",
            "parameters": ["AB-12-CD"],
        },
    )
    assert status == 400
    assert body["error"] == (
        "template 'viaje_actualizado' (es) takes 4 parameters (emoji, patente, "
        "estado, ubicacion; templates.trip_status in the config), got 1"
    )
    assert sim_bodies(api) == []


async def test_trip_status_text_is_the_seed_message_inside_the_window(api):
    await _open_window(api, "56911120011")
    status, _ = await post(
        api,
        "/notify/trip_status",
        {
            "phone": CAMILA,
            "patente": "AB-12-CD",
            "estado": "En Tránsito",
            "ubicacion": "-23.65, -70.40",
        },
    )
    assert status == 202
    await settle(runtime_of(api))

    [sent] = sim_bodies(api, "text")
    assert sent["text"]["body"] == (
        "🚛 *Actualización de Viaje*\n\n"
        "🚛 Patente: AB-12-CD\n📊 Estado: En Tránsito\n"
        "📍 Ubicación: -23.65, -70.40\n\nTracmin - Extracción y Logística"
    )


async def test_an_alert_outside_the_window_keeps_its_severity(api):
    # The template had tipo, descripcion and hora: a critical alert to an
    # admin who had not written in a day read like any other.
    status, _ = await post(
        api,
        "/alert",
        {
            "phones": [CAMILA],
            "tipo_alerta": "SAP",
            "descripcion": "Sin conexión con SAP",
            "severidad": "critical",
        },
    )
    assert status == 202
    await settle(runtime_of(api))

    [sent] = sim_bodies(api)
    assert sent["template"]["name"] == "alerta_sistema"
    values = [p["text"] for p in sent["template"]["components"][0]["parameters"]]
    assert values[:3] == ["🔴", "SAP", "Sin conexión con SAP"]
    assert len(values) == 4


async def test_guide_created_outside_the_window_goes_as_its_template(api):
    status, _ = await post(
        api,
        "/notify/guide_created",
        {
            "phone": CAMILA,
            "folio": "F-1001",
            "cliente": "Minera Sur",
            "conductor": "Camila Rojas",
        },
    )
    assert status == 202
    await settle(runtime_of(api))

    [sent] = sim_bodies(api)
    assert sent["template"]["name"] == "guia_generada"
    values = [p["text"] for p in sent["template"]["components"][0]["parameters"]]
    assert values == ["F-1001", "Minera Sur", "Camila Rojas"]


async def test_alert_gives_one_result_per_phone(api):
    for wa_id in ("56911120011", "56911120016"):
        await _open_window(api, wa_id)
    status, body = await post(
        api,
        "/alert",
        {
            "phones": [CAMILA, "123", "+56911120016"],
            "tipo_alerta": "SAP",
            "descripcion": "Sin conexión",
            "severidad": "critical",
        },
    )

    assert status == 202
    assert [r["status"] for r in body["results"]] == ["queued", "invalid", "queued"]
    # The number as the backend wrote it, not quoted again.
    assert body["results"][1]["phone"] == "123"
    await settle(runtime_of(api))
    texts = [b["text"]["body"] for b in sim_bodies(api, "text")]
    assert len(texts) == 2
    assert texts[0].startswith("🔴 *ALERTA DEL SISTEMA*\n\n🔧 Tipo: SAP\n")
    assert "⏰ Hora: " in texts[0]


async def test_body_not_matching_the_schema_is_400(api):
    status, body = await post(
        api,
        "/alert",
        {
            "phones": [CAMILA],
            "tipo_alerta": "x",
            "descripcion": "y",
            "severidad": "mucha",
        },
    )
    assert status == 400 and "severidad" in body["error"]


# History and metrics


async def test_history_is_newest_first_with_paging_and_total(api):
    for n in range(5):
        await post(api, "/send_text", {"phone": CAMILA, "message": f"m{n}"})
    await settle(runtime_of(api))

    response = await api.get(
        f"{PREFIX}/history/{CAMILA}?limit=2&offset=1", headers=auth(ADMIN)
    )
    body = await response.json()

    assert response.status == 200
    # The window is closed: five texts queued as five templates.
    assert body["total"] == 5 and len(body["messages"]) == 2
    ids = [m["id"] for m in body["messages"]]
    assert ids == sorted(ids, reverse=True)
    assert {m["direction"] for m in body["messages"]} == {"outgoing"}


async def test_history_shows_a_reactions_emoji_and_its_removal(api):
    # Both showed an empty content: the emoji was stored, never shown.
    for name in ("reaction_added.json", "reaction_removed.json"):
        body = corpus(name)
        await api.post("/webhook", data=body, headers=signed_headers(body))
    await settle(runtime_of(api))

    response = await api.get(f"{PREFIX}/history/{CAMILA}", headers=auth(ADMIN))
    messages = (await response.json())["messages"]

    reactions = [(m["type"], m["content"]) for m in messages]
    assert sorted(reactions, key=str) == [("reaction", "❤️"), ("reaction", None)]


async def test_metrics_count_the_period(api):
    await _open_window(api, "56911120011")
    for n in range(3):
        await post(api, "/send_text", {"phone": CAMILA, "message": f"m{n}"})
    await settle(runtime_of(api))

    response = await api.get(f"{PREFIX}/metrics", headers=auth(ADMIN))
    body = await response.json()

    assert response.status == 200
    assert body["metrics"]["sent"] == 3
    assert body["metrics"]["failed"] == 0
    assert 0 <= body["metrics"]["delivery_rate"] <= 100


async def test_metrics_period_must_be_ordered(api):
    response = await api.get(
        f"{PREFIX}/metrics?start_date=2026-06-02&end_date=2026-06-01",
        headers=auth(ADMIN),
    )
    assert response.status == 400


# Operator endpoints


async def test_health_readiness_and_prometheus(api):
    assert (await api.get("/healthz")).status == 200
    ready = await api.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"

    await post(api, "/send_text", {"phone": CAMILA, "message": "hola"})
    await settle(runtime_of(api))
    response = await api.get("/metrics")
    text = await response.text()

    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    for name in (
        "tracbot_webhook_requests_total",
        "tracbot_inbox_lag_seconds",
        "tracbot_outbox_depth",
        "tracbot_send_latency_seconds_bucket",
        "tracbot_send_errors_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text
    assert 'tracbot_send_attempts_total{outcome="accepted"} 1' in text


# OpenAPI against the running server


async def test_openapi_paths_are_the_servers_routes(api):
    document = await (await api.get(f"{PREFIX}/openapi.json")).json()
    jsonschema.Draft202012Validator.check_schema(
        document["components"]["schemas"]["Alert"]
    )

    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
    }
    served = {
        (route.method, route.resource.canonical)
        for route in api.server.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(PREFIX)
        and route.method != "HEAD"
        and not route.resource.canonical.endswith("openapi.json")
    }
    assert documented == served


async def test_answers_match_the_documented_schemas(api):
    document = await (await api.get(f"{PREFIX}/openapi.json")).json()

    def check(path: str, method: str, status: int, body: dict) -> None:
        response = document["paths"][path][method]["responses"][str(status)]
        schema = response["content"]["application/json"]["schema"]
        resolver = {"$ref": schema["$ref"], "components": document["components"]}
        jsonschema.validate(body, resolver)

    status, body = await post(api, "/send_text", {"phone": CAMILA, "message": "hola"})
    check(f"{PREFIX}/send_text", "post", status, body)
    status, body = await post(api, "/send_text", {"phone": "1", "message": "hola"})
    check(f"{PREFIX}/send_text", "post", status, body)
    status, body = await post(
        api,
        "/alert",
        {"phones": [CAMILA, "x"], "tipo_alerta": "BD", "descripcion": "d"},
    )
    check(f"{PREFIX}/alert", "post", status, body)
    await settle(runtime_of(api))

    response = await api.get(f"{PREFIX}/history/{CAMILA}", headers=auth(ADMIN))
    check(f"{PREFIX}/history/{{phone}}", "get", 200, await response.json())
    response = await api.get(f"{PREFIX}/metrics", headers=auth(ADMIN))
    check(f"{PREFIX}/metrics", "get", 200, await response.json())
    response = await api.get(f"{PREFIX}/metrics")
    check(f"{PREFIX}/metrics", "get", 401, await response.json())


async def _open_window(api, wa_id: str) -> None:
    from storage.base import Conversation, NewInboxEvent, utcnow

    store = runtime_of(api).store
    await store.add_events([NewInboxEvent(f"test:{wa_id}", "notice", wa_id, None, {})])
    event = await store.next_event(wa_id)
    await store.commit_step(
        event.id, Conversation(wa_id=wa_id, last_inbound_at=utcnow()), []
    )


@pytest.mark.parametrize(
    ("path", "body", "said"),
    [
        # Each answered 500 with a traceback.
        ("/send_text", {"phone": CAMILA, "message": "\ud800"}, "lone UTF-16"),
        (
            "/alert",
            {"phones": [CAMILA], "tipo_alerta": "x\udfff", "descripcion": "y"},
            "lone UTF-16",
        ),
    ],
)
async def test_a_lone_surrogate_is_a_clear_400(api, path, body, said):
    status, answer = await post(api, path, body)
    assert status == 400
    assert said in answer["error"]


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("history/+56911120011?offset=99999999999999999999", "offset must be from 0"),
        ("metrics?end_date=0001-01-15", "end_date must be from 1970 to 9998"),
        ("metrics?start_date=9999-12-31T23:00:00-05:00", "start_date must be from"),
        # `+03:00` unencoded: the + arrives as a space.
        ("metrics?start_date=2026-12-05T00:00:00+03:00", "write it %2B"),
    ],
)
async def test_query_values_out_of_range_are_a_clear_400(api, query, said):
    # Each answered 500: an integer past 64 bits, a date that overflowed.
    response = await api.get(f"{PREFIX}/{query}", headers=auth(ADMIN))
    assert response.status == 400
    assert said in (await response.json())["error"]


async def test_a_notification_nothing_can_deliver_is_a_409(tmp_path, aiohttp_client):
    # Without its template and with the window closed, it was queued (202)
    # and Meta refused it; send_text answers 409 in the same case.
    import dataclasses

    from bot.app import create_app

    settings = demo_settings(tmp_path, TRACBOT_API_TOKEN_BACKEND=BACKEND)
    templates = {k: v for k, v in settings.templates.items() if k != "trip_status"}
    settings = dataclasses.replace(settings, templates=templates)
    api = await aiohttp_client(create_app(settings))
    trip = {"phone": CAMILA, "patente": "AB-12", "estado": "En ruta"}

    status, body = await post(api, "/notify/trip_status", trip)
    assert status == 409
    assert "templates.trip_status" in body["error"]
    # Its template still configured, the guide goes as that template.
    guide = {"phone": CAMILA, "folio": "F-1", "cliente": "Minera", "conductor": "Ana"}
    assert (await post(api, "/notify/guide_created", guide))[0] == 202


async def test_history_links_a_template_to_the_text_it_went_out_instead_of(api):
    # The id an alert answered ended `replaced` (the admin's window was
    # closed), and nothing led to the template that went in its place.
    alert = {"phones": [CAMILA], "tipo_alerta": "SAP", "descripcion": "Caída"}
    status, body = await post(api, "/alert", alert)
    assert status == 202
    [asked] = body["results"][0]["message_ids"]
    await settle(runtime_of(api))

    response = await api.get(f"{PREFIX}/history/{CAMILA}", headers=auth(ADMIN))
    entries = {m["id"]: m for m in (await response.json())["messages"]}
    assert entries[asked]["status"] == "replaced"
    [went] = [m for m in entries.values() if m["replaces"] == asked]
    assert went["type"] == "template" and went["status"] != "replaced"


async def test_an_alert_that_fails_half_way_queues_it_for_nobody(api):
    # Each admin was queued in a write of its own: when one failed, the 503
    # left the others queued, and the backend's retry alerted them twice.
    # A trigger makes the database refuse the second admin's row.
    db = sqlite3.connect(runtime_of(api).store.path)
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
        "WHEN NEW.wa_id = '56911113333' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    db.close()
    alert = {"tipo_alerta": "Caída", "descripcion": "Servidor sin respuesta"}

    status, _ = await post(
        api, "/alert", {"phones": ["+56911112222", "+56911113333"], **alert}
    )

    assert status >= 500
    assert await runtime_of(api).store.outbox_items() == []


async def test_an_alert_names_the_admins_nothing_can_reach(tmp_path, aiohttp_client):
    # Without templates.alert, an admin whose window was closed got the
    # alert queued as a text (202) that Meta refuses.
    import dataclasses

    from bot.app import create_app

    settings = demo_settings(tmp_path, TRACBOT_API_TOKEN_BACKEND=BACKEND)
    templates = {k: v for k, v in settings.templates.items() if k != "alert"}
    api = await aiohttp_client(
        create_app(dataclasses.replace(settings, templates=templates))
    )
    await _open_window(api, "56911112222")
    alert = {"tipo_alerta": "Caída", "descripcion": "Servidor sin respuesta"}

    status, body = await post(
        api, "/alert", {"phones": ["+56911112222", "+56911113333"], **alert}
    )
    assert status == 202
    reached, closed = body["results"]
    assert reached["status"] == "queued" and len(reached["message_ids"]) == 1
    assert closed["status"] == "unreachable" and "message_ids" not in closed
    assert "templates.alert" in closed["error"]

    status, body = await post(api, "/alert", {"phones": ["+56911113333"], **alert})
    assert status == 409
    assert "templates.alert" in body["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "said"),
    [
        ("POST", "/send_txt", 404, "Not Found"),
        ("GET", "/send_text", 405, "Method Not Allowed"),
    ],
)
async def test_the_api_answers_json_even_for_aiohttp_s_own_errors(
    api, method, path, status, said
):
    # They came as plain text ("404: Not Found"): a client parsing every
    # error as {"error": ...} failed on them.
    response = await api.request(method, f"{PREFIX}{path}", headers=auth(BACKEND))
    assert response.status == status
    assert response.content_type == "application/json"
    assert (await response.json())["error"] == said
    if status == 405:
        assert response.headers["Allow"] == "POST"


async def test_a_body_over_the_limit_is_a_json_413(tmp_path, aiohttp_client):
    import dataclasses

    from bot.app import create_app

    settings = demo_settings(tmp_path, TRACBOT_API_TOKEN_BACKEND=BACKEND)
    small = dataclasses.replace(settings.server, max_body_bytes=1024)
    api = await aiohttp_client(create_app(dataclasses.replace(settings, server=small)))

    status, body = await post(
        api, "/send_text", {"phone": CAMILA, "message": "x" * 2000}
    )

    assert status == 413
    assert "1024" in body["error"]


async def test_a_503_says_when_to_try_again(api):
    db = sqlite3.connect(runtime_of(api).store.path)
    db.execute("BEGIN EXCLUSIVE")
    try:
        response = await api.post(
            f"{PREFIX}/send_text",
            json={"phone": CAMILA, "message": "hola"},
            headers=auth(BACKEND),
        )
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"


async def test_an_alert_whose_template_fails_is_a_json_500(tmp_path, aiohttp_client):
    # The alert's template was rendered outside the guard the notifications
    # have: aiohttp's own 500, a plain-text body and a traceback in the log.
    import dataclasses
    import shutil

    from bot.app import create_app
    from tests.support import ROOT

    templates = tmp_path / "message_templates"
    shutil.copytree(ROOT / "message_templates", templates)
    (templates / "alerta_sistema.j2").write_text("{{ descripcion.nada() }}\n")
    settings = demo_settings(tmp_path, TRACBOT_API_TOKEN_BACKEND=BACKEND)
    engine = dataclasses.replace(settings.engine, templates_dir=templates)
    api = await aiohttp_client(create_app(dataclasses.replace(settings, engine=engine)))
    alert = {"tipo_alerta": "Caída", "descripcion": "Servidor sin respuesta"}

    status, body = await post(api, "/alert", {"phones": [CAMILA], **alert})

    assert status == 500
    assert body["error"] == "the notification template failed; see the log"
    assert await runtime_of(api).store.outbox_items() == []


@pytest.mark.parametrize(
    ("message", "said"),
    [(None, "null"), (12, "number"), (True, "boolean"), ([], "array"), ({}, "object")],
)
async def test_a_wrong_type_is_named_as_json_names_it(api, message, said):
    # "got NoneType", "got int": Python's names, not the caller's.
    status, body = await post(api, "/send_text", {"phone": CAMILA, "message": message})
    assert status == 400
    assert body["error"] == f"message: must be of type string, got {said}"


async def test_the_backend_reads_and_removes_a_phone_s_link(api):
    # A driver who left kept acting for the account: nothing could unlink a
    # number but editing the database by hand.
    from datetime import UTC, datetime

    from storage.base import Link

    store = runtime_of(api).store
    linked_at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    await store.save_link(
        Link("56911120011", "d-7", "12345678-5", "Camila", "driver", "rut", linked_at)
    )
    path = f"{PREFIX}/links/+56 9 1112 0011"

    response = await api.get(path, headers=auth(BACKEND))
    assert response.status == 200
    assert await response.json() == {
        "phone": CAMILA,
        "linked": True,
        "driver_id": "d-7",
        "rut": "12345678-5",
        "name": "Camila",
        "role": "driver",
        "method": "rut",
        "linked_at": "2026-12-01T12:00:00+00:00",
    }

    removed = await api.delete(path, headers=auth(BACKEND))
    assert await removed.json() == {"phone": CAMILA, "unlinked": True}
    assert await store.get_link("56911120011") is None
    again = await api.delete(path, headers=auth(BACKEND))
    assert await again.json() == {"phone": CAMILA, "unlinked": False}
    gone = await api.get(path, headers=auth(BACKEND))
    assert await gone.json() == {"phone": CAMILA, "linked": False}

    assert (await api.delete(path, headers=auth("nope"))).status == 401
    wrong = await api.delete(f"{PREFIX}/links/abc", headers=auth(BACKEND))
    assert wrong.status == 400


async def test_history_says_why_a_queued_message_waits(api):
    # A message waiting for its retry read `queued` with `error: null`
    # through a whole Graph API outage.
    runtime_of(api).simulator.fail(2, times=100)  # "service temporarily unavailable"
    status, _ = await post(api, "/send_text", {"phone": CAMILA, "message": "hola"})
    assert status == 202

    for _ in range(200):
        response = await api.get(f"{PREFIX}/history/{CAMILA}", headers=auth(ADMIN))
        [message] = (await response.json())["messages"]
        if message["status"] == "queued" and message["error"]:
            break
        await asyncio.sleep(0.02)
    assert message["status"] == "queued"
    assert message["error"].startswith("(#2) Service temporarily unavailable")


async def test_a_message_is_followed_by_the_id_its_call_answered(api):
    # The id a notice answered ended `replaced` (the window was closed), and
    # only paging through history led to the template that went instead.
    trip = {"phone": CAMILA, "patente": "AB-12", "estado": "En ruta"}
    status, body = await post(api, "/notify/trip_status", trip)
    assert status == 202
    [sent_id] = body["message_ids"]
    await settle(runtime_of(api))

    response = await api.get(f"{PREFIX}/messages/{sent_id}", headers=auth(BACKEND))
    message = await response.json()
    assert response.status == 200
    assert message["id"] == sent_id and message["phone"] == CAMILA
    assert message["status"] == "replaced" and message["message_id"] is None
    template = message["replaced_by"]
    assert template["id"] > sent_id
    assert template["status"] in ("accepted", "sent", "delivered")
    assert template["message_id"].startswith("wamid.")

    missing = await api.get(f"{PREFIX}/messages/999999", headers=auth(BACKEND))
    assert missing.status == 404
    assert (await missing.json())["error"] == "no message with id 999999"
    for wrong in ("abc", "0", "-1", "99999999999999999999"):
        answer = await api.get(f"{PREFIX}/messages/{wrong}", headers=auth(BACKEND))
        assert answer.status == 400, wrong


async def test_a_number_unlinked_mid_flow_is_answered_as_unlinked(api):
    # Unlinked while UBICACION waited for its pin, the driver then read
    # "✅ Ubicación recibida" with nothing saved.
    from tests.support import corpus, driver_says, sent_texts

    runtime = runtime_of(api)
    phone = "56911113333"  # Pedro: linked by his RUT only, no phone on file
    assert await driver_says(api, phone, "vincular") == 200
    assert await driver_says(api, phone, "12.345.678-5") == 200
    assert await driver_says(api, phone, "si") == 200
    await settle(runtime)
    assert await runtime.store.get_link(phone) is not None
    assert await driver_says(api, phone, "ubicacion") == 200
    await settle(runtime)
    asked = len(sent_texts(runtime, phone))

    removed = await api.delete(f"{PREFIX}/links/+{phone}", headers=auth(BACKEND))
    assert (await removed.json())["unlinked"] is True
    pin = corpus("location_pin.json").replace(b"56911120024", phone.encode())
    response = await api.post("/webhook", data=pin, headers=signed_headers(pin))
    assert response.status == 200
    await settle(runtime)

    [answer] = sent_texts(runtime, phone)[asked:]
    assert "Ubicación recibida" not in answer
    assert "vincul" in answer.lower()
