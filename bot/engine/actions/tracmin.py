"""Tracmin's conditions and actions: linking with the RUT, trips, guides,
locations and the administrators' summary.

Each hook receives the `Turn` of the message being handled; business data
comes from `turn.services` (`bot.business.services.Services`) and the
number's identity from `bot.engine.audience.WHO`. Actions leave what the
templates show in `turn.slots`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.business import links, rut
from bot.business.services import Services
from bot.engine import audience, keywords
from bot.engine.machine import Turn
from bot.engine.registry import action, condition
from bot.engine.text import normalize, words
from storage.base import utcnow

TRIP_STATUS = "TRIP_STATUS:"
CONFIRM_ARRIVAL = "confirm_arrival:"
ARRIVED = "Llegada Cliente"
# How much of a pin's name or address is stored, and shown back.
STORED_NAME = 200
SHOWN_NAME = 100
CHILE = ZoneInfo("America/Santiago")


def _services(turn: Turn) -> Services:
    services = turn.services
    if not isinstance(services, Services):
        raise RuntimeError("Tracmin's flows need the business services")
    return services


def _driver_id(turn: Turn) -> str | None:
    who = audience.WHO.get()
    link = getattr(who, "link", None)
    return getattr(link, "driver_id", None)


def _text(turn: Turn) -> str:
    return (turn.message.text or "") if turn.message else ""


def _reply_value(turn: Turn, prefix: str) -> str | None:
    reply_id = turn.message.reply_id if turn.message else None
    if reply_id and reply_id.startswith(prefix):
        return reply_id.removeprefix(prefix).strip() or None
    return None


# Linking the number with the RUT


@condition("rut_valido")
def rut_is_valid(turn: Turn) -> bool:
    try:
        rut.parse(_text(turn))
    except rut.RutError:
        return False
    return True


@condition("rut_con_guion")
def rut_written_as_one(turn: Turn) -> bool:
    """A valid RUT with its dash or a K: taken even when nobody asked."""
    return rut_is_valid(turn) and rut.written_as_rut(_text(turn))


@condition("parece_rut")
def looks_like_rut(turn: Turn) -> bool:
    return rut.looks_like_rut(_text(turn))


@condition("escrito_como_rut")
def written_like_rut(turn: Turn) -> bool:
    """Written as a RUT (its dash, or a K), valid or not: unasked, a wrong
    check digit is still a RUT attempt, and says what is wrong with it."""
    text = _text(turn)
    return rut.looks_like_rut(text) and rut.written_as_rut(text)


@condition("bloqueado")
async def is_blocked(turn: Turn) -> bool:
    return await _services(turn).accounts.blocked(turn.context["wa_id"])


@action("registrar_rut_invalido", provides=("rut_error",))
async def record_invalid_rut(turn: Turn) -> None:
    try:
        rut.parse(_text(turn))
    except rut.RutError as exc:
        turn.slots["rut_error"] = exc.reason
    # A RUT without its check digit guesses no one's account: it gets the
    # explanation but costs no attempt.
    if turn.slots.get("rut_error") != rut.MISSING_DIGIT:
        await _record(turn, _text(turn)[:32], links.INVALID)


# Why a RUT cannot link this number (slot `rut_ocupado`).
TAKEN_BY_LINK = "vinculado"
TAKEN_BY_PHONE = "otro_telefono"


@action(
    "buscar_conductor",
    provides=("rut", "conductor", "rut_ocupado"),
    needs=("rut_valido", "rut_con_guion"),
)
async def find_driver(turn: Turn) -> None:
    found = rut.parse(_text(turn))
    turn.slots["rut"] = found.formatted
    services = _services(turn)
    driver = await services.accounts.driver_by_rut(found.canonical)
    if driver is None:
        turn.slots["conductor"] = None
        await _record(turn, found.canonical, links.UNKNOWN)
        return

    turn.slots["conductor"] = {
        "id": str(driver["id"]),
        "name": str(driver.get("name") or ""),
        "rut": found.canonical,
        "role": str(driver.get("role") or ""),
    }
    # Refused when the account is linked to another number, or when the
    # business data has another phone on file for this driver: knowing a
    # RUT must not be enough to take over someone's account.
    wa_id = turn.context["wa_id"]
    current = await services.store.link_of_driver(str(driver["id"]))
    on_file = str(driver.get("phone") or "")
    # Why, in the words the `vincular_rut_ocupado` template switches on: a
    # driver whose new phone is not on file yet was told their RUT was
    # linked to another WhatsApp number, which it was not.
    taken: str | bool = False
    if current is not None and current.wa_id != wa_id:
        taken = TAKEN_BY_LINK
    elif on_file and on_file != wa_id:
        taken = TAKEN_BY_PHONE
    turn.slots["rut_ocupado"] = taken
    await _record(turn, found.canonical, links.TAKEN if taken else links.FOUND)


@condition("conductor_encontrado")
def driver_found(turn: Turn) -> bool:
    return bool(turn.slots.get("conductor"))


@condition("rut_ocupado")
def rut_taken(turn: Turn) -> bool:
    return bool(turn.slots.get("rut_ocupado"))


@action("vincular", provides=("vinculado",))
async def link_number(turn: Turn) -> None:
    driver = turn.slots["conductor"]
    services = _services(turn)
    linked = await services.accounts.link(turn.context["wa_id"], driver)
    turn.slots["vinculado"] = linked
    await _record(turn, driver["rut"], links.OK if linked else links.TAKEN)


@condition("vinculacion_ok")
def link_done(turn: Turn) -> bool:
    return bool(turn.slots.get("vinculado"))


@action("registrar_rechazo")
async def record_denied(turn: Turn) -> None:
    driver = turn.slots.get("conductor") or {}
    await _record(turn, str(driver.get("rut", "")), links.DENIED)


@action("contar_intentos", provides=("intentos_restantes",))
async def count_attempts(turn: Turn) -> None:
    services = _services(turn)
    since = utcnow() - timedelta(hours=1)
    wrong = await services.store.failed_link_attempts(turn.context["wa_id"], since)
    turn.slots["intentos_restantes"] = max(
        services.accounts.attempts_per_hour - wrong, 0
    )


async def _record(turn: Turn, value: str, outcome: str) -> None:
    await _services(turn).accounts.record(turn.context["wa_id"], value, outcome)


# ESTADO


@condition("pide_un_viaje")
def asks_one_trip(turn: Turn) -> bool:
    return _reply_value(turn, TRIP_STATUS) is not None


@action("cargar_viajes", provides=("viajes",))
async def load_trips(turn: Turn) -> None:
    driver_id = _driver_id(turn)
    rows = []
    if driver_id is not None:
        rows = await _services(turn).business.rows("active_trips", driver_id=driver_id)
    turn.slots["viajes"] = [_trip(row) for row in rows]


@action("cargar_viaje_pedido", provides=("viaje_id", "viaje"))
async def load_asked_trip(turn: Turn) -> None:
    trip_id = _reply_value(turn, TRIP_STATUS)
    turn.slots["viaje_id"] = trip_id
    driver_id = _driver_id(turn)
    row = None
    if driver_id is not None and trip_id is not None:
        row = await _services(turn).business.row(
            "trip_by_id", trip_id=trip_id, driver_id=driver_id
        )
    turn.slots["viaje"] = _trip(row) if row else None


@condition("viaje_encontrado")
def trip_found(turn: Turn) -> bool:
    return bool(turn.slots.get("viaje"))


def _trip(row: dict[str, Any]) -> dict[str, str]:
    # Templates print every value: a NULL column reads as a dash, not "None".
    return {key: "-" if value is None else str(value) for key, value in row.items()}


# GUIA


@action("cargar_guia", provides=("guia",))
async def load_guide(turn: Turn) -> None:
    driver_id = _driver_id(turn)
    row = None
    if driver_id is not None:
        row = await _services(turn).business.row("last_guide", driver_id=driver_id)
    turn.slots["guia"] = _trip(row) if row else None


# UBICACION


@condition("trae_ubicacion")
def has_location(turn: Turn) -> bool:
    return turn.message is not None and turn.message.location is not None


@condition("ubicacion_valida")
def location_is_valid(turn: Turn) -> bool:
    """Whether a pin's coordinates exist: latitude ±90, longitude ±180."""
    location = turn.message.location if turn.message else None
    if location is None:
        return False
    lat, lon = location.latitude, location.longitude
    return (
        math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180
    )


def _capped(text: str | None, limit: int) -> str:
    # A place name is a few words; a pasted essay is cut, visibly.
    value = " ".join((text or "").split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


@action(
    "guardar_ubicacion",
    provides=("viaje", "ubicacion"),
    # Not `trae_ubicacion` or `input: location`: a pin at latitude 999
    # is a location too, and would be stored.
    needs=("ubicacion_valida",),
)
async def save_location(turn: Turn) -> None:
    location = turn.message.location if turn.message else None
    if location is None:
        raise ValueError("guardar_ubicacion needs a location message")
    services = _services(turn)
    driver_id = _driver_id(turn)
    trips = []
    if driver_id is not None:
        trips = await services.business.rows("active_trips", driver_id=driver_id)
    trip = _trip(trips[0]) if trips else None

    if driver_id is not None:
        await services.business.execute(
            "save_location",
            driver_id=driver_id,
            trip_id=trip["id"] if trip else None,
            latitude=location.latitude,
            longitude=location.longitude,
            name=_capped(location.name, STORED_NAME) or None,
            address=_capped(location.address, STORED_NAME) or None,
            at=utcnow().isoformat(),
        )
    turn.slots["viaje"] = trip
    turn.slots["ubicacion"] = {
        "latitude": f"{location.latitude:.5f}",
        "longitude": f"{location.longitude:.5f}",
        "name": _capped(location.name, SHOWN_NAME),
        "address": _capped(location.address, SHOWN_NAME),
    }


@condition("es_comando")
def is_command(turn: Turn) -> bool:
    """Whether the text is a command (first, or named in a short sentence),
    so that a state waiting for something else lets it through: the
    engine's own routing when it runs the flow, which is what then starts
    the command (a misspelt CANCELAR starts nothing, so it is no command)."""
    if turn.takes_over is not None:
        return turn.takes_over()
    typed = normalize(_text(turn))
    commands = {normalize(c["command"]) for c in turn.context.get("commands", [])}
    first = words(typed)[:1]
    if first and first[0] in commands:
        return True
    return bool(keywords.named({c: (c,) for c in commands}, typed))


# Arrival confirmed with a reply button (`confirm_arrival:<trip>`)


@action(
    "confirmar_llegada", provides=("viaje_id", "llegada_registrada", "llegada_previa")
)
async def confirm_arrival(turn: Turn) -> None:
    trip_id = _reply_value(turn, CONFIRM_ARRIVAL)
    driver_id = _driver_id(turn)
    turn.slots["viaje_id"] = trip_id or "-"
    turn.slots["llegada_previa"] = False
    changed = 0
    if trip_id is not None and driver_id is not None:
        business = _services(turn).business
        changed = await business.execute(
            "confirm_arrival",
            trip_id=trip_id,
            driver_id=driver_id,
            at=datetime.now(CHILE).strftime("%Y-%m-%d %H:%M"),
        )
        if not changed:
            # The same button tapped twice: the first tap already did it.
            row = await business.row("trip_by_id", trip_id=trip_id, driver_id=driver_id)
            turn.slots["llegada_previa"] = bool(row) and row.get("estado") == ARRIVED
    turn.slots["llegada_registrada"] = changed > 0


@condition("llegada_registrada")
def arrival_recorded(turn: Turn) -> bool:
    return bool(turn.slots.get("llegada_registrada"))


# Administrators


@action("cargar_resumen", provides=("resumen",))
async def load_summary(turn: Turn) -> None:
    store = _services(turn).store
    now = datetime.now(CHILE)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    end = now.astimezone(UTC) + timedelta(seconds=1)
    counts = await store.delivery_counts(start, end)
    turn.slots["resumen"] = {
        "fecha": now.strftime("%d/%m/%Y"),
        "recibidos": await store.inbound_count(start, end),
        "enviados": counts.total,
        "entregados": counts.delivered,
        "leidos": counts.read,
        "fallidos": counts.failed,
        "pendientes": counts.queued,
    }
