"""Channel connections carry their own credentials (encrypted) and the Meta app that delivers them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep credentials NULL: they go on using the deployment's CHANNELS__* defaults.
    op.add_column("channel_configs", sa.Column("credentials", sa.Text(), nullable=True))
    op.add_column("channel_configs", sa.Column("app_id", sa.String(length=64), nullable=True))
    op.add_column(
        "channel_configs",
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.create_index("ix_channel_configs_app_id", "channel_configs", ["app_id"])


def downgrade() -> None:
    op.drop_index("ix_channel_configs_app_id", table_name="channel_configs")
    op.drop_column("channel_configs", "created_at")
    op.drop_column("channel_configs", "app_id")
    op.drop_column("channel_configs", "credentials")
