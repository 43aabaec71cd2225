"""Set-up hooks of Tracmin's conversation tests (`given:` in a case).

    given:
      linked_driver: {rut: "12.345.678-5"}

links the case's phone to the driver with that RUT in the business data,
as if the driver had confirmed it with VINCULAR; the steps then run as
that driver. docs/flows.md shows the format.
"""

from __future__ import annotations

from typing import Any

from bot.app import Runtime
from bot.business import rut
from bot.engine.convtest import given

# RutError's reasons (words of the driver's replies), for a test's author.
_WHY = {
    rut.EMPTY: "it is empty",
    rut.CHARACTERS: "it has characters a RUT does not have",
    rut.SHORT: "too few digits",
    rut.LONG: "too many digits",
    rut.CHECK_DIGIT: "the check digit does not match",
    rut.ZEROS: "it is all zeros",
    rut.MISSING_DIGIT: "it has no check digit",
}


@given("linked_driver")
async def linked_driver(runtime: Runtime, value: Any, phone: str) -> None:
    """Link `phone` to the driver of `value["rut"]`.

    Raises:
        ValueError: no RUT, an invalid one, no such driver, or a driver
            linked to another number already (the case says which).
    """
    if not isinstance(value, dict) or "rut" not in value:
        raise ValueError('expected a mapping like {rut: "12.345.678-5"}')
    try:
        found = rut.parse(str(value["rut"]))
    except rut.RutError as exc:
        why = _WHY.get(exc.reason, exc.reason)
        raise ValueError(f"{value['rut']!r} is not a valid RUT: {why}") from None
    accounts = runtime.engine.services.accounts
    driver = await accounts.driver_by_rut(found.canonical)
    if driver is None:
        raise ValueError(f"no driver with RUT {found.formatted} in the business data")
    # As VINCULAR: not an account with another number, on file or linked.
    on_file = str(driver.get("phone") or "")
    if (on_file and on_file != phone) or not await accounts.link(phone, driver):
        raise ValueError(f"the driver of RUT {found.formatted} has another number")
