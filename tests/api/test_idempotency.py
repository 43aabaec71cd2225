"""A backend call made again with its Idempotency-Key queues nothing twice:
the retry of a call that timed out, or that got a 503 while the database
was slow to answer, is what sent drivers every notice twice."""

from __future__ import annotations

import asyncio

from bot.api.openapi import PREFIX
from tests.api.test_api import ADMIN, BACKEND, CAMILA, auth
from tests.api.test_api import api as api  # noqa: F401 (the fixture)
from tests.support import runtime_of, settle

TRIP = {"phone": CAMILA, "patente": "ABCD12", "estado": "En Tránsito"}


async def call(api, path: str, body: dict, key: str | None, token: str = BACKEND):
    headers = auth(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await api.post(f"{PREFIX}{path}", json=body, headers=headers)
    return response, await response.json()


def sent_to_camila(api) -> int:
    simulator = runtime_of(api).simulator
    return sum(
        1 for r in simulator.received if (r["body"] or {}).get("to") == CAMILA[1:]
    )


async def test_a_call_made_again_with_its_key_is_answered_alike_and_sent_once(api):
    first, body = await call(api, "/notify/trip_status", TRIP, "trip-77-v1")
    again, replayed = await call(api, "/notify/trip_status", TRIP, "trip-77-v1")

    assert first.status == again.status == 202
    assert replayed == body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    await settle(runtime_of(api))
    assert sent_to_camila(api) == 1

    # Without a key, or with another one, it is a new call.
    other, _ = await call(api, "/notify/trip_status", TRIP, "trip-77-v2")
    plain, _ = await call(api, "/notify/trip_status", TRIP, None)
    assert other.status == plain.status == 202
    await settle(runtime_of(api))
    assert sent_to_camila(api) == 3


async def test_a_key_used_for_another_call_is_refused(api):
    await call(api, "/notify/trip_status", TRIP, "k-1")
    moved = {**TRIP, "estado": "Entregado"}

    response, body = await call(api, "/notify/trip_status", moved, "k-1")
    assert response.status == 422
    assert "used for another call" in body["error"]
    response, _ = await call(
        api, "/send_text", {"phone": CAMILA, "message": "x"}, "k-1"
    )
    assert response.status == 422
    await settle(runtime_of(api))
    assert sent_to_camila(api) == 1


async def test_a_call_made_twice_at_once_with_one_key_is_queued_once(api):
    alert = {"phones": [CAMILA, "+56911113333"], "tipo_alerta": "Caída"}
    alert["descripcion"] = "Servidor de guías sin respuesta"

    answers = await asyncio.gather(
        *(call(api, "/alert", alert, "alert-2026-12-05") for _ in range(5))
    )

    assert {response.status for response, _ in answers} == {202}
    assert len({str(body) for _, body in answers}) == 1
    await settle(runtime_of(api))
    assert sent_to_camila(api) == 1


async def test_a_call_that_failed_keeps_no_key(api):
    bad = {"phone": CAMILA, "patente": "ABCD12"}  # no estado
    response, _ = await call(api, "/notify/trip_status", bad, "k-2")
    assert response.status == 400

    response, _ = await call(api, "/notify/trip_status", TRIP, "k-2")
    assert response.status == 202
    assert "Idempotent-Replayed" not in response.headers


async def test_a_kept_answer_is_only_for_the_backend(api):
    await call(api, "/notify/trip_status", TRIP, "k-3")

    response, _ = await call(api, "/notify/trip_status", TRIP, "k-3", token="nope")
    assert response.status == 401


async def test_a_key_that_is_not_printable_ascii_is_a_400(api):
    for key in ("", "ñandú", "x" * 256):
        response, body = await call(
            api, "/send_text", {"phone": CAMILA, "message": "x"}, key
        )
        assert response.status == 400, key
        assert "Idempotency-Key must be 1 to 255" in body["error"]
    assert await runtime_of(api).store.outbox_items() == []


async def test_a_key_is_its_token_s_and_given_once(api):
    # The admin's token replayed what the backend's had kept; a second
    # header was dropped without a word.
    await call(api, "/notify/trip_status", TRIP, "k-4")
    response, body = await call(api, "/notify/trip_status", TRIP, "k-4", token=ADMIN)
    assert response.status == 422
    assert "used for another call" in body["error"]

    headers = [("Authorization", f"Bearer {BACKEND}")]
    headers += [("Idempotency-Key", "d1"), ("Idempotency-Key", "d2")]
    path = f"{PREFIX}/notify/trip_status"
    response = await api.post(path, json=TRIP, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"] == "one Idempotency-Key header, not 2"
    await settle(runtime_of(api))
    assert sent_to_camila(api) == 1
