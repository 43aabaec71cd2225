"""Hostile or broken POSTs: the right status each, and the server lives on.

Policy: unsigned or forged → 401 and nothing stored; over
`server.max_body_bytes` → 413; anything validly signed → 200, stored as a
notice when it is not JSON (truncated, random bytes, nested too deep).
"""

from __future__ import annotations

import io
import os
import sqlite3

import pytest

from bench import procs
from bench.webhooks import signature
from tests.faults.harness import replies_per_phone, text_body, wait_for
from tests.support import corpus

FIVE_MB = 5 * 1024 * 1024


def inbox_rows(stack) -> int:
    with sqlite3.connect(f"file:{stack.database}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_envelope(levels: int) -> bytes:
    # Valid JSON, a real envelope, and a value nested deeper than Python's
    # recursion limit inside it.
    inner = b'{"a":' * levels + b"1" + b"}" * levels
    return b'{"object":"whatsapp_business_account","entry":[{"changes":[' + (
        b'{"field":"messages","value":{"x":' + inner + b"}}]}]}"
    )


@pytest.fixture
def stack(stack_factory):
    return stack_factory()


async def test_forged_and_missing_signatures_get_401_and_store_nothing(stack, http):
    body = corpus("text_simple.json")
    before = inbox_rows(stack)

    assert await stack.post(http, body, secret=None) == 401
    assert await stack.post(http, body, secret="not-the-app-secret") == 401
    tampered = body.replace(b"Ayuda", b"Ayudb")
    headers = {"X-Hub-Signature-256": signature(procs.APP_SECRET, body)}
    async with http.post(f"{stack.url}/webhook", data=tampered, headers=headers) as r:
        assert r.status == 401

    assert inbox_rows(stack) == before


async def test_five_megabyte_body_gets_413(stack, http):
    body = b'{"object":"whatsapp_business_account","pad":"' + b"x" * FIVE_MB + b'"}'
    headers = {"X-Hub-Signature-256": signature(procs.APP_SECRET, body)}
    async with http.post(
        f"{stack.url}/webhook", data=io.BytesIO(body), headers=headers
    ) as response:
        assert response.status == 413


@pytest.mark.parametrize(
    "body",
    [
        corpus("text_simple.json")[:-40],
        os.urandom(4096),
        deep(100_000),
        deep_envelope(5_000),
        b"",
        b"null",
        b'"a string"',
        b"\xff\xfe\x00{",
    ],
    ids=[
        "truncated",
        "random",
        "deep-array",
        "deep-envelope",
        "empty",
        "null",
        "string",
        "bad-utf8",
    ],
)
async def test_signed_garbage_gets_200_and_the_server_still_answers(stack, http, body):
    assert await stack.post(http, body) == 200

    # Still alive and still working: a real message gets its reply.
    assert await stack.post(http, text_body("garbage", 0, 1)) == 200
    await wait_for(http, stack, lambda r: replies_per_phone(r)["56990000000"] >= 1)
    assert stack.bot.popen.poll() is None
