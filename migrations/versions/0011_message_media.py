"""Media in: the pictures, voice notes, videos, files and locations customers send (``message_media``),
their bytes (``media_contents``), and the persona's reply to media it cannot read.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

MEDIA_MESSAGE = "I can only read text messages, so a member of our team will look at this."


def upgrade() -> None:
    op.add_column(
        "persona_profiles",
        sa.Column("media_message", sa.Text(), nullable=False, server_default=MEDIA_MESSAGE),
    )
    # The default was for the rows that existed; new rows always name it (the model's default).
    op.alter_column("persona_profiles", "media_message", server_default=None)
    op.create_table(
        "message_media",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("voice", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("provider_ref", sa.Text(), nullable=False),
        sa.Column("mime_type", sa.String(length=200), nullable=True),
        sa.Column("filename", sa.String(length=300), nullable=True),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'stored', 'too_large', 'failed')", name=op.f("ck_message_media_status")
        ),
        sa.ForeignKeyConstraint(
            ["brand_id", "tenant_id"],
            ["brands.id", "brands.tenant_id"],
            name=op.f("fk_message_media_brand_id_brands"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["channel_configs.id"],
            name=op.f("fk_message_media_connection_id_channel_configs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message_logs.id"],
            name=op.f("fk_message_media_message_id_message_logs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_media")),
        sa.UniqueConstraint("message_id", name=op.f("uq_message_media_message_id")),
    )
    op.create_table(
        "media_contents",
        sa.Column("media_id", sa.Uuid(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["media_id"],
            ["message_media.id"],
            name=op.f("fk_media_contents_media_id_message_media"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("media_id", name=op.f("pk_media_contents")),
    )


def downgrade() -> None:
    op.drop_table("media_contents")
    op.drop_table("message_media")
    op.drop_column("persona_profiles", "media_message")
