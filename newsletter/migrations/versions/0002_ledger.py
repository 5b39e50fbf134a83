"""The delivery ledger: issues, their frozen posts and rendered variants, one delivery row per subscriber.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("newsletter", sa.String(64), nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("posts", sa.Text, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("newsletter", "period", name="uq_issues_newsletter_period"),
    )
    op.create_table(
        "issue_posts",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("post_key", sa.String(1000), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_table(
        "variants",
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("post_keys", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("message_id", sa.String(255)),
        sa.Column("claim", sa.String(64)),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
    )
    op.create_index("ix_deliveries_issue_status", "deliveries", ["issue_id", "status", "id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("variants")
    op.drop_table("issue_posts")
    op.drop_table("issues")
