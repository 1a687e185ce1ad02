"""When the customer sent an inbound message, by the provider's clock (``message_logs.sent_at``): the
WhatsApp and Instagram customer-service windows are measured from it.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: rows written before (and channels without a provider timestamp)
    # fall back to created_at, which is what the window used until now.
    op.add_column("message_logs", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("message_logs", "sent_at")
