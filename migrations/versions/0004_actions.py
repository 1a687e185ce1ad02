"""Action framework audit trail: one row per action the LLM proposed, with its outcome.

``(message_key, name)`` is unique so a redelivered message never runs the same action twice.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_STATUSES = ("rejected", "pending_confirmation", "declined", "running", "succeeded", "failed", "denied")


def _json() -> sa.types.TypeEngine[object]:
    """JSONB on Postgres, JSON elsewhere (same as common.db.models.JSONType)."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    statuses = ", ".join(f"'{s}'" for s in _STATUSES)
    op.create_table(
        "action_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("message_key", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("arguments", _json(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"status IN ({statuses})", name=op.f("ck_action_logs_status")),
        sa.ForeignKeyConstraint(
            ["brand_id", "tenant_id"],
            ["brands.id", "brands.tenant_id"],
            name=op.f("fk_action_logs_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_action_logs_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_logs")),
        sa.UniqueConstraint("message_key", "name", name=op.f("uq_action_logs_message_key_name")),
    )
    op.create_index(
        "ix_action_logs_conversation_id_created_at", "action_logs", ["conversation_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_action_logs_conversation_id_created_at", table_name="action_logs")
    op.drop_table("action_logs")
