"""Delivery receipts: what the provider reported after accepting a message (sent, delivered, read,
failed with its reason), found by the provider's message id.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("receipt", sa.String(length=16), nullable=True))
    op.add_column("deliveries", sa.Column("receipt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("deliveries", sa.Column("receipt_error", sa.Text(), nullable=True))
    op.create_index("ix_deliveries_provider_message_id", "deliveries", ["provider_message_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_provider_message_id", table_name="deliveries")
    op.drop_column("deliveries", "receipt_error")
    op.drop_column("deliveries", "receipt_at")
    op.drop_column("deliveries", "receipt")
