"""Model metadata: deterministic names, checks built from the domain enums, Postgres DDL compiles."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db.models import Base, MessageLog, OutboxMessage
from common.domain import Channel, ConversationState

EXPECTED_TABLES = {
    "agent_accounts",
    "agent_sessions",
    "api_keys",
    "audit_log",
    "deliveries",
    "action_logs",
    "tenants",
    "brands",
    "persona_profiles",
    "persona_versions",
    "channel_configs",
    "conversations",
    "message_logs",
    "message_media",
    "media_contents",
    "knowledge_sources",
    "knowledge_chunks",
    "automation_rules",
    "ingestion_jobs",
    "outbox_messages",
}


def test_all_tables_are_mapped():
    assert set(Base.metadata.tables) == EXPECTED_TABLES


@pytest.mark.parametrize("table_name", sorted(EXPECTED_TABLES))
def test_every_constraint_and_index_has_a_deterministic_name(table_name):
    table = Base.metadata.tables[table_name]
    # Names come from the naming convention at DDL time; compile to make them concrete.
    ddl = str(CreateTable(table).compile(dialect=postgresql.dialect()))
    names = re.findall(r"CONSTRAINT (\S+)", ddl)
    assert len(names) == len(table.constraints)
    assert all(name.split("_", 1)[0] in {"pk", "uq", "ck", "fk"} for name in names)
    assert all(table_name in name for name in names)
    assert all(len(name) <= 63 for name in names)
    for index in table.indexes:
        # Plain indexes are ix_<table>_..., unique (partial) indexes uq_<table>_...
        prefix = "uq" if index.unique else "ix"
        assert str(index.name).startswith(f"{prefix}_{table_name}_")
        assert len(str(index.name)) <= 63


def test_idempotency_key_is_unique_on_message_logs():
    uniques = {
        tuple(c.name for c in uc.columns)
        for uc in MessageLog.__table__.constraints
        if isinstance(uc, UniqueConstraint)
    }
    assert ("brand_id", "channel", "direction", "provider_message_id") in uniques


def test_channel_and_state_checks_follow_the_domain_enums():
    ddl = str(CreateTable(Base.metadata.tables["conversations"]).compile(dialect=postgresql.dialect()))
    for channel in Channel:
        assert f"'{channel.value}'" in ddl
    for state in ConversationState:
        assert f"'{state.value}'" in ddl
    assert "CONSTRAINT ck_conversations_channel CHECK" in ddl
    assert "CONSTRAINT ck_conversations_state CHECK" in ddl


def test_json_columns_are_jsonb_on_postgres():
    ddl = str(CreateTable(Base.metadata.tables["message_logs"]).compile(dialect=postgresql.dialect()))
    assert "citations JSONB NOT NULL" in ddl
    assert "prompt JSONB" in ddl
    assert "created_at TIMESTAMP WITH TIME ZONE DEFAULT clock_timestamp() NOT NULL" in ddl


def test_outbox_index_is_partial_on_unpublished_rows():
    (index,) = OutboxMessage.__table__.indexes
    ddl = str(CreateIndex(index).compile(dialect=postgresql.dialect()))
    assert "WHERE published_at IS NULL" in ddl
