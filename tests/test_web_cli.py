"""The command line of the web side: `status` and `subscribers show` report unsubscribes and sign-ups awaiting
confirmation with when; `archive` writes the static archive and a re-run writes nothing; `serve` has help."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.config import load_config
from newsletter.preferences import unsubscribe
from newsletter.signup import record
from newsletter.store import open_store
from newsletter.subscribers import find

from .conftest import FIXED_NOW, ROOT

NOW = "2026-01-05T07:00:00+00:00"


@pytest.fixture
def run(tmp_path, monkeypatch):
    for name in ("newsletter.toml", "subscribers"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    text = (tmp_path / "newsletter.toml").read_text()
    (tmp_path / "newsletter.toml").write_text(text.replace('source = "site"', f'source = "{ROOT / "site"}"')
                                              + f'\n[render]\ntemplates = "{ROOT / "templates"}"\n'
                                              + '\n[web]\nbase_url = "https://news.example.org/n"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL")

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_status_and_show_report_unsubscribes_and_pending_signups(run, tmp_path):
    run("subscribers", "import", "subscribers/sample.csv")
    config = load_config(tmp_path / "newsletter.toml")
    store = open_store(config.database_url)
    ana = find(store, "ana.souza@example.org")
    unsubscribe(store, ana.id, "lab", "one-click", FIXED_NOW)
    record(store, config, "new@example.org", "", {"weekly": ()}, "192.0.2.7", FIXED_NOW)
    record(store, config, "ana.souza@example.org", "", {"lab": ()}, "192.0.2.8", FIXED_NOW)
    store.engine.dispose()
    assert run("--now", NOW, "status").stdout.splitlines() == [
        "sign-ups awaiting confirmation: 2",
        "  new@example.org\tsigned up 2026-01-05T07:00:00+00:00 from 192.0.2.7\tweekly",
        "  ana.souza@example.org\tsigned up 2026-01-05T07:00:00+00:00 from 192.0.2.8\tlab",
        "unsubscribes on record: 1 (latest first)",
        "  ana.souza@example.org\tleft lab 2026-01-05T07:00:00+00:00 (one-click)",
    ]
    assert run("--now", "2026-01-12T07:00:01+00:00", "status").stdout.splitlines()[0] == (
        "sign-ups awaiting confirmation: 0")  # their links expired after 7 days
    shown = run("subscribers", "show", "ana.souza@example.org").stdout.splitlines()
    assert shown[-2:] == [
        "unsubscribed from lab: 2026-01-05T07:00:00+00:00 (one-click)",
        "signed up for lab: 2026-01-05T07:00:00+00:00 from 192.0.2.8, awaiting confirmation",
    ]
    data = json.loads(run("subscribers", "show", "ana.souza@example.org", "--json").stdout)
    assert data["newsletters"] == {"weekly": []}
    assert data["unsubscribes"] == [{"newsletter": "lab", "at": "2026-01-05T07:00:00+00:00", "how": "one-click",
                                     "rejoined_at": None}]
    assert data["signups"] == [{"newsletters": ["lab"], "at": "2026-01-05T07:00:00+00:00", "ip": "192.0.2.8",
                                "confirmed_at": None}]


def test_archive_writes_the_static_archive_and_a_rerun_writes_nothing(run, tmp_path):
    run("subscribers", "import", "subscribers/sample.csv")
    assert run("--now", NOW, "send", "weekly").exit_code == 0
    first = run("archive", "--out", "public", "weekly")
    assert first.exit_code == 0
    assert first.stdout.splitlines() == ["wrote public/web.css", "wrote public/weekly/index.html",
                                         "wrote public/weekly/feed.atom", "wrote public/weekly/2026-01-05/index.html"]
    again = run("archive", "--out", "public")
    assert (again.exit_code, again.stdout) == (0, "wrote public/lab/index.html\nwrote public/lab/feed.atom\n")
    assert again.stderr == "public: 2 file(s) written, 4 unchanged\n"
    feed = (tmp_path / "public" / "weekly" / "feed.atom").read_text()
    assert "<id>https://news.example.org/n/archive/weekly/2026-01-05/</id>" in feed
    assert 'href="../weekly/2026-01-05/index.html"' in feed


def test_archive_of_a_private_newsletter_is_refused_with_how_to_publish_it(run, tmp_path):
    toml = tmp_path / "newsletter.toml"
    toml.write_text(toml.read_text().replace("[newsletters.lab]\n", "[newsletters.lab]\narchive = false\n"))
    result = run("archive", "--out", "public", "lab")
    assert result.exit_code == 2
    assert result.stderr == ("error: newsletter.toml: newsletter 'lab' has archive = false (private); set archive = true "
                             "under [newsletters.lab] to publish it\n")
    assert run("archive", "--out", "public").exit_code == 0
    assert not (tmp_path / "public" / "lab").exists()


def test_bad_web_settings_are_all_reported_with_their_keys(run, tmp_path):
    toml = tmp_path / "newsletter.toml"
    toml.write_text(toml.read_text() + 'confirm_expiry = "soon"\nallowed_origins = ["https://blog.example/x"]\n'
                    'max_body = 10\nsignup_limit_ip = "many"\n')
    result = run("check")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "error: the configuration cannot be used:"
    assert sorted(line.split(": ", 2)[1] for line in lines[1:]) == [
        "web.allowed_origins", "web.confirm_expiry", "web.max_body", "web.signup_limit_ip"]
