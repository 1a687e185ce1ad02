"""Versioned personas: every change is a new row of persona_versions, the brand's current persona
records its version, and each reply records the version it was drafted with.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[object]:
    """JSONB on Postgres, JSON elsewhere (same as common.db.models.JSONType)."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "persona_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("brand_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("persona", _json(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"], ["brands.id"], name="fk_persona_versions_brand_id_brands", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_persona_versions"),
        sa.UniqueConstraint("brand_id", "version", name="uq_persona_versions_brand_id_version"),
    )
    op.add_column(
        "persona_profiles", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.add_column("message_logs", sa.Column("persona_version", sa.Integer(), nullable=True))
    # Every existing persona becomes its brand's version 1.
    op.execute(
        """
        INSERT INTO persona_versions (id, brand_id, version, persona, created_by, created_at)
        SELECT gen_random_uuid(), brand_id, 1,
               jsonb_build_object(
                 'tone', tone, 'languages', languages, 'greeting', greeting, 'sign_off', sign_off,
                 'avoid_topics', avoid_topics, 'escalation_message', escalation_message,
                 'fallback_message', fallback_message),
               'migration', updated_at
        FROM persona_profiles
        """
    )


def downgrade() -> None:
    op.drop_column("message_logs", "persona_version")
    op.drop_column("persona_profiles", "version")
    op.drop_table("persona_versions")
