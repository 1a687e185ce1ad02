"""The Alembic history builds exactly the models' schema, and tears it down again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from common.db import migrate
from common.db.models import Base
from common.db.session import make_sync_engine

pytestmark = pytest.mark.integration


def _tables(url: str) -> set[str]:
    engine = make_sync_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str) -> list[object]:
    engine = make_sync_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(make_database):
    url = make_database()
    model_tables = set(Base.metadata.tables)

    head = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
    migrate.upgrade(url)
    assert _tables(url) == model_tables | {"alembic_version"}
    assert migrate.current(url) == head

    # Every step down and up again (each migration's downgrade runs against real data structures).
    migrate.downgrade(url, "0001")
    assert migrate.current(url) == "0001"
    migrate.upgrade(url)
    assert migrate.current(url) == head

    migrate.downgrade(url, "base")
    assert _tables(url) == {"alembic_version"}
    assert migrate.current(url) is None

    migrate.upgrade(url)
    assert _tables(url) == model_tables | {"alembic_version"}


def test_models_match_migrated_schema(database_url):
    assert _diff(database_url) == []


def test_autogenerate_sees_a_model_change(make_database):
    # Guards the test above: an empty database must produce a diff, or "no diff" proves nothing.
    url = make_database()
    assert any(op[0] == "add_table" for op in _diff(url) if isinstance(op, tuple))
