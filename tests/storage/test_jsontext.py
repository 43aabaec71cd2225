"""JSON text of stored values: orjson where it can, the standard library's
answer where it cannot, so nothing stored reads back differently."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from storage.jsontext import dumps, dumps_bytes, loads_message

STANDARD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@pytest.mark.parametrize(
    "value",
    [
        {"to": "56911111111", "type": "text", "text": {"body": "Camión en ruta ñ"}},
        {"rut": "12.345.678-5", "intentos": 2, "ok": True, "nada": None},
        ["uno", 2, 3.5, [], {}],
        {"grande": 2**70, "negativo": -(2**64)},
        {1: "clave numérica", "x": [1, 2]},
    ],
)
def test_values_are_written_as_the_standard_library_writes_them(value) -> None:
    text = dumps(value)

    assert json.loads(text) == json.loads(STANDARD(value))
    assert dumps_bytes(value) == text.encode()


def test_letters_are_kept_and_the_text_is_compact() -> None:
    assert dumps({"a": "ñandú", "b": [1, 2]}) == '{"a":"ñandú","b":[1,2]}'


def test_integers_past_64_bits_are_written_exactly() -> None:
    assert json.loads(dumps({"n": 2**80 + 1})) == {"n": 2**80 + 1}


def test_a_message_body_reads_back_as_written() -> None:
    body = {
        "to": "56911111111",
        "type": "interactive",
        "interactive": {"type": "button", "body": {"text": "¿Confirmas?"}},
        "location": {"latitude": -23.65, "longitude": -70.4},
        "preview_url": False,
    }

    assert loads_message(dumps(body)) == body
    assert loads_message(dumps_bytes(body)) == body


@pytest.mark.parametrize(
    "value", [datetime(2026, 12, 5, tzinfo=UTC), {"cuando": datetime.now(UTC)}]
)
def test_dates_fail_as_with_the_standard_library(value) -> None:
    with pytest.raises(TypeError):
        dumps(value)


def test_dataclasses_fail_as_with_the_standard_library() -> None:
    @dataclass
    class Punto:
        lat: float

    with pytest.raises(TypeError):
        dumps({"punto": Punto(1.0)})


def test_nan_written_by_the_standard_library_still_reads() -> None:
    assert math.isnan(loads_message('{"x": NaN}')["x"])


def test_text_that_is_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        loads_message("{no es json")
