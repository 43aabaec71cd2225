"""The webhook corpus bodies that name Tracmin's commands, posted signed as
their exact bytes to a whole tracbot, with the demo business data: what the
driver reads back, and what changed in the business and link tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.app import create_app
from tests.support import (
    corpus,
    demo_settings,
    runtime_of,
    settle,
    signed_headers,
)

OUT_BUTTONS_CATALINA = "wamid.HBgLNTY5MTExMjAwMTcVAgARGBIyNTU1MDNFRDIzMEQ4QUNGQzkA"


async def _post(aiohttp_client, tmp_path: Path, *names: str):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    for name in names:
        body = corpus(name)
        response = await client.post(
            "/webhook", data=body, headers=signed_headers(body)
        )
        assert response.status == 200
        await settle(runtime)
    return runtime


def _sent(runtime, wa_id: str) -> list[dict]:
    return [
        r["body"]
        for r in runtime.simulator.received
        if r["status"] == 200
        and (r["body"] or {}).get("to") == wa_id
        and r["body"].get("type") in ("text", "interactive")
    ]


def _texts(runtime, wa_id: str) -> list[str]:
    return [
        b["text"]["body"] if b["type"] == "text" else b["interactive"]["body"]["text"]
        for b in _sent(runtime, wa_id)
    ]


def _business(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "business.db")
    db.row_factory = sqlite3.Row
    return db


async def test_estado_quoting_the_help_menu_lists_camilas_trips(
    aiohttp_client, tmp_path
):
    runtime = await _post(aiohttp_client, tmp_path, "text_reply_with_context.json")
    assert _texts(runtime, "56911120011") == [
        "🚛 *Tus Viajes Activos:*\n\n"
        "• Patente: KHTR-21\n  Estado: 🚛 En Tránsito\n  Cliente: Minera Escondida"
    ]


async def test_estado_from_two_entries_answers_only_our_number(
    aiohttp_client, tmp_path
):
    runtime = await _post(aiohttp_client, tmp_path, "two_entries.json")
    assert _texts(runtime, "56911120012") == [
        "🚛 *Tus Viajes Activos:*\n\n"
        "• Patente: LBCD-34\n  Estado: ⏳ En Carga\n  Cliente: Codelco Chuquicamata"
    ]
    assert _texts(runtime, "56911120028") == []


async def test_quick_reply_payload_shows_that_trip(aiohttp_client, tmp_path):
    runtime = await _post(aiohttp_client, tmp_path, "button_template_quick_reply.json")
    [text] = _texts(runtime, "56911120016")
    assert text.startswith("📍 *Viaje VJ-20877*")
    assert "Patente: FKLM-90" in text
    assert "Estado: 📍 Llegada Cliente" in text
    # Only that trip, not Benjamín's other active one.
    assert "VJ-20878" not in text and "KHTR-21" not in text


async def test_guia_after_hola_in_one_post(aiohttp_client, tmp_path):
    runtime = await _post(aiohttp_client, tmp_path, "batch_two_messages_one_post.json")
    hola, guia = _texts(runtime, "56911120014")
    assert "No entendí tu mensaje" in hola
    assert guia == (
        "📄 *Tu Última Guía:*\n\nFolio: 884512\nCliente: Minera Centinela\n"
        "Estado: Emitida\nFecha: 01/06/2026\n\n"
        "Link: https://guias.tracmin.example/884512"
    )


async def test_guia_with_a_status_in_the_same_post(aiohttp_client, tmp_path):
    runtime = await _post(
        aiohttp_client, tmp_path, "messages_and_statuses_one_post.json"
    )
    [text] = _texts(runtime, "56911120018")
    # Tomás has two guides; the latest one is shown.
    assert "Folio: 884480" in text and "Fecha: 31/05/2026" in text


async def test_guia_without_contacts_still_answers(aiohttp_client, tmp_path):
    runtime = await _post(aiohttp_client, tmp_path, "malformed_missing_contacts.json")
    [text] = _texts(runtime, "56911120015")
    assert "Folio: 884530" in text


async def test_list_row_runs_guia_by_its_id(aiohttp_client, tmp_path):
    runtime = await _post(aiohttp_client, tmp_path, "interactive_list_reply.json")
    [text] = _texts(runtime, "56911120018")
    assert text.startswith("📄 *Tu Última Guía:*")


async def test_arrival_button_moves_the_trip(aiohttp_client, tmp_path):
    runtime = await _post(aiohttp_client, tmp_path, "interactive_button_reply.json")
    [text] = _texts(runtime, "56911120017")
    assert "Llegada registrada" in text and "VJ-20931" in text
    row = (
        _business(tmp_path)
        .execute("SELECT estado FROM viajes WHERE id = 'VJ-20931'")
        .fetchone()
    )
    assert row["estado"] == "Llegada Cliente"


async def test_ubicacion_in_markup_and_zero_width_asks_for_a_pin(
    aiohttp_client, tmp_path
):
    runtime = await _post(aiohttp_client, tmp_path, "text_markdown_zero_width.json")
    [body] = _sent(runtime, "56911120020")
    assert body["type"] == "interactive"
    interactive = body["interactive"]
    assert interactive["type"] == "location_request_message"
    assert interactive["action"] == {"name": "send_location"}
    assert "Comparte tu ubicación" in interactive["body"]["text"]
    conversation = await runtime.store.load_conversation("56911120020")
    assert (conversation.flow, conversation.state) == ("ubicacion", "pedir")


async def test_bare_pin_is_stored_against_the_active_trip(aiohttp_client, tmp_path):
    runtime = await _post(aiohttp_client, tmp_path, "location_pin.json")
    [text] = _texts(runtime, "56911120024")
    assert "Ubicación recibida" in text and "VJ-20884" in text
    assert "-22.45618, -68.92902" in text
    rows = _business(tmp_path).execute("SELECT * FROM ubicaciones").fetchall()
    assert [(r["conductor_id"], r["viaje_id"]) for r in rows] == [("C13", "VJ-20884")]
    assert rows[0]["latitud"] == -22.4561833 and rows[0]["nombre"] is None


async def test_number_change_moves_the_link_and_says_nothing(aiohttp_client, tmp_path):
    runtime = await _post(aiohttp_client, tmp_path, "system_number_changed.json")
    assert _sent(runtime, "56911120019") == [] and _sent(runtime, "56911120029") == []
    assert await runtime.store.get_link("56911120019") is None
    link = await runtime.store.get_link("56911120029")
    assert (link.driver_id, link.name) == ("C09", "Antonia Silva")


async def test_arrival_button_tapped_again_is_answered_politely(
    aiohttp_client, tmp_path
):
    # The same button of the same (now old) message, tapped a second time
    # (a new wamid): the trip already arrived, and Catalina is told so.
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    first = corpus("interactive_button_reply.json")
    again = first.replace(b"OEM5MDU4NwA=", b"OEM5MDU4OAA=")
    assert again != first and OUT_BUTTONS_CATALINA.encode() in again
    for body in (first, again):
        response = await client.post(
            "/webhook", data=body, headers=signed_headers(body)
        )
        assert response.status == 200
        await settle(runtime)

    registered, again_text = _texts(runtime, "56911120017")
    assert "Llegada registrada" in registered
    assert "Tu llegada del viaje VJ-20931 ya estaba registrada" in again_text
    assert "No pude" not in again_text


async def test_status_question_in_a_sentence_lists_ignacias_trips(
    aiohttp_client, tmp_path
):
    # "¿Cuál es el estado de mi viaje? 🚛💨 … https://…": routed by keyword.
    runtime = await _post(aiohttp_client, tmp_path, "text_with_emoji_and_accents.json")
    [text] = _texts(runtime, "56911120021")
    assert "Tus Viajes Activos" in text and "FKLM-90" in text


async def test_pdf_caption_naming_a_guide_gets_the_media_reply(
    aiohttp_client, tmp_path
):
    # Caption "Guía de despacho escaneada": a file, not the GUIA command.
    runtime = await _post(aiohttp_client, tmp_path, "document_pdf_with_caption.json")
    [text] = _texts(runtime, "56911120012")
    assert "No proceso archivos" in text and "guía" not in text.lower()


def _pin(latitude: str, longitude: str, name: str | None = None) -> bytes:
    body = corpus("location_pin.json")
    body = body.replace(b"-22.4561833", latitude.encode())
    body = body.replace(b"-68.9290161", longitude.encode())
    if name is not None:
        named = f'"name": "{name}", "latitude"'.encode()
        body = body.replace(b'"latitude"', named, 1)
    return body


async def _post_bytes(aiohttp_client, tmp_path: Path, body: bytes):
    client = await aiohttp_client(create_app(demo_settings(tmp_path)))
    runtime = runtime_of(client)
    response = await client.post("/webhook", data=body, headers=signed_headers(body))
    assert response.status == 200
    await settle(runtime)
    return runtime


async def test_pin_out_of_range_is_asked_again_and_not_stored(aiohttp_client, tmp_path):
    runtime = await _post_bytes(aiohttp_client, tmp_path, _pin("999", "-700.4"))
    [text] = _texts(runtime, "56911120024")
    assert "coordenadas no son válidas" in text and "recibida" not in text
    rows = _business(tmp_path).execute("SELECT * FROM ubicaciones").fetchall()
    assert rows == []


async def test_a_5000_character_place_name_is_capped(aiohttp_client, tmp_path):
    runtime = await _post_bytes(
        aiohttp_client, tmp_path, _pin("-22.5", "-68.9", "Faena " * 833 + "xx")
    )
    [text] = _texts(runtime, "56911120024")
    assert "Ubicación recibida" in text and len(text) < 400
    [row] = _business(tmp_path).execute("SELECT * FROM ubicaciones").fetchall()
    assert 100 < len(row["nombre"]) <= 200 and row["nombre"].endswith("…")
