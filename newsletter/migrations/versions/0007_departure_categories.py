"""A departure keeps the categories its subscription held, so that rejoining gives them back.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL on departures recorded before: nobody knows what they held, so rejoining gives every category.
    with op.batch_alter_table("unsubscribes") as batch:
        batch.add_column(sa.Column("categories", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("unsubscribes") as batch:
        batch.drop_column("categories")
