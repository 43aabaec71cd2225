"""The pywa peer of the bench: signed webhooks in, replies at the simulator.

The peer and the simulator run as real processes on 127.0.0.1. pywa is an
optional extra (`.[bench]`): without it the end-to-end tests skip, and the
bench row must skip with a reason instead of failing.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from bench import procs, scenarios
from bench.reference import REPLY
from bench.webhooks import bsuid, phone, signature, text_webhook, wamid


@pytest.fixture(scope="module")
def peer() -> Iterator[tuple[procs.Proc, procs.Proc]]:
    pytest.importorskip("pywa_async", reason="pywa not installed (.[bench])")
    sim = procs.simulator()
    args = ["--graph-url", sim.url, "--token", procs.TOKEN]
    args += ["--secret", procs.APP_SECRET]
    server = procs.python_server("pywa", "bench.pywa_peer", args)
    try:
        sim.start()
        server.start()
        yield server, sim
    finally:
        server.stop()
        sim.stop()


def post(server: procs.Proc, body: bytes, sig: str) -> int:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
    request = urllib.request.Request(f"{server.url}/webhook", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def sent(sim: procs.Proc) -> list[dict]:
    with urllib.request.urlopen(f"{sim.url}/_sim/messages", timeout=5) as answer:
        return json.load(answer)


def wait_sent(sim: procs.Proc, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    found = sent(sim)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        found = sent(sim)
    return found


def body_of(index: int) -> bytes:
    return text_webhook(
        phone(index),
        wamid("pywa-test", index),
        "AYUDA",
        procs.PHONE_NUMBER_ID,
        1780318800 + index,
        bsuid(index),
    )


def test_pywa_peer_answers_each_signed_text_once(peer):
    server, sim = peer
    before = len(sent(sim))

    for index in range(5):
        body = body_of(index)
        assert post(server, body, signature(procs.APP_SECRET, body)) == 200

    replies = wait_sent(sim, before + 5)[before:]
    assert sorted(r["body"]["to"] for r in replies) == [phone(i) for i in range(5)]
    assert {r["body"]["text"]["body"] for r in replies} == {REPLY}
    assert all(r["wamid"] for r in replies), "the simulator refused a send"
    assert {r["phone_number_id"] for r in replies} == {procs.PHONE_NUMBER_ID}


def test_pywa_peer_refuses_forged_signature(peer):
    server, sim = peer
    body = body_of(99)
    before = len(sent(sim))

    status = post(server, body, signature("another-secret", body))

    # pywa sends after its 200: give a wrongly accepted update time to show.
    time.sleep(0.3)
    assert status == 403
    assert len(sent(sim)) == before


def test_loopback_transport_refuses_other_hosts():
    pytest.importorskip("pywa_async", reason="pywa not installed (.[bench])")
    from bench.pywa_peer import LoopbackTransport

    with pytest.raises(ValueError, match="127.0.0.1"):
        LoopbackTransport("https://graph.facebook.com")


def test_pywa_row_skips_when_pywa_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(scenarios, "PYWA_MODULES", ("pywa_async", "no_such_pywa"))

    with pytest.raises(scenarios.Skipped, match="no_such_pywa"):
        scenarios.pywa(scenarios.Load(count=1), tmp_path)
