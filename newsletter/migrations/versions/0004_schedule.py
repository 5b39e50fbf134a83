"""The scheduler's state: which daemon is active, paused newsletters, fires and one-off sends.

Revision ID: 0004
Revises: 0003
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the tables come with `newsletter run`


def downgrade() -> None:
    pass
