"""The subscribers' web side: per-newsletter unsubscribes, sign-ups awaiting confirmation, rate limits.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unsubscribes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("newsletter", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("how", sa.String(16), nullable=False),
        sa.Column("rejoined_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_unsubscribes_subscriber", "unsubscribes", ["subscriber_id", "newsletter"])
    op.create_table(
        "signups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("newsletters", sa.Text, nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False, server_default=""),
        sa.Column("confirmed_at", sa.DateTime(timezone=True)),
        sa.Column("confirmed_ip", sa.String(64)),
    )
    op.create_index("ix_signups_email_key", "signups", ["email_key"])
    op.create_table(
        "rate_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bucket", sa.String(80), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_rate_events_bucket", "rate_events", ["bucket", "at"])


def downgrade() -> None:
    op.drop_table("rate_events")
    op.drop_table("signups")
    op.drop_table("unsubscribes")
