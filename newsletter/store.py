"""The store: SQLAlchemy over SQLite (the default) or PostgreSQL, its schema migrated by Alembic on open.

Tables are SQLAlchemy Core objects, so the bulk work of planning and sending stays a few set-based statements
per batch. Opening a database older than the code upgrades it in place through the named migration steps under
newsletter/migrations/versions; rows are never dropped.
"""

from __future__ import annotations

import os
import re
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


class Instant(sa.types.TypeDecorator):
    """A moment, stored as UTC on every database and read back as an aware UTC datetime.

    SQLite keeps no offset: an aware value in the site's zone would be stored as its wall-clock time and read
    back as if it were UTC. Converting on the way in makes both databases agree."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime ({value.isoformat()}) cannot be stored: its zone is unknown")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    def bind_processor(self, dialect):
        """The conversion above and the driver's own, done once for a run of the same value: a bulk write stamps
        thousands of rows with one `now` (an import of 100,000 rows converted it 300,000 times)."""
        convert = super().bind_processor(dialect)
        last: tuple = (None, None)

        def process(value):
            nonlocal last
            seen = last  # one read of an immutable pair: safe when threads share this statement
            if value is not None and seen[0] is value:
                return seen[1]
            result = convert(value) if convert else value
            last = (value, result)
            return result

        return process


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
    sa.Column("created_at", Instant(), nullable=False),
    sa.Column("updated_at", Instant(), nullable=False),
)  # fmt: skip

subscriptions = sa.Table(
    "subscriptions", metadata,
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("newsletter", sa.String(64), primary_key=True),
    sa.Column("categories", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", Instant(), nullable=False),
    sa.Index("ix_subscriptions_newsletter", "newsletter"),
)  # fmt: skip

issues = sa.Table(
    "issues", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("period", sa.String(32), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("planned_at", Instant(), nullable=False),
    sa.Column("reference_time", Instant(), nullable=False),
    sa.Column("posts", sa.Text, nullable=False),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires", Instant()),
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
    sa.Column("next_attempt_at", Instant()),
    sa.Column("updated_at", Instant()),
    sa.Column("audience", sa.Text),
    sa.UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
    sa.Index("ix_deliveries_issue_status", "issue_id", "status", "id"),
    sa.Index("ix_deliveries_issue_audience", "issue_id", "status", "audience", "id"),
)  # fmt: skip


class StoreError(NewsletterError):
    """The database cannot be opened, migrated, read or written; the message names it (password hidden)."""


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


URL_VARIABLE = "NEWSLETTER_DATABASE_URL"


def _source(url: str) -> str:
    """Where the user set the database URL, to name in a message."""
    return URL_VARIABLE if os.environ.get(URL_VARIABLE) == url else "[database] url"


def make_engine(url: str) -> Engine:
    """An engine for `url` whose database faults (a file that is not a database, a damaged or read-only
    file, a server that cannot be reached) come out as StoreError naming the database, the password hidden."""
    source, safe = _source(url), engine_safe(url)
    if not url.startswith("sqlite") and url.partition("://")[2].count("@") > 1:
        raise StoreError(f"{source}: cannot use {safe}: the user name or password holds an '@'; write it as %40 "
                         "in the URL")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    try:
        parsed = sa.engine.make_url(url)
        port = parsed.port
    except (sa.exc.ArgumentError, ValueError) as err:
        reason = err if isinstance(err, sa.exc.ArgumentError) else "its port is not a number"
        raise StoreError(f"{source}: cannot use {safe}: {reason}") from err
    if port is not None and not 0 < port < 65536:
        raise StoreError(f"{source}: cannot use {safe}: the port {port} is not between 1 and 65535")
    try:
        engine = sa.create_engine(parsed, future=True)
    except (sa.exc.ArgumentError, ImportError) as err:
        raise StoreError(f"{source}: cannot use {safe}: {err}") from err
    sa.event.listen(engine, "handle_error", _DatabaseFaults(safe, source, parsed.password))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        uri = str(engine.url.query.get("uri", "")).lower() in ("true", "1")
        if database and database != ":memory:" and not uri:
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot open the database {safe}: {err.strerror}: "
                                 f"{Path(database).parent}") from err
    return engine


class _DatabaseFaults:
    """Turns the driver's errors about the database itself into one line a person can act on. Errors about
    the statements (a constraint, bad data) are left alone: the code handles those, or they are bugs."""

    SQLITE = (
        ("file is not a database", "cannot open the database {db}: the file is not an SQLite database; set {source} "
                                   "to the newsletter's database, or move this file away to start a new one"),
        ("malformed", "the database {db} is damaged ({reason}); restore it from a backup (the sqlite3 shell's "
                      ".recover command may save its rows)"),
        ("readonly", "the database {db} is read-only ({reason}); make the file and its folder writable by this "
                     "user, or copy it somewhere writable and set {source} to the copy"),
        ("unable to open", "cannot open the database {db} ({reason}); check that its folder exists and that this "
                           "user may write there"),
        ("locked", "the database {db} stayed locked by another process for 30 s ({reason}); try again when that "
                   "process has finished"),
        ("disk i/o error", "the database {db} could not be read or written ({reason}); check the disk and the "
                           "file"),
    )

    def __init__(self, safe: str, source: str, password: str | None):
        self.safe, self.source, self.password = safe, source, password

    def __call__(self, context) -> StoreError | None:
        error = context.sqlalchemy_exception
        if not isinstance(error, sa.exc.OperationalError | sa.exc.DatabaseError) or isinstance(
                error, sa.exc.IntegrityError | sa.exc.DataError | sa.exc.ProgrammingError | sa.exc.NotSupportedError):
            return None
        reason = " ".join(str(context.original_exception).split("\n")[0].split())
        if self.password:
            reason = reason.replace(self.password, "***")
        values = {"db": self.safe, "source": self.source, "reason": reason}
        if context.engine is not None and context.engine.dialect.name == "sqlite":
            for clue, message in self.SQLITE:
                if clue in reason.lower():
                    return StoreError(message.format(**values))
            return StoreError("the database {db} failed: {reason}".format(**values))
        if context.connection is None or "connection" in reason.lower():
            lowered = reason.lower()
            if "password" in lowered or "authentication" in lowered:
                advice = "check the user name and password in {source}"
            elif "does not exist" in lowered:
                advice = "create it, or correct the name in {source}"
            else:
                advice = "check that the server is running and that {source} names it rightly"
            return StoreError(("cannot connect to the database {db}: {reason}; " + advice).format(**values))
        return StoreError("the database {db} failed: {reason}".format(**values))


def engine_safe(url: str) -> str:
    """A database URL fit to print: the password hidden, whatever characters it holds (an '@' in a password
    that is not written %40 makes SQLAlchemy's own parser show part of it)."""
    scheme, separator, rest = str(url).partition("://")
    if not separator or not scheme or any(c.isspace() for c in scheme):
        return "an invalid URL"
    rest = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", rest)
    if scheme.startswith("sqlite") or "@" not in rest:
        return f"{scheme}://{rest}"
    userinfo, _, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def open_store(url: str) -> Store:
    """Open the database at `url`, creating or upgrading its schema to the newest version."""
    engine = make_engine(url)
    try:
        migrate(engine)
    except sa.exc.OperationalError as err:
        raise StoreError(f"cannot open the database {engine_safe(url)}: {err.orig}") from err
    return Store(engine)


def newest_migration() -> str:
    """The revision of the newest migration script, read from the file names: they are NNNN_<what>.py with
    revision NNNN, each following the one before (tests/test_store.py holds alembic's head to it)."""
    return max(path.name.partition("_")[0] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT max(version_num) FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration. A database already there, as for every send but the first,
    is told apart without loading alembic and its scripts: that was a third of a second before a send's first
    request could go."""
    if _current_revision(engine) == newest_migration():
        return
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


# The scheduler's tables (migration 0004): the active daemon's lease, every daemon, per-newsletter state, fires.
schedule_lease = sa.Table(
    "schedule_lease", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(255)),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("since", Instant()),
    sa.Column("heartbeat", Instant()),
    sa.Column("beat", sa.Integer, nullable=False, server_default="0"),
    sa.Column("seconds", sa.Integer, nullable=False, server_default="30"),
)  # fmt: skip

schedule_daemons = sa.Table(
    "schedule_daemons", metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", Instant(), nullable=False),
    sa.Column("heartbeat", Instant(), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
)  # fmt: skip

schedule_state = sa.Table(
    "schedule_state", metadata,
    sa.Column("newsletter", sa.String(64), primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("paused_at", Instant()),
    sa.Column("checked_until", Instant()),
    sa.Column("updated_at", Instant(), nullable=False),
)  # fmt: skip

schedule_fires = sa.Table(
    "schedule_fires", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("fire_time", Instant(), nullable=False),
    sa.Column("period", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("issue_id", sa.Integer, sa.ForeignKey("issues.id", ondelete="SET NULL")),
    sa.Column("detail", sa.Text),
    sa.Column("recorded_at", Instant(), nullable=False),
    sa.Column("updated_at", Instant(), nullable=False),
    sa.UniqueConstraint("newsletter", "kind", "fire_time", name="uq_schedule_fires_newsletter_time"),
    sa.Index("ix_schedule_fires_status", "status", "fire_time"),
)  # fmt: skip

# --- The subscribers' web side (`newsletter serve`): migration 0005 -------------------------------------------

#: Each time someone left a newsletter: when and how (one-click, page, preferences, cli). `rejoined_at` is set
#: when they came back through their signed link or a confirmed sign-up; an open row keeps imports from re-adding.
#: `categories` (migration 0007) is what the subscription held, given back when they rejoin; NULL on older rows.
unsubscribes = sa.Table(
    "unsubscribes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("at", Instant(), nullable=False),
    sa.Column("how", sa.String(16), nullable=False),
    sa.Column("rejoined_at", Instant()),
    sa.Column("categories", sa.Text),
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
    sa.Column("created_at", Instant(), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False, server_default=""),
    sa.Column("confirmed_at", Instant()),
    sa.Column("confirmed_ip", sa.String(64)),
    sa.Index("ix_signups_email_key", "email_key"),
)  # fmt: skip

#: One row per counted request (sign-ups per address and per client IP), so every `serve` process agrees.
rate_events = sa.Table(
    "rate_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bucket", sa.String(80), nullable=False),
    sa.Column("at", Instant(), nullable=False),
    sa.Index("ix_rate_events_bucket", "bucket", "at"),
)  # fmt: skip

# --- What providers report back (events.py): one row per provider event, keyed so a repeat is recorded once.
delivery_events = sa.Table(
    "delivery_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_key", sa.String(255), nullable=False, unique=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("issue_id", sa.Integer, nullable=False),
    sa.Column("subscriber_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("classification", sa.String(16)),
    sa.Column("detail", sa.Text),
    sa.Column("occurred_at", Instant(), nullable=False),
    sa.Column("received_at", Instant(), nullable=False),
    sa.Index("ix_delivery_events_issue_kind", "issue_id", "kind"),
    sa.Index("ix_delivery_events_subscriber", "subscriber_id", "delivery_id"),
)  # fmt: skip
