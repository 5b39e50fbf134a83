"""The scheduler's state: which daemon is active, paused newsletters, fires and one-off sends.

- schedule_lease: one row; the active `newsletter run` (owner id, host, pid, since when) and its heartbeat,
  a counter a standby watches: when it stops moving for a lease period, the standby takes over.
- schedule_daemons: every running daemon, active or standby, with its last heartbeat (for `schedule`).
- schedule_state: per newsletter, whether it is paused and up to when its fires have been handled.
- schedule_fires: every fire handled (sent, missed, coalesced, paused, failed) and every one-off send
  (scheduled, cancelled, then as a fire), with the issue it sent.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    lease = op.create_table(
        "schedule_lease",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("since", sa.DateTime(timezone=True)),
        sa.Column("heartbeat", sa.DateTime(timezone=True)),
        sa.Column("beat", sa.Integer, nullable=False, server_default="0"),
        sa.Column("seconds", sa.Integer, nullable=False, server_default="30"),
    )
    op.bulk_insert(lease, [{"id": 1, "beat": 0}])
    op.create_table(
        "schedule_daemons",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
    )
    op.create_table(
        "schedule_state",
        sa.Column("newsletter", sa.String(64), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("paused_at", sa.DateTime(timezone=True)),
        sa.Column("checked_until", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("newsletter", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="SET NULL")),
        sa.Column("detail", sa.Text),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("newsletter", "kind", "fire_time", name="uq_schedule_fires_newsletter_time"),
    )
    op.create_index("ix_schedule_fires_status", "schedule_fires", ["status", "fire_time"])


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("schedule_state")
    op.drop_table("schedule_daemons")
    op.drop_table("schedule_lease")
