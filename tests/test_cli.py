"""The command line: exact output and exit codes, help for every command, and a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import cli

from .conftest import FIXTURES, ROOT

NOW = "2026-01-05T07:00:00+00:00"


@pytest.fixture
def run(monkeypatch):
    monkeypatch.chdir(ROOT)

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_command_has_help(run):
    names = [" ".join(path) for path, _ in all_commands(cli)]
    assert names == ["admin", "admin hash-password", "archive", "bounces", "check", "events", "posts", "preview", "run", "schedule", "schedule at",
                     "schedule cancel", "schedule pause", "schedule resume", "send", "serve", "status", "subscribers",
                     "subscribers add", "subscribers export", "subscribers import", "subscribers list",
                     "subscribers remove", "subscribers show"]
    for path, command in all_commands(cli):
        result = run(*path, "--help")
        assert result.exit_code == 0
        assert result.output.startswith(f"Usage: cli {' '.join(path)} [OPTIONS]")
        assert command.help


def test_posts_json_lists_the_fields_newest_first(run):
    result = run("--now", NOW, "posts", "--json", "--category", "science", "--since", "2026-01-01")
    assert result.exit_code == 0
    posts = json.loads(result.stdout)
    assert [p["title"] for p in posts] == ["Measuring sea level by hand", "Why the sea glows in January"]
    assert posts[1] == {
        "path": "_posts/2026-01-02-why-the-sea-glows-in-january.md",
        "date": "2026-01-02T07:45:00+00:00",
        "title": "Why the sea glows in January",
        "categories": ["Science"],
        "tags": ["biology"],
        "url": "/science/2026/01/02/why-the-sea-glows-in-january/",
        "link": "https://harbourlight.example.org/science/2026/01/02/why-the-sea-glows-in-january/",
        "excerpt": "The blue light in the surf at night comes from tiny plankton that flash when the water is "
                   "disturbed.",
        "image": "https://harbourlight.example.org/assets/images/4b525fc7a9098015d955968c92947e80.jpg",
        "author": "Tobias Wren",
    }
    assert result.stderr == ""


def test_posts_with_only_a_source_needs_no_config(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("--now", NOW, "posts", "--source", str(FIXTURES / "jekyll" / "site"), "--json")
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)) == 34


def test_bad_posts_warn_and_strict_fails(run):
    source = str(FIXTURES / "broken-site")
    relaxed = run("--now", NOW, "posts", "--source", source, "--json")
    assert relaxed.exit_code == 0
    assert [p["title"] for p in json.loads(relaxed.stdout)] == ["The one valid post"]
    assert relaxed.stderr.count("warning: ") == 6
    assert ("warning: tests/fixtures/broken-site/_posts/2025-03-03-invalid-date.md:3: invalid date 'next tuesday' "
            "in front matter; write it like 2025-07-22T12:00:26\n") in relaxed.stderr
    strict = run("--strict", "--now", NOW, "posts", "--source", source, "--json")
    assert strict.exit_code == 1
    assert strict.stderr.endswith("error: 6 warning(s) and --strict was given\n")


def test_preview_writes_every_newsletter_and_reports_them(run, tmp_path):
    result = run("--now", NOW, "preview", "--out", str(tmp_path))
    assert result.exit_code == 0
    assert result.stderr == (
        "lab: issue 1, 6 post(s), sections: Technology (3), Science (3); subject: Harbourlight Lab Notes: "
        "5 January 2026\n"
        f"lab: wrote {tmp_path}/lab.html\n"
        "weekly: issue 1, 10 post(s), sections: Culture (2), Science (3), Technology (3), Travel (2); subject: "
        "Harbourlight Weekly: Measuring sea level by hand and 9 more\n"
        f"weekly: wrote {tmp_path}/weekly.html\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.html", "weekly.html"]


def test_preview_formats_and_categories(run, tmp_path):
    text = run("--now", NOW, "preview", "lab", "--categories", "Science", "--format", "text", "--out", "-")
    assert text.exit_code == 0
    assert text.stdout.startswith("Harbourlight Lab Notes\nIssue 1, 5 January 2026\n\n\n== Top story ==\n")
    assert "== Technology ==" not in text.stdout
    eml = run("--now", NOW, "preview", "lab", "--as", "ed@example.org", "--format", "eml",
              "--out", str(tmp_path / "x.eml"))
    assert eml.exit_code == 0
    raw = (tmp_path / "x.eml").read_bytes()
    assert b"\r\nTo: Sample Reader <ed@example.org>\r\n" in raw


def test_an_empty_issue_is_said_so(run, tmp_path):
    result = run("--now", "2027-01-01T00:00:00Z", "preview", "weekly", "--out", str(tmp_path))
    assert result.exit_code == 0
    assert "weekly: nothing new in the last 7d; the issue would be skipped\n" in result.stderr


def test_errors_have_messages_and_exit_codes(run, tmp_path):
    unknown = run("--now", NOW, "preview", "daily")
    assert unknown.exit_code == 2
    assert unknown.stderr == ("error: newsletter.toml has no newsletter 'daily' under [newsletters] "
                              "(known: lab, weekly)\n")
    bad_now = run("--now", "yesterday", "check")
    assert bad_now.exit_code == 2
    assert ("Invalid value for --now: 'yesterday' is not an ISO 8601 date or time, like 2026-01-05 or "
            "2026-01-05T07:00:00+00:00") in bad_now.stderr
    (tmp_path / "bad.toml").write_text('[site]\nsource = "nowhere"\ntimezone = "Nowhere/City"\n')
    bad_config = run("--config", str(tmp_path / "bad.toml"), "check")
    assert bad_config.exit_code == 2
    assert bad_config.stderr == (
        "error: the configuration cannot be used:\n"
        f"  {tmp_path}/bad.toml: site.source: {tmp_path}/nowhere is not a folder of posts or a Jekyll site\n"
        f"  {tmp_path}/bad.toml: site.timezone: 'Nowhere/City' is not an IANA time zone name, like Europe/Paris "
        "or UTC\n")


def test_check_summarises(run):
    result = run("--now", NOW, "check")
    assert result.exit_code == 0
    assert result.stdout == (f"newsletter.toml: 2 newsletter(s), 14 post(s) in {ROOT / 'site'}, 0 warning(s)\n"
                             "weekly: 0 8 * * mon in Europe/London, next fire 2026-01-05T08:00:00+00:00 "
                             "(2026-01-05T08:00:00+00:00)\n"
                             "lab: no schedule (sent by hand or one-off)\n"
                             'DKIM: not configured; set [delivery.dkim] domain = "harbourlight.example.org", selector '
                             "and key_file to sign what the outbox and SMTP send\n"
                             'harbourlight.example.org. TXT "v=spf1 mx ~all"  (SPF: list every server that sends as '
                             "harbourlight.example.org, in one record; change ~all to -all once nothing else does)\n"
                             '_dmarc.harbourlight.example.org. TXT "v=DMARC1; p=none; '
                             'rua=mailto:dmarc-reports@harbourlight.example.org; adkim=r; aspf=r"  (DMARC: start at '
                             "p=none, read the reports, then move to p=quarantine and p=reject)\n")


def test_python_dash_m_runs_the_same_command_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "newsletter", "--now", NOW, "posts", "--json"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 14
    version = subprocess.run([sys.executable, "-m", "newsletter", "--version"], cwd=ROOT, capture_output=True,
                             text=True, env=env, timeout=60)
    assert version.stdout == "newsletter, version 0.1.0\n"

