"""The store: created and migrated on open, older databases upgraded without losing rows, one shared secret."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from newsletter.store import MIGRATIONS, make_engine, metadata, newest_migration, open_store


def test_a_new_database_gets_every_table_at_the_newest_version(db_url):
    store = open_store(db_url)
    inspector = sa.inspect(store.engine)
    # every table store.py defines, and no other: the migrations and the Core tables agree
    assert sorted(inspector.get_table_names()) == sorted(["alembic_version", *metadata.tables])
    assert {"deliveries", "issues", "subscribers", "subscriptions", "unsubscribes", "signups",
            "delivery_events", "schedule_fires", "schedule_lease"} <= set(metadata.tables)
    with store.engine.connect() as conn:
        newest = sorted(p.name[:4] for p in MIGRATIONS.joinpath("versions").glob("0*.py"))[-1]
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == newest
    store.engine.dispose()


def test_opening_an_older_database_upgrades_it_and_keeps_its_rows(db_url):
    engine = make_engine(db_url)
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        alembic.attributes["connection"] = conn
        command.upgrade(alembic, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO subscribers (email, email_key, name, status, source, created_at, "
                             "updated_at) VALUES ('Old@example.org', 'old@example.org', 'Old Timer', 'active', "
                             "'import', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"))
        conn.execute(sa.text("INSERT INTO subscriptions (subscriber_id, newsletter, categories, created_at) "
                             "VALUES (1, 'weekly', 'Science', '2024-01-01 00:00:00')"))
        assert "deliveries" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    store = open_store(db_url)
    with store.engine.connect() as conn:
        newest = sorted(p.name[:4] for p in MIGRATIONS.joinpath("versions").glob("0*.py"))[-1]
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == newest
        assert conn.execute(sa.text("SELECT email, name, status FROM subscribers")).all() == [
            ("Old@example.org", "Old Timer", "active")]
        assert conn.execute(sa.text("SELECT newsletter, categories FROM subscriptions")).all() == [
            ("weekly", "Science")]
        assert "deliveries" in sa.inspect(conn).get_table_names()
    store.engine.dispose()


def test_the_newest_migration_read_from_the_file_names_is_alembics_head():
    alembic = AlembicConfig()
    alembic.set_main_option("script_location", str(MIGRATIONS))
    assert newest_migration() == ScriptDirectory.from_config(alembic).get_current_head()


def test_opening_a_database_at_the_newest_version_does_not_load_alembic(db_url):
    open_store(db_url).engine.dispose()  # created and migrated
    check = ("import sys; from newsletter.store import open_store; open_store(sys.argv[1]).engine.dispose(); "
             "print('alembic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check, db_url], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_secret_is_made_once_and_shared_by_every_opener(db_url, monkeypatch):
    first = open_store(db_url)
    second = open_store(db_url)
    secret = first.secret()
    assert len(secret) == 64 and secret == second.secret() == first.secret()
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "from-the-environment")
    assert first.secret() == "from-the-environment"
    first.engine.dispose()
    second.engine.dispose()


def test_a_bad_database_url_is_a_clear_error(tmp_path):
    import pytest

    from newsletter.store import StoreError

    with pytest.raises(StoreError, match=r"\[database\] url: cannot use an invalid URL"):
        open_store("not a url")
    with pytest.raises(StoreError, match=r"cannot open the database sqlite:///.*/missing/dir/x.db"):
        (tmp_path / "missing").write_text("a file where a folder should be")
        open_store(f"sqlite:///{tmp_path}/missing/dir/x.db")


def test_the_printed_url_hides_the_whole_password():
    from newsletter.store import engine_safe

    assert engine_safe("postgresql://bob:PG@SECRETpw4@host/db") == "postgresql://bob:***@host/db"
    assert engine_safe("postgresql://bob:pa/ss:w@rd@host:5432/db") == "postgresql://bob:***@host:5432/db"
    assert engine_safe("postgresql://bob:s3cret@host/db") == "postgresql://bob:***@host/db"
    assert engine_safe("postgresql://bob@host/db?password=s3cret&sslmode=require") == \
        "postgresql://bob@host/db?password=***&sslmode=require"
    assert engine_safe("sqlite:////srv/news@letter/x.db") == "sqlite:////srv/news@letter/x.db"
    assert engine_safe("not a url") == "an invalid URL"


def test_a_uri_filename_makes_no_folder(tmp_path, monkeypatch):
    """`sqlite:///file:...?uri=true` names a URI, not a folder to create (it used to make ./file:)."""
    monkeypatch.chdir(tmp_path)
    store = open_store(f"sqlite:///file:{tmp_path}/x.db?uri=true")
    store.engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]


def test_database_faults_are_store_errors_and_constraint_errors_are_not(tmp_path):
    import pytest

    from newsletter.store import StoreError

    (tmp_path / "text.db").write_text("not a database")
    with pytest.raises(StoreError, match=r"^cannot open the database sqlite:///.*/text.db: the file is not an SQLite "
                                         r"database; set \[database\] url to") as caught:
        open_store(f"sqlite:///{tmp_path}/text.db")
    import sqlite3

    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)  # the driver's own error, chained
    store = open_store(f"sqlite:///{tmp_path}/good.db")
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO settings (key, value) VALUES ('k', 'v'), ('k', 'w')"))
    store.engine.dispose()


def test_an_up_to_date_database_opens_without_alembic_and_an_older_one_is_still_upgraded(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/s.db"
    open_store(url).engine.dispose()
    check = ("import sys; from newsletter.store import open_store; open_store(sys.argv[1]); "
             "print('alembic' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", check, url], capture_output=True, text=True).stdout == "False\n"
    with make_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0006'"))
        conn.execute(sa.text("ALTER TABLE unsubscribes DROP COLUMN categories"))
    assert subprocess.run([sys.executable, "-c", check, url], capture_output=True, text=True).stdout == "True\n"
    assert "categories" in [c["name"] for c in sa.inspect(make_engine(url)).get_columns("unsubscribes")]
