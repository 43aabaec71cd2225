"""The named business queries of config.yaml, through aioodbc and psqlODBC.

Tracmin's business database is SQL Server reached by ODBC; here the same
driver code runs for real against the session's throwaway PostgreSQL
through unixODBC, with the queries exactly as config.yaml writes them.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from bot.business.odbc import to_markers
from bot.business.queries import BusinessData, BusinessError, create_driver
from tests.support import ROOT

QUERIES = yaml.safe_load((ROOT / "config.yaml").read_text("utf-8"))["business"][
    "queries"
]
SCHEMA = [
    "CREATE TABLE conductores (id TEXT PRIMARY KEY, rut TEXT, nombre TEXT, "
    "rol TEXT, telefono TEXT)",
    "CREATE TABLE viajes (id TEXT PRIMARY KEY, patente TEXT, estado TEXT, "
    "cliente TEXT, conductor_id TEXT, actualizado TIMESTAMP)",
    "CREATE TABLE ubicaciones (conductor_id TEXT, viaje_id TEXT, latitud FLOAT, "
    "longitud FLOAT, nombre TEXT, direccion TEXT, registrada TEXT)",
    "INSERT INTO conductores VALUES ('C14', '12345678-5', 'José Ñúñez 🚚', "
    "'driver', '56911112222')",
    "INSERT INTO viajes VALUES ('V1', 'ABCD12', 'En Tránsito', 'Minera Río', "
    "'C14', '2024-05-06 10:00'), ('V2', 'ABCD12', 'Fin Entrega', 'Otra', "
    "'C14', '2024-05-05 10:00')",
]


@pytest.fixture
async def business(postgres_db, odbc_driver):
    setup = {f"s{n}": sql for n, sql in enumerate(SCHEMA)}
    data = BusinessData(create_driver(f"odbc:{postgres_db.odbc}"), {**QUERIES, **setup})
    await data.open()
    for name in setup:
        await data.execute(name)
    yield data
    await data.close()


async def test_config_queries_run_through_odbc(business) -> None:
    # The deployment may select more columns; these four the flows need.
    driver = await business.row("driver_by_rut", rut="12345678-5")
    assert driver is not None
    assert (
        driver.items()
        >= {
            "id": "C14",
            "rut": "12345678-5",
            "name": "José Ñúñez 🚚",
            "role": "driver",
        }.items()
    )
    by_phone = await business.row("driver_by_phone", phone="56911112222")
    assert by_phone is not None
    assert {k: by_phone[k] for k in ("id", "rut", "name", "role")} == {
        k: driver[k] for k in ("id", "rut", "name", "role")
    }
    assert await business.row("driver_by_rut", rut="x' OR '1'='1") is None

    trips = await business.rows("active_trips", driver_id="C14")
    assert trips == [
        {
            "id": "V1",
            "patente": "ABCD12",
            "estado": "En Tránsito",
            "cliente": "Minera Río",
        }
    ]
    assert await business.row("trip_by_id", trip_id="V2", driver_id="C14")


async def test_statements_change_rows_through_odbc(business) -> None:
    at = datetime(2024, 5, 6, 11, 30)
    assert await business.execute(
        "confirm_arrival", trip_id="V1", driver_id="C14", at=at
    )
    assert (
        await business.execute("confirm_arrival", trip_id="V1", driver_id="C14", at=at)
        == 0
    )
    [trip] = await business.rows("trip_by_id", trip_id="V1", driver_id="C14")
    assert trip["estado"] == "Llegada Cliente"

    saved = await business.execute(
        "save_location",
        driver_id="C14",
        trip_id=None,
        latitude=-23.65,
        longitude=-70.4,
        name="Faena 🏔️",
        address=None,
        at="2024-05-06T11:30:00+00:00",
    )
    assert saved == 1


async def test_a_failing_query_is_a_business_error(business) -> None:
    with pytest.raises(BusinessError, match="failed"):
        await business.rows("driver_by_rut")
    with pytest.raises(BusinessError, match="failed"):
        await business.rows("last_guide", driver_id="C14")  # no guias table


def test_placeholders_become_markers_outside_literals_and_casts() -> None:
    sql, values = to_markers(
        "SELECT ':no', x::text FROM t WHERE a = :a AND b = :b OR c = :a",
        {"a": 1, "b": "dos"},
    )
    assert sql == "SELECT ':no', x::text FROM t WHERE a = ? AND b = ? OR c = ?"
    assert values == [1, "dos", 1]
