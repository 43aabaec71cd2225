"""Log helpers: masking and errors that repeat during an outage."""

from __future__ import annotations

import logging
import time

import pytest

from bot import logs
from bot.logs import Repeated, mask


def test_a_phone_shows_only_its_last_four_digits():
    assert mask("56911112222") == "…2222"
    assert mask(None) == "-"


def test_an_error_that_repeats_is_logged_once_a_period(caplog):
    # A database down for a minute logged the same ERROR every half second
    # from the sender and the dispatcher each.
    logger = logging.getLogger("tracbot.test_logs")
    repeated = Repeated(logger, every=0.2)
    with caplog.at_level(logging.WARNING, logger="tracbot.test_logs"):
        for _ in range(5):
            repeated.failed("outbox unavailable, retrying: %s", "locked")
        time.sleep(0.25)
        repeated.failed("outbox unavailable, retrying: %s", "locked")
        repeated.succeeded("outbox available again")
        repeated.succeeded("outbox available again")

    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("ERROR", "outbox unavailable, retrying: locked"),
        (
            "ERROR",
            "outbox unavailable, retrying: locked (4 more like it since the last line)",
        ),
        ("WARNING", "outbox available again"),
    ]


@pytest.fixture
def restore_logs():
    """The loggers `logs.setup` changes, as they were, after the test."""
    names = ("tracbot", "asyncpg", "aiohttp.server")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    yield
    for logger, (handlers, propagate, level) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


def test_the_database_drivers_errors_are_one_line_each(capsys, restore_logs):
    # asyncpg's pool logged every failed reconnect with a whole traceback.
    logs.setup("INFO")  # as `tracbot` does, writing to this test's stderr
    try:
        raise ConnectionRefusedError("connect call failed ('127.0.0.1', 5432)")
    except ConnectionRefusedError:
        logging.getLogger("asyncpg.pool").warning(
            "Failed to restore the pool connection floor; retrying", exc_info=True
        )
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    [line] = err.splitlines()
    assert line.endswith(
        "WARNING asyncpg.pool Failed to restore the pool connection floor; "
        "retrying: ConnectionRefusedError: connect call failed ('127.0.0.1', 5432)"
    )


def test_a_request_aiohttp_cannot_decode_is_one_line(capsys, restore_logs):
    # `Content-Encoding: br` from anyone: aiohttp's whole traceback, each.
    logs.setup("INFO")
    try:
        raise ValueError("Can not decode content-encoding: brotli (br)")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.rstrip().endswith(
        "ERROR aiohttp.server Error handling request: ValueError: "
        "Can not decode content-encoding: brotli (br)"
    )
