"""Named business queries over the demo database built from its fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.business.fixture import build, ensure_built
from bot.business.queries import BusinessData, BusinessError, create_driver
from bot.errors import ConfigError
from tests.support import ROOT

FIXTURE = ROOT / "demo" / "business.yaml"
QUERIES = {
    "driver_by_rut": "SELECT id, nombre AS name FROM conductores WHERE rut = :rut",
    "slow": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    "SELECT COUNT(*) FROM n",
    "rename": "UPDATE conductores SET nombre = :name WHERE id = :id",
}


@pytest.fixture
async def business(tmp_path: Path):
    path = tmp_path / "business.db"
    assert ensure_built(FIXTURE, path) is True
    assert ensure_built(FIXTURE, path) is False
    data = BusinessData(create_driver(f"sqlite:///{path}"), QUERIES, timeout=0.2)
    await data.open()
    yield data
    await data.close()


async def test_named_query_binds_its_parameters(business):
    row = await business.row("driver_by_rut", rut="12345678-5")
    assert row == {"id": "C14", "name": "Pedro Soto"}


async def test_a_parameter_is_never_sql(business):
    hostile = "x' OR '1'='1"
    assert await business.rows("driver_by_rut", rut=hostile) == []
    assert await business.execute("rename", name="'); DROP TABLE viajes; --", id="C14")
    row = await business.row("driver_by_rut", rut="12345678-5")
    assert row["name"] == "'); DROP TABLE viajes; --"


async def test_unknown_query_is_a_business_error(business):
    with pytest.raises(BusinessError, match="'nope' is not configured"):
        await business.rows("nope")


async def test_a_slow_query_is_abandoned(business):
    with pytest.raises(BusinessError, match="took more than"):
        await business.rows("slow")


def test_unknown_scheme_names_the_known_drivers():
    with pytest.raises(BusinessError, match="known: odbc, sqlite"):
        create_driver("oracle://db")


def test_fixture_row_that_breaks_the_schema_names_its_place(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "schema: CREATE TABLE t (id TEXT PRIMARY KEY);\n"
        "tables:\n  t:\n    - {id: a}\n    - {id: a}\n",
        "utf-8",
    )
    with pytest.raises(ConfigError, match=r"tables\.t\[1\]"):
        build(bad, tmp_path / "bad.db")
    assert not (tmp_path / "bad.db").exists()


def test_every_fixture_rut_is_valid(tmp_path):
    import sqlite3

    from bot.business import rut

    build(FIXTURE, tmp_path / "b.db")
    ruts = [
        r
        for (r,) in sqlite3.connect(tmp_path / "b.db").execute(
            "SELECT rut FROM conductores"
        )
    ]
    assert len(ruts) >= 17
    assert [rut.parse(r).canonical for r in ruts] == ruts
