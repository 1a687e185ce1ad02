"""URL handling, error mapping and the migration config, without a database server."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import text

from common.db import migrate
from common.db.session import make_engine, make_sessionmaker, normalize_url, redact_url, session_scope
from common.errors import DatabaseUnavailable


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://postgres:@/ema?host=/tmp/x", "postgresql+psycopg://postgres:@/ema?host=/tmp/x"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_normalize_url(given, expected):
    assert normalize_url(given) == expected


def test_normalize_url_rejects_non_urls():
    with pytest.raises(ValueError):
        normalize_url("not a url")


def test_redact_url_hides_password():
    assert "secret" not in redact_url("postgresql://u:secret@h/db")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_session_scope_maps_unreachable_database_to_database_unavailable():
    engine = make_engine(f"postgresql://nobody@127.0.0.1:{_closed_port()}/nothing")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            async with session_scope(make_sessionmaker(engine)) as session:
                await session.execute(text("select 1"))
        assert info.value.retryable
    finally:
        await engine.dispose()


async def test_session_scope_lets_other_errors_through():
    engine = make_engine(f"postgresql://nobody@127.0.0.1:{_closed_port()}/nothing")
    try:
        with pytest.raises(KeyError):
            async with session_scope(make_sessionmaker(engine)):
                raise KeyError("boom")
    finally:
        await engine.dispose()


def test_alembic_config_keeps_percent_signs_and_finds_scripts():
    config = migrate.alembic_config("postgresql://u:p%40ss@h/db")
    assert config.attributes["sqlalchemy.url"] == "postgresql+psycopg://u:p%40ss@h/db"
    assert config.get_main_option("script_location", "").endswith("migrations")


def test_migrations_have_a_single_head():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://u@h/db"))
    heads = script.get_heads()
    assert len(heads) == 1, heads  # a linear history: no branches to merge
    # ...and every revision chains down to 0001.
    assert [r.revision for r in script.walk_revisions()][-1] == "0001"
