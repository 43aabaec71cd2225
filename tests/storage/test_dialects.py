"""The SQL of the ODBC dialects, checked as text.

The PostgreSQL dialect also runs for real in test_contract.py; no SQL Server
runs on our machines, so these checks are all the SQL Server dialect gets
until it meets a real server.
"""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from storage.dialects import (
    Dialect,
    PostgresDialect,
    SqlServerDialect,
    advisory_lock_key,
    dialect_for_dbms,
    dialect_named,
)
from storage.migrations import migrations

NOW = datetime(2024, 5, 6, 7, 8, 9)
ROW = ("wamid.1", "message", "561", "1065", "{}", NOW)


def every_statement(dialect: Dialect):
    conversation = ("561", "f", "s", "{}", "1", NOW, None, NOW)
    yield dialect.create_migrations_table()
    yield dialect.migration_lock()
    yield dialect.insert_event(ROW)
    yield dialect.keep_answer(("trip-77", "f" * 64, "{}", NOW))
    yield dialect.pending_phones(10)
    yield dialect.next_event("561")
    yield dialect.save_conversation(conversation)
    yield dialect.insert_returning_id("outbox", ("a", "b"), (1, 2))
    yield dialect.due_outbox(NOW, NOW, 5)
    yield dialect.lock_by_wamid("wamid.1")
    yield dialect.try_claim("tracbot.claim:561")
    yield dialect.release_claim("tracbot.claim:561")


@pytest.mark.parametrize("dialect", [PostgresDialect(), SqlServerDialect()])
def test_every_marker_has_a_parameter(dialect: Dialect) -> None:
    for statement in every_statement(dialect):
        assert statement.sql.count("?") == len(statement.params), statement.sql


def test_sql_server_statements_use_its_own_syntax() -> None:
    mssql = SqlServerDialect()
    sql = " ".join(s.sql for s in every_statement(mssql))

    assert not re.search(r"\b(LIMIT|RETURNING|ON CONFLICT|SKIP LOCKED)\b", sql)
    assert mssql.pending_phones(10).sql.startswith("SELECT TOP (?)")
    assert mssql.pending_phones(10).params == (10,)
    assert "OUTPUT INSERTED.id" in mssql.insert_returning_id("t", ("a",), (1,)).sql
    assert "WITH (UPDLOCK, READPAST, ROWLOCK)" in mssql.due_outbox(NOW, NOW, 5).sql
    assert "sp_getapplock" in mssql.try_claim("x").sql
    assert "@LockOwner = 'Session'" in mssql.try_claim("x").sql
    assert mssql.save_conversation(("561",) * 8).sql.startswith("MERGE")
    assert mssql.save_conversation(("561",) * 8).sql.endswith(";")


def test_sql_server_insert_event_checks_the_key_it_inserts() -> None:
    statement = SqlServerDialect().insert_event(ROW)

    assert "WHERE NOT EXISTS" in statement.sql
    assert "UPDLOCK, HOLDLOCK" in statement.sql
    assert statement.params == (*ROW, "wamid.1")


def test_sql_server_due_outbox_binds_the_limit_first() -> None:
    later = datetime(2024, 5, 6, 9, 0)
    statement = SqlServerDialect().due_outbox(NOW, later, 5)

    assert statement.params == (5, NOW, later, NOW)


@pytest.mark.parametrize("migration", migrations("mssql"), ids=lambda m: m.name)
def test_sql_server_schema_keeps_unicode_and_utc(migration) -> None:
    sql = " ".join(migration.statements()).upper()

    if "CREATE TABLE" in sql:
        assert "NVARCHAR" in sql
    for foreign in ("TIMESTAMP", " TEXT", " JSON", " VARCHAR", "SERIAL"):
        assert foreign not in sql.replace("NVARCHAR", "N_"), foreign


def test_every_dialect_has_the_same_migrations() -> None:
    # A migration added to one folder and forgotten in another would leave
    # that backend a schema behind.
    versions = {
        folder: [m.version for m in migrations(folder)]
        for folder in ("sqlite", "postgres", "odbc_postgresql", "mssql")
    }
    assert len({tuple(v) for v in versions.values()}) == 1, versions


def test_dialect_is_found_from_the_dbms_name() -> None:
    assert dialect_for_dbms("PostgreSQL").name == "postgresql"
    assert dialect_for_dbms("Microsoft SQL Server").name == "mssql"
    assert dialect_named("MSSQL").name == "mssql"
    with pytest.raises(ValueError, match="no ODBC dialect"):
        dialect_for_dbms("Oracle")
    with pytest.raises(ValueError, match="unknown ODBC dialect"):
        dialect_named("db2")


def test_connection_errors_are_told_apart_from_statement_errors() -> None:
    postgres, mssql = PostgresDialect(), SqlServerDialect()

    assert postgres.is_unavailable("08001", "connection refused")
    assert postgres.is_unavailable("57P01", "terminating connection")
    assert postgres.is_unavailable("HY000", "server closed the connection")
    assert mssql.is_unavailable("08S01", "Communication link failure")
    assert not postgres.is_unavailable("23505", "duplicate key value")
    assert not mssql.is_unavailable("42000", "Incorrect syntax near 'LIMIT'")


def test_advisory_lock_keys_are_stable_signed_64_bit() -> None:
    key = advisory_lock_key("tracbot.claim:56911111111")

    assert key == advisory_lock_key("tracbot.claim:56911111111")
    assert key != advisory_lock_key("tracbot.claim:56911111112")
    assert -(2**63) <= key < 2**63


def test_psqlodbc_saying_the_connection_has_been_lost_is_unavailable():
    # Its own words after a server restart: the dead pooled connection was
    # not retried, and the first calls after a restart got 503s.
    dialect = dialect_named("postgresql")
    message = "[HY000] The connection has been lost;\nError while preparing parameters"
    assert dialect.is_unavailable("HY000", message)
