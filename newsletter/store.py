"""The store: SQLAlchemy over SQLite (the default) or PostgreSQL, its schema migrated by Alembic on open.

Tables are SQLAlchemy Core objects, so the bulk work of planning and sending stays a few set-based statements
per batch. Opening a database older than the code upgrades it in place through the named migration steps under
newsletter/migrations/versions; rows are never dropped.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .errors import NewsletterError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
metadata = sa.MetaData()

settings = sa.Table(
    "settings", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)  # fmt: skip

subscribers = sa.Table(
    "subscribers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_key", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("source", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)  # fmt: skip

subscriptions = sa.Table(
    "subscriptions", metadata,
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("newsletter", sa.String(64), primary_key=True),
    sa.Column("categories", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_subscriptions_newsletter", "newsletter"),
)  # fmt: skip

issues = sa.Table(
    "issues", metadata,
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
)  # fmt: skip

issue_posts = sa.Table(
    "issue_posts", metadata,
    sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("post_key", sa.String(1000), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
)  # fmt: skip

variants = sa.Table(
    "variants", metadata,
    sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("post_keys", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)  # fmt: skip

deliveries = sa.Table(
    "deliveries", metadata,
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
    sa.Column("audience", sa.Text),
    sa.UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
    sa.Index("ix_deliveries_issue_status", "issue_id", "status", "id"),
    sa.Index("ix_deliveries_issue_audience", "issue_id", "status", "audience", "id"),
)  # fmt: skip


class StoreError(NewsletterError):
    """The database cannot be opened or migrated."""


def utcnow() -> datetime:
    """The real wall clock, for bookkeeping that is not about "recent posts" (leases, retry times)."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; the store only ever writes UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


@dataclass
class Store:
    engine: Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def setting(self, key: str, make: callable) -> str:
        """A setting's value, made and stored by the first caller; concurrent callers all get the stored one."""
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar()
            if found is not None:
                return found
        try:
            with self.engine.begin() as conn:
                conn.execute(settings.insert().values(key=key, value=make()))
        except IntegrityError:
            pass  # another process stored it first; use theirs
        with self.engine.begin() as conn:
            return conn.execute(sa.select(settings.c.value).where(settings.c.key == key)).scalar_one()

    def secret(self) -> str:
        """The token-signing secret: NEWSLETTER_SECRET_KEY, else one made at random and kept in the database."""
        return os.environ.get("NEWSLETTER_SECRET_KEY") or self.setting("token_secret", lambda: secrets.token_hex(32))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    try:
        engine = sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, ImportError) as err:
        raise StoreError(f"[database] url: cannot use {engine_safe(url)}: {err}") from err
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot open the database {engine_safe(url)}: {err.strerror}: "
                                 f"{Path(database).parent}") from err
    return engine


def engine_safe(url: str) -> str:
    """A database URL fit to print: the password hidden."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "an invalid URL"


def open_store(url: str) -> Store:
    """Open the database at `url`, creating or upgrading its schema to the newest version."""
    engine = make_engine(url)
    try:
        migrate(engine)
    except sa.exc.OperationalError as err:
        raise StoreError(f"cannot open the database {engine_safe(url)}: {err.orig}") from err
    return Store(engine)


def migrate(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(alembic).get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7160457)"))  # one migrator at a time
        alembic.attributes["connection"] = conn
        command.upgrade(alembic, "head")


# --- The subscribers' web side (`newsletter serve`): migration 0005 -------------------------------------------

#: Each time someone left a newsletter: when and how (one-click, page, preferences, cli). `rejoined_at` is set
#: when they came back through their signed link or a confirmed sign-up; an open row keeps imports from re-adding.
unsubscribes = sa.Table(
    "unsubscribes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("how", sa.String(16), nullable=False),
    sa.Column("rejoined_at", sa.DateTime(timezone=True)),
    sa.Index("ix_unsubscribes_subscriber", "subscriber_id", "newsletter"),
)  # fmt: skip

#: Sign-ups awaiting (or past) confirmation: what was asked for, and the consent evidence (time and client IP).
signups = sa.Table(
    "signups", metadata,
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
    sa.Index("ix_signups_email_key", "email_key"),
)  # fmt: skip

#: One row per counted request (sign-ups per address and per client IP), so every `serve` process agrees.
rate_events = sa.Table(
    "rate_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bucket", sa.String(80), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_rate_events_bucket", "bucket", "at"),
)  # fmt: skip
