"""Deliveries may be ``held``: a reply outside the provider's window, kept with its reason, not sent.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_deliveries_status"), "deliveries", type_="check")
    op.create_check_constraint(
        op.f("ck_deliveries_status"), "deliveries", "status IN ('pending', 'sent', 'failed', 'skipped', 'held')"
    )


def downgrade() -> None:
    op.execute("UPDATE deliveries SET status = 'failed' WHERE status = 'held'")
    op.drop_constraint(op.f("ck_deliveries_status"), "deliveries", type_="check")
    op.create_check_constraint(
        op.f("ck_deliveries_status"), "deliveries", "status IN ('pending', 'sent', 'failed', 'skipped')"
    )
