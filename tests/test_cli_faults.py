"""Bad input at the command line, as a user meets it: a database that cannot be used, a configuration or an
argument out of range, a subscriber file with faults. Each gives one line naming what and where and what to
do, the exit status the README gives, and writes nothing; only a bug shows a traceback."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.store import open_store
from newsletter.subscribers import import_csv

from .conftest import FIXED_NOW, ROOT
from .smtp_server import free_port

NOW = "2026-01-05T07:00:00+00:00"


@pytest.fixture
def run(tmp_path, monkeypatch):
    """The sample newsletter copied into tmp_path, its database at tmp_path/newsletter.db."""
    shutil.copytree(ROOT / "subscribers", tmp_path / "subscribers")
    text = (ROOT / "newsletter.toml").read_text().replace('source = "site"', f'source = "{ROOT / "site"}"')
    (tmp_path / "newsletter.toml").write_text(text + f'\n[render]\ntemplates = "{ROOT / "templates"}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL")

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--now", NOW, *args], catch_exceptions=False)

    return invoke


def sample_database(path) -> bytes:
    """A database holding the sample subscribers, closed (no WAL left beside it); returns its bytes."""
    from newsletter.config import load_config

    store = open_store(f"sqlite:///{path}")
    import_csv(store, load_config(ROOT / "newsletter.toml"), io.StringIO((ROOT / "subscribers" / "sample.csv")
                                                                        .read_text()), "sample.csv", FIXED_NOW)
    store.engine.dispose()
    assert not path.with_name(path.name + "-wal").exists()
    return path.read_bytes()


# The database


def test_a_file_that_is_not_a_database(run, tmp_path):
    (tmp_path / "newsletter.db").write_text("name,email\n")
    for command in (("subscribers", "import", "subscribers/sample.csv"), ("send", "weekly"), ("status",)):
        result = run(*command)
        assert (result.exit_code, result.stdout) == (1, ""), command
        assert result.stderr == (f"error: cannot open the database sqlite:///{tmp_path}/newsletter.db: the file is "
                                 "not an SQLite database; set [database] url to the newsletter's database, or move "
                                 "this file away to start a new one\n"), command
    assert (tmp_path / "newsletter.db").read_text() == "name,email\n"


def test_a_damaged_database(run, tmp_path):
    database = tmp_path / "newsletter.db"
    data = sample_database(database)
    database.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))  # every page but the first overwritten
    damaged = database.read_bytes()
    for command in (("subscribers", "list"), ("subscribers", "add", "new@example.org", "--newsletter", "weekly"),
                    ("send", "weekly")):
        result = run(*command)
        assert (result.exit_code, result.stdout) == (1, ""), command
        assert result.stderr == (f"error: the database sqlite:///{database} is damaged (database disk image is "
                                 "malformed); restore it from a backup (the sqlite3 shell's .recover command may "
                                 "save its rows)\n"), command
    assert database.read_bytes() == damaged


def test_a_read_only_database_is_read_and_never_half_written(run, tmp_path, monkeypatch):
    """Opened read-only (the tests run as any user, root included, so the file's mode cannot be relied on)."""
    database = tmp_path / "newsletter.db"
    sample_database(database)
    url = f"sqlite:///file:{database}?mode=ro&uri=true"
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    listed = run("subscribers", "list")
    assert listed.exit_code == 0 and len(listed.stdout.splitlines()) == 12
    write(tmp_path, "new.csv", "email,newsletters\nnew@example.org,weekly\n")
    for command in (("subscribers", "import", "new.csv"), ("subscribers", "add", "new@example.org", "--newsletter", "weekly"), ("send", "weekly")):
        result = run(*command)
        assert (result.exit_code, result.stdout) == (1, ""), command
        assert result.stderr == (f"error: the database {url} is read-only (attempt to write a readonly database); "
                                 "make the file and its folder writable by this user, or copy it somewhere "
                                 "writable and set NEWSLETTER_DATABASE_URL to the copy\n"), command
    assert run("subscribers", "list").stdout == listed.stdout
    assert not (tmp_path / "outbox").exists()


def test_an_unreachable_postgresql_server(run, monkeypatch):
    port = free_port()
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"postgresql://bob:PG%40SECRETpw4@127.0.0.1:{port}/news")
    for command in (("subscribers", "list"), ("send", "weekly")):
        result = run(*command)
        assert (result.exit_code, result.stdout) == (1, ""), command
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: cannot connect to the database postgresql://bob:***@127.0.0.1:{port}/news: "
                               f'connection failed: connection to server at "127.0.0.1", port {port} failed: '
                               "Connection refused"), line
        assert line.endswith("; check that the server is running and that NEWSLETTER_DATABASE_URL names it rightly")
        assert "SECRET" not in result.output


@pytest.mark.parametrize(("url", "shown", "reason"), [
    ("postgresql://bob:PG@SECRETpw4@db.example/news", "postgresql://bob:***@db.example/news",
     "the user name or password holds an '@'; write it as %40 in the URL"),
    ("postgresql://bob:pw@db.example:notaport/news", "postgresql://bob:***@db.example:notaport/news",
     "its port is not a number"),
    ("postgresql://bob:pw@db.example:99999/news", "postgresql://bob:***@db.example:99999/news",
     "the port 99999 is not between 1 and 65535"),
    ("postgresql://db.example/news?password=SECRET&sslmode=require",
     "postgresql://db.example/news?password=***&sslmode=require", None),
])
def test_a_bad_database_url_names_where_it_was_set_and_hides_the_password(run, monkeypatch, tmp_path, url, shown,
                                                                         reason):
    if reason is None:  # a well-formed URL: the server is not there
        url = url.replace("db.example", f"127.0.0.1:{free_port()}")
        shown = shown.replace("db.example", url.split("//")[1].split("/")[0])
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    result = run("subscribers", "list")
    assert result.exit_code == 1
    assert "SECRET" not in result.stderr and len(result.stderr.splitlines()) == 1
    if reason:
        assert result.stderr == f"error: NEWSLETTER_DATABASE_URL: cannot use {shown}: {reason}\n"
        monkeypatch.delenv("NEWSLETTER_DATABASE_URL")
        with open(tmp_path / "newsletter.toml", "a") as config:
            config.write(f'\n[database]\nurl = "{url}"\n')
        from_file = run("subscribers", "list")
        assert (from_file.exit_code, from_file.stderr) == (1, f"error: [database] url: cannot use {shown}: "
                                                              f"{reason}\n")
    else:
        assert result.stderr.startswith(f"error: cannot connect to the database {shown}: ")


# Configuration and arguments


def test_a_window_too_long_for_any_calendar_is_a_configuration_error(run, tmp_path):
    config = tmp_path / "newsletter.toml"
    config.write_text(config.read_text().replace('window = "7d"', 'window = "9999999w"', 1))
    result = run("check")
    assert result.exit_code == 2
    assert result.stderr == ("error: the configuration cannot be used:\n"
                             "  newsletter.toml: newsletters.weekly.window: '9999999w' is longer than 36500d (a "
                             "century); write a shorter duration\n")


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "1899-12-31"])
def test_a_moment_out_of_range_is_a_usage_error(run, moment):
    result = CliRunner().invoke(cli, ["--now", moment, "preview", "weekly", "--out", "-"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (f"Error: Invalid value for --now: {moment!r} is out of range: give a "
                                              "moment between 1900-01-01 and 9998-12-31")
    since = run("posts", "--since", moment)
    assert since.exit_code == 2
    assert since.stderr.splitlines()[-1] == (f"Error: Invalid value for --since: {moment!r} is out of range: give "
                                             "a moment between 1900-01-01 and 9998-12-31")


def test_export_to_a_folder_that_does_not_exist(run, tmp_path):
    run("subscribers", "import", "subscribers/sample.csv")
    result = run("subscribers", "export", "--out", "no/such/dir/x.csv")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "error: cannot write no/such/dir/x.csv: the folder no/such/dir does not exist; create " \
                            "it first\n"
    assert not (tmp_path / "no").exists()
    done = run("subscribers", "export", "--out", "x.csv")
    assert done.exit_code == 0 and sorted(p.name for p in tmp_path.glob("x.csv*")) == ["x.csv"]


def test_unknown_subscribers_and_newsletters_exit_2(run):
    run("subscribers", "import", "subscribers/sample.csv")
    removed = run("subscribers", "remove", "nobody@example.org")
    assert (removed.exit_code, removed.stderr) == (2, "error: no subscriber 'nobody@example.org'; `newsletter "
                                                      "subscribers list` lists them\n")
    added = run("subscribers", "add", "new@example.org", "--newsletter", "nosuch")
    assert (added.exit_code, added.stderr) == (2, "error: newsletter.toml has no newsletter 'nosuch' under "
                                                  "[newsletters] (known: lab, weekly)\n")
    imported = run("subscribers", "import", "subscribers/sample.csv", "--newsletter", "nosuch")
    assert (imported.exit_code, imported.stderr) == (2, "error: newsletter.toml has no newsletter 'nosuch' under "
                                                        "[newsletters] (known: lab, weekly)\n")
    assert "new@example.org" not in run("subscribers", "list").stdout


def test_a_secret_key_that_is_not_text_stops_before_anything_is_sent(run, tmp_path, monkeypatch):
    run("subscribers", "import", "subscribers/sample.csv")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "key\udcff")  # what Python makes of bytes that are not UTF-8
    result = run("send", "weekly")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "error: the secret key (NEWSLETTER_SECRET_KEY) is not UTF-8 text (character 4); set it to letters and "
        "digits, e.g. the output of `python3 -c 'import secrets; print(secrets.token_hex(32))'`")
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    assert run("status").stdout == "1\tweekly\t2026-01-05\t#1\tunfinished\tpending 8\n"
    assert not (tmp_path / "outbox").exists()


# Subscriber files


def write(tmp_path, name: str, data: bytes | str):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return name


@pytest.mark.parametrize(("content", "errors"), [
    ("email,newsletters,categories\nok@example.org,weekly,Science\nx@example.org,weekly,Astrology\n",
     ["invalid: {f}:3: category 'Astrology' is not a category of any post on the site (categories: Culture, "
      "Science, Technology, Travel); newsletter 'weekly' carries every category, so only those can be chosen"]),
    ("email,name,newsletters,email\nx@example.org,X,weekly,y@example.org\n",
     ["invalid: {f}:1: column 'email' is in the header twice (columns 1 and 4); keep one"]),
    ("email,name,newsletters\nx@example.org,Nul\x00Name,weekly\ny@example.org,Esc\x1b[2J,weekly\n",
     ["invalid: {f}:2: the name field contains a control character (U+0000); remove it",
      "invalid: {f}:3: the name field contains a control character (U+001B); remove it"]),
])
def test_invalid_subscriber_files_import_nothing(run, tmp_path, content, errors):
    name = write(tmp_path, "list.csv", content)
    result = run("subscribers", "import", name)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [e.format(f=name) for e in errors] + [
        f"error: {len(errors)} invalid row(s); nothing was imported (--skip-invalid imports the rest)"]
    assert run("subscribers", "list").stdout == ""


@pytest.mark.parametrize(("data", "message"), [
    ("email,name\nx@example.org,Zoë\n".encode("utf-16"),
     "error: list.csv is UTF-16 text; save it as UTF-8 (in Excel: CSV UTF-8)"),
    ("email,name\nx@example.org,X\ny@example.org,Zoë\n".encode("latin-1"),
     "error: list.csv:3: not UTF-8 text (byte 0xeb); save the file as UTF-8 (in Excel: CSV UTF-8)"),
])
def test_a_subscriber_file_in_another_encoding(run, tmp_path, data, message):
    name = write(tmp_path, "list.csv", data)
    result = run("subscribers", "import", name, "--newsletter", "weekly")
    assert (result.exit_code, result.stderr) == (1, message + "\n")


def test_a_utf8_file_with_a_byte_order_mark_imports(run, tmp_path):
    name = write(tmp_path, "list.csv", "\ufeffemail,name\r\nx@example.org,Zoë\r\n".encode())
    result = run("subscribers", "import", name, "--newsletter", "weekly")
    assert result.exit_code == 0
    assert run("subscribers", "list").stdout == "x@example.org\tZoë\tactive\tweekly: all\n"


def test_excel_safe_export(run, tmp_path):
    name = write(tmp_path, "list.csv", "email,name,newsletters\na@example.org,=1+2,weekly\nb@example.org,Bo,weekly\n")
    assert run("subscribers", "import", name).exit_code == 0
    assert run("subscribers", "export").stdout == ("email,name,newsletters,categories,status,signed_up_at,signup_ip\n"
                                                   "a@example.org,=1+2,weekly,,active,,\nb@example.org,Bo,weekly,,active,,\n")
    safe = run("subscribers", "export", "--excel-safe", "--out", "safe.csv")
    assert safe.exit_code == 0
    assert (tmp_path / "safe.csv").read_text() == ("email,name,newsletters,categories,status,signed_up_at,signup_ip\n"
                                                   "a@example.org,'=1+2,weekly,,active,,\nb@example.org,Bo,weekly,,active,,\n")


# Bugs, and output nobody reads


def test_a_bug_shows_its_traceback_and_asks_for_a_report(run, monkeypatch):
    import newsletter.subscribers

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(newsletter.subscribers, "iter_subscribers", broken)
    result = run("subscribers", "list")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-2:] == ["KeyError: 'a bug'", "error: this is a bug in newsletter 0.1.0, not a problem with your "
                          "input; please report it with the traceback above and the command you ran"]


def test_output_cut_short_by_its_reader_is_not_an_error_report(tmp_path):
    """`newsletter subscribers export | head -1`: the pipe closes while the export still writes."""
    from newsletter.config import load_config

    url = f"sqlite:///{tmp_path}/big.db"
    store = open_store(url)
    rows = "".join(f"reader{i:05d}@example.org,Reader {i},weekly\n" for i in range(5000))
    import_csv(store, load_config(ROOT / "newsletter.toml"), io.StringIO("email,name,newsletters\n" + rows), "t.csv",
               FIXED_NOW)
    store.engine.dispose()
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "subscribers", "export"], cwd=ROOT,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NEWSLETTER_DATABASE_URL": url,
                                    "NEWSLETTER_CACHE_DIR": str(tmp_path / "post-cache")},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"email,name,newsletters,categories,status,signed_up_at,signup_ip\n"
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1
    assert stderr == ""


@pytest.mark.parametrize(("key", "position"), [("SG.key\r", 7), ("SG.k€y", 5), ("SG key", 3)])
def test_an_api_key_that_cannot_be_sent_stops_before_anything_is_planned(run, monkeypatch, key, position):
    """Such a key only failed in the HTTP header, after a batch was claimed, leaving it unknown."""
    run("subscribers", "import", "subscribers/sample.csv")
    monkeypatch.setenv("SENDGRID_API_KEY", key)
    result = run("send", "weekly", "--provider", "sendgrid")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: SENDGRID_API_KEY holds a space, line break or non-ASCII character (at position {position}), "
        "which no API key has; set it to the key exactly as SendGrid shows it")
    assert run("status").stdout == ""  # stopped before the issue was even planned
