"""X-Hub-Signature-256 on raw bytes, with the digests INDEX.md gives."""

from __future__ import annotations

import json
import re

import pytest

from bot.whatsapp.signature import sign, verify
from tests.support import corpus

SECRET = "test-app-secret"
KNOWN = {
    "text_with_emoji_and_accents.json": (
        "sha256=3e4761dc58c7a78204e5119a9d92522c6bf476aeac4f51720012e1d8084fa65e"
    ),
    "text_simple.json": (
        "sha256=c504455efc529320d101763e29fc0739b31915931a85cb8c74d9df9548b6145f"
    ),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_sign_matches_the_published_digest(name):
    assert sign(SECRET, corpus(name)) == KNOWN[name]


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_verify_accepts_the_exact_bytes(name):
    assert verify(SECRET, corpus(name), KNOWN[name])


def test_verify_accepts_uppercase_hex():
    name = "text_simple.json"
    assert verify(SECRET, corpus(name), "sha256=" + KNOWN[name][7:].upper())


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=", "sha1=abc", KNOWN["text_simple.json"][7:], "sha256=zz"],
)
def test_verify_refuses_malformed_headers(header):
    assert not verify(SECRET, corpus("text_simple.json"), header)


def test_reserialized_body_does_not_verify():
    body = corpus("text_with_emoji_and_accents.json")
    header = KNOWN["text_with_emoji_and_accents.json"]
    for ensure_ascii in (True, False):
        again = json.dumps(json.loads(body), ensure_ascii=ensure_ascii).encode()
        assert not verify(SECRET, again, header)


def test_body_decoded_by_a_proxy_still_verifies():
    # A proxy that turned \u00bf escapes back into UTF-8 changed the bytes;
    # the escaped form of what we got is what Meta signed.
    body = corpus("text_with_emoji_and_accents.json")
    header = KNOWN["text_with_emoji_and_accents.json"]
    text = re.sub(
        r"\\u([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)), body.decode("ascii")
    )
    proxied = text.encode("utf-16", "surrogatepass").decode("utf-16").encode()
    assert proxied != body
    assert verify(SECRET, proxied, header)


def test_wrong_secret_is_refused():
    name = "text_simple.json"
    assert not verify("another-secret", corpus(name), KNOWN[name])
    assert not verify("", corpus(name), KNOWN[name])
