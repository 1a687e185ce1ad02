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


def test_upgrade_from_the_first_release_keeps_data(make_database):
    """A database created by the first release (0001) with live data upgrades to head intact."""
    from sqlalchemy import text

    url = make_database()
    migrate.upgrade(url, "0001")
    engine = make_sync_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, slug, name) VALUES (:t, 'acme', 'Acme')"), {"t": T})
            conn.execute(
                text("INSERT INTO brands (id, tenant_id, slug, name) VALUES (:b, :t, 'outdoor', 'Outdoor')"),
                {"b": B, "t": T},
            )
            conn.execute(
                text(
                    "INSERT INTO conversations (id, tenant_id, brand_id, channel, customer_id, state) "
                    "VALUES (:c, :t, :b, 'whatsapp', '15550001111', 'bot')"
                ),
                {"c": C, "t": T, "b": B},
            )
            for mid, direction, reply_to in ((M1, "inbound", None), (M2, "outbound", M1)):
                conn.execute(
                    text(
                        "INSERT INTO message_logs (id, conversation_id, tenant_id, brand_id, channel,"
                        " direction, provider_message_id, in_reply_to, text, citations, guardrails)"
                        " VALUES (:m, :c, :t, :b, 'whatsapp', :d, :p, :r, 'hello', '[]', '[]')"
                    ),
                    {"m": mid, "c": C, "t": T, "b": B, "d": direction, "p": f"wamid.{mid}", "r": reply_to},
                )
        migrate.upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT direction, in_reply_to FROM message_logs ORDER BY direction")
            ).all()
            assert [(r[0], str(r[1]) if r[1] else None) for r in rows] == [
                ("inbound", None),
                ("outbound", M1),
            ]
            assert conn.execute(text("SELECT count(*) FROM conversations")).scalar() == 1
        # The constraint the upgrade added holds on the migrated data: a second reply is refused.
        with pytest.raises(Exception, match="uq_message_logs_reply"), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO message_logs (id, conversation_id, tenant_id, brand_id, channel, direction,"
                    " in_reply_to, text, citations, guardrails) VALUES (gen_random_uuid(), :c, :t, :b,"
                    " 'whatsapp', 'outbound', :r, 'again', '[]', '[]')"
                ),
                {"c": C, "t": T, "b": B, "r": M1},
            )
    finally:
        engine.dispose()
    assert _diff(url) == []


T = "6f1c2a4e-0000-4000-8000-00000000aa01"
B = "6f1c2a4e-0000-4000-8000-00000000bb01"
C = "6f1c2a4e-0000-4000-8000-00000000cc01"
M1 = "6f1c2a4e-0000-4000-8000-00000000dd01"
M2 = "6f1c2a4e-0000-4000-8000-00000000dd02"
