"""Each delivery remembers the categories its subscriber had when the issue was planned, so that a send can
claim the subscribers of one digest variant together and post them in full batches.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("audience", sa.Text))
    op.create_index("ix_deliveries_issue_audience", "deliveries", ["issue_id", "status", "audience", "id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_issue_audience", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("audience")
