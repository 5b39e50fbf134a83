"""Shared fixtures. Tests never read ../shared and never depend on today's date."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import settings

from newsletter.config import Config, load_config
from newsletter.site import read_posts

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# After every fixture post, before the fixture site's future post (2030).
FIXED_NOW = datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc)

# Property tests draw the same examples on every run: a failure is reproducible, never a matter of chance.
settings.register_profile("newsletter", derandomize=True, print_blob=True)
settings.load_profile("newsletter")


def pytest_addoption(parser):
    parser.addoption("--regenerate", action="store_true",
                     help="Rewrite the stored expected outputs (tests/expected) instead of comparing.")


@pytest.fixture
def regenerate(request) -> bool:
    return request.config.getoption("--regenerate")


def site_config(source: Path, **site_overrides) -> Config:
    config = load_config(None, source_override=source)
    if site_overrides:
        config = dataclasses.replace(config, site=dataclasses.replace(config.site, **site_overrides))
    return config


@pytest.fixture
def sample_config() -> Config:
    return load_config(ROOT / "newsletter.toml")


@pytest.fixture
def sample_posts(sample_config):
    result = read_posts(sample_config.site, FIXED_NOW)
    assert result.problems == []
    return result.posts


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No test touches a database, outbox or secret outside its own temporary folder."""
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path}/isolated.db")
    monkeypatch.setenv("NEWSLETTER_CACHE_DIR", str(tmp_path.parent / f"{tmp_path.name}-post-cache"))
    for name in ("NEWSLETTER_SECRET_KEY", "SENDGRID_API_KEY", "NEWSLETTER_SMTP_PASSWORD", "NEWSLETTER_DKIM_PRIVATE_KEY",
                 "NEWSLETTER_IMAP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


POSTGRES_ADMIN_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES_URL")


def _postgres_database():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards (None when no server is set up)."""
    import sqlalchemy as sa

    if not POSTGRES_ADMIN_URL:
        if os.environ.get("CI"):
            pytest.fail("NEWSLETTER_TEST_POSTGRES_URL is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip("no PostgreSQL server: set NEWSLETTER_TEST_POSTGRES_URL (.ci/run does)")
    admin = sa.create_engine(POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    name = f"nl_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    return admin, name, url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The URL of an empty database: each test using it runs against SQLite and PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/test.db"
        return
    import sqlalchemy as sa

    admin, name, url = _postgres_database()
    yield url
    for attempt in range(5):
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            break
        except sa.exc.DBAPIError:
            # a server process (autovacuum) still in the database and not ours to end: try again shortly
            time.sleep(0.2 * (attempt + 1))
    admin.dispose()


@pytest.fixture
def env(db_url, tmp_path):
    """The sample newsletter on a database of its own, with its outbox under tmp_path."""
    from newsletter.store import open_store

    config = load_config(ROOT / "newsletter.toml")
    config = dataclasses.replace(config, database_url=db_url,
                                 delivery=dataclasses.replace(config.delivery, outbox=tmp_path / "outbox",
                                                              retry_delay=0.0))
    store = open_store(db_url)
    yield SimpleNamespace(config=config, store=store, posts=read_posts(config.site, FIXED_NOW).posts,
                          now=FIXED_NOW, tmp=tmp_path)
    store.engine.dispose()


def dead_owner() -> str:
    """A lease owner of this host and pid namespace whose process no longer runs (no pid is that high)."""
    from newsletter.ledger import lease_owner

    return lease_owner().replace(f":{os.getpid()}|", ":999999999|", 1)
