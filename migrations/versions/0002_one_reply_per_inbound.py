"""One bot reply per inbound message: unique partial index on message_logs.in_reply_to.

Webhook messages are stored first and answered by a worker; two workers racing on the same message
must not both send a reply. The unique index makes the second insert a no-op.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_message_logs_in_reply_to", table_name="message_logs")
    op.create_index(
        "uq_message_logs_reply",
        "message_logs",
        ["in_reply_to"],
        unique=True,
        postgresql_where=sa.text("in_reply_to IS NOT NULL AND direction = 'outbound'"),
    )


def downgrade() -> None:
    op.drop_index("uq_message_logs_reply", table_name="message_logs")
    op.create_index("ix_message_logs_in_reply_to", "message_logs", ["in_reply_to"], unique=False)
