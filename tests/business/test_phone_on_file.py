"""Phones recognised by the number on file (`driver_by_phone`), and how long
a phone found not on file is believed so (`business.phone_recheck_seconds`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.business.fixture import build
from bot.business.links import DRIVER, UNLINKED, Accounts
from bot.business.queries import BusinessData, SqliteDriver
from storage.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
PHONE = "56911119999"
QUERIES = {
    "driver_by_phone": (
        "SELECT id, rut, nombre AS name, rol AS role FROM conductores "
        "WHERE telefono = :phone"
    )
}


class Counted(SqliteDriver):
    """The real SQLite driver, counting the queries that reach the file."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.fetches = 0

    async def fetch(self, sql, params):
        self.fetches += 1
        return await super().fetch(sql, params)


@pytest.fixture
async def parts(tmp_path: Path):
    business_path = tmp_path / "business.db"
    build(ROOT / "demo" / "business.yaml", business_path)
    driver = Counted(f"sqlite:///{business_path}")
    business = BusinessData(driver, QUERIES)
    await business.open()
    async with SqliteStore(f"sqlite:///{tmp_path}/tracbot.db") as store:
        yield store, business, driver, business_path
    await business.close()


def put_on_file(business_path: Path, phone: str) -> None:
    with sqlite3.connect(business_path) as db:
        db.execute(
            "INSERT INTO conductores (id, rut, nombre, telefono) "
            "VALUES ('C99', '11111111-1', 'Nuevo Conductor', ?)",
            (phone,),
        )


async def test_a_phone_not_on_file_is_not_queried_again_at_once(parts) -> None:
    store, business, driver, _ = parts
    accounts = Accounts(store, business, recheck_seconds=60)

    roles = [(await accounts.identify(PHONE)).role for _ in range(5)]

    assert roles == [UNLINKED] * 5
    assert driver.fetches == 1


async def test_a_number_added_on_file_is_recognised_after_the_recheck(
    parts,
) -> None:
    store, business, driver, business_path = parts
    accounts = Accounts(store, business, recheck_seconds=0.2)
    assert (await accounts.identify(PHONE)).role == UNLINKED

    put_on_file(business_path, PHONE)
    assert (await accounts.identify(PHONE)).role == UNLINKED  # still believed
    await asyncio.sleep(0.25)
    identity = await accounts.identify(PHONE)

    assert identity.role == DRIVER and identity.driver_id == "C99"
    assert driver.fetches == 2
    assert (await store.get_link(PHONE)).method == "phone"


async def test_zero_recheck_looks_the_phone_up_every_time(parts) -> None:
    store, business, driver, business_path = parts
    accounts = Accounts(store, business, recheck_seconds=0)
    assert (await accounts.identify(PHONE)).role == UNLINKED

    put_on_file(business_path, PHONE)

    assert (await accounts.identify(PHONE)).role == DRIVER
    assert driver.fetches == 2
