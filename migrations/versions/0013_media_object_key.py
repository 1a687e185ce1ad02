"""Media bytes in an S3-compatible bucket: the object key a stored media item was uploaded under
(``message_media.object_key``; None: the bytes are in ``media_contents``).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("message_media", sa.Column("object_key", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("message_media", "object_key")
