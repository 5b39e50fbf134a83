"""The subscribers' web side: per-newsletter unsubscribes, sign-ups awaiting confirmation, rate limits.

Revision ID: 0005
Revises: 0004
"""

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the tables come with `newsletter serve`


def downgrade() -> None:
    pass
