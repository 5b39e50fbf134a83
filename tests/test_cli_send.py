"""The command line of subscribers, send and status: exact output and exit codes."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from newsletter.cli import cli

from .conftest import FIXTURES, ROOT, dead_owner

NOW = "2026-01-05T07:00:00+00:00"


@pytest.fixture
def run(tmp_path, monkeypatch):
    """The sample newsletter copied into tmp_path, with its database there; returns an invoker."""
    for name in ("newsletter.toml", "subscribers"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    text = (tmp_path / "newsletter.toml").read_text()
    (tmp_path / "newsletter.toml").write_text(text.replace('source = "site"', f'source = "{ROOT / "site"}"')
                                              + f'\n[render]\ntemplates = "{ROOT / "templates"}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL")

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_import_reports_bad_rows_and_imports_nothing(run):
    result = run("subscribers", "import", str(FIXTURES / "subscribers" / "bad-rows.csv"))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (f"invalid: {FIXTURES}/subscribers/bad-rows.csv:3: 'not-an-address' is not a valid address: "
                        "An email address must have an @-sign.")
    assert len(lines) == 10
    assert lines[-1] == "error: 9 invalid row(s); nothing was imported (--skip-invalid imports the rest)"
    assert run("subscribers", "list").stdout == ""


def test_import_list_show_export(run, tmp_path):
    result = run("subscribers", "import", "subscribers/sample.csv")
    assert (result.exit_code, result.stdout) == (0, "subscribers/sample.csv: 12 added, 0 updated, 0 unchanged, "
                                                    "0 kept unsubscribed, 0 invalid row(s) skipped\n")
    listed = run("subscribers", "list", "--newsletter", "lab", "--status", "active").stdout.splitlines()
    assert listed == ["ana.souza@example.org\tAna Souza\tactive\tlab: all; weekly: all",
                      "chloe.martin@example.org\tChloé Martin\tactive\tlab: Science",
                      "dev.patel@example.org\tDev Patel\tactive\tlab: Technology; weekly: all",
                      "grace.lee@example.org\tGrace Lee\tactive\tlab: all",
                      "hana.kobayashi@example.org\tHana Kobayashi\tactive\tlab: Technology; weekly: Technology",
                      "lena.fischer@example.org\tLena Fischer\tactive\tlab: all; weekly: all"]
    shown = json.loads(run("subscribers", "show", "BEN.OKAFOR@example.org", "--json").stdout)
    assert {k: shown[k] for k in ("email", "name", "status", "newsletters")} == {
        "email": "ben.okafor@example.org", "name": "Ben Okafor", "status": "active",
        "newsletters": {"weekly": ["Culture", "Travel"]}}
    exported = run("subscribers", "export", "--out", str(tmp_path / "out.csv"))
    assert exported.stderr == f"exported 12 subscriber(s) to {tmp_path / 'out.csv'}\n"
    assert (tmp_path / "out.csv").read_text().count("\n") == 13
    assert run("subscribers", "show", "nobody@example.org").exit_code == 2


def test_add_and_remove(run):
    assert run("subscribers", "add", "new@example.org", "--name", "New", "--newsletter", "lab", "--category",
               "Science").stdout == "added: new@example.org\n"
    assert run("--now", NOW, "subscribers", "remove", "NEW@example.org").stdout == "unsubscribed: new@example.org\n"
    shown = run("--now", NOW, "subscribers", "show", "new@example.org").stdout.splitlines()
    assert shown[2] == "status: unsubscribed"
    assert [line for line in shown if line.startswith("unsubscribed from")] == [
        "unsubscribed from lab: 2026-01-05T07:00:00+00:00 (operator)"]
    again = run("subscribers", "add", "new@example.org", "--newsletter", "lab")
    assert (again.exit_code, again.stderr) == (1, "error: new@example.org had left; pass --resubscribe to make "
                                                  "them active again\n")


def test_send_then_resend_then_status(run, tmp_path):
    run("subscribers", "import", "subscribers/sample.csv")
    dry = run("--now", NOW, "send", "weekly", "--dry-run")
    assert dry.stdout == ("weekly: dry run for 2026-01-05: issue 1, 10 post(s), 5 variant(s); would send 8, would "
                          "skip 0 (no posts in their categories); nothing sent or recorded\n")
    first = run("--now", NOW, "send", "weekly")
    assert first.exit_code == 0
    assert "│ sent   │ 8          │" in first.stdout
    assert first.stderr.startswith("weekly: planned issue 1 (id 1) for 2026-01-05: 10 post(s), 8 delivery(ies), "
                                   "through outbox; database sqlite:///")
    assert first.stderr.endswith(f"messages are in {tmp_path}/outbox/weekly-2026-01-05\n")
    again = run("--now", "2026-01-05T21:00:00+00:00", "send", "weekly")
    assert again.exit_code == 0
    assert "weekly: resuming issue 1 (id 1)" in again.stderr
    listing = json.loads(run("status", "--json").stdout)
    assert listing == [{"id": 1, "newsletter": "weekly", "period": "2026-01-05", "status": "done", "counts": {"sent": 8}}]
    one = json.loads(run("status", "1", "--json").stdout)
    assert one == {"id": 1, "newsletter": "weekly", "period": "2026-01-05", "status": "done", "counts": {"sent": 8},
                   "events": {}, "rates": {"sent": 8, "complained": 0, "hard_bounced": 0, "complaint_rate": 0.0,
                                           "hard_bounce_rate": 0.0, "now_bounced": 0, "now_complained": 0},
                   "deliveries": []}
    assert run("status").stdout == "1\tweekly\t2026-01-05\t#1\tdone\tsent 8\n"
    assert run("status", "9").exit_code == 2
    empty = run("--now", "2026-01-06T07:00:00+00:00", "send", "weekly")
    assert empty.stdout == ("weekly: issue for 2026-01-06 skipped: nothing in the last 7d that an earlier issue "
                            "did not carry\n")


def test_unknown_deliveries_exit_3_and_say_how_to_resolve_them(run):
    import os

    from newsletter import ledger
    from newsletter.config import load_config
    from newsletter.plan import plan_or_resume
    from newsletter.site import read_posts
    from newsletter.store import open_store

    run("subscribers", "import", "subscribers/sample.csv")
    config = load_config(__import__("pathlib").Path("newsletter.toml"))
    store = open_store(config.database_url)
    from .conftest import FIXED_NOW

    record, _ = plan_or_resume(store, config, config.newsletter("weekly"), read_posts(config.site, FIXED_NOW).posts,
                               FIXED_NOW)
    ledger.acquire_lease(store, record.id, dead_owner())
    ledger.claim(store, record.id, "weekly", 2, "lost")
    store.engine.dispose()
    result = run("--now", NOW, "send", "weekly")
    assert result.exit_code == 3
    assert ("warning: 2 delivery(ies) were in flight when an earlier send stopped; they are now unknown and were not "
            "sent again\n") in result.stderr
    assert ("2 delivery(ies) are unknown: the provider may or may not have sent them. See `newsletter status 1`; "
            "once you know they did not arrive, send them with `newsletter send weekly --now "
            "2026-01-05T07:00:00+00:00 --retry-unknown`.\n") in result.stderr
    status = run("status", "1").stdout.splitlines()
    assert status[0] == "issue 1: weekly 2026-01-05 #1 (done): sent 6, unknown 2"
    assert status[1] == ("unknown\tana.souza@example.org\tin flight when an earlier send stopped; the provider may or "
                         "may not have it")
    retried = run("--now", NOW, "send", "weekly", "--retry-unknown")
    assert retried.exit_code == 0
    assert run("status").stdout == "1\tweekly\t2026-01-05\t#1\tdone\tsent 8\n"
    assert os.path.exists("outbox/weekly-2026-01-05/0000001-ana.souza@example.org.eml")


def test_a_test_copy_and_the_provider_option(run, monkeypatch):
    run("subscribers", "import", "subscribers/sample.csv")
    copy = run("--now", NOW, "send", "lab", "--to", "Editor@Example.org")
    assert copy.stdout == "lab: test copy of 2026-01-05 (6 post(s)) sent to Editor@example.org through outbox\n"
    assert run("status").stdout == ""
    missing_key = run("--now", NOW, "send", "lab", "--provider", "sendgrid")
    assert (missing_key.exit_code, missing_key.stderr) == (
        1, "error: the sendgrid provider needs an API key in the environment variable SENDGRID_API_KEY\n")
    bad = run("--now", NOW, "send", "lab", "--to", "not-an-address")
    assert bad.exit_code == 2 and "Invalid value for --to" in bad.stderr


def test_preview_as_a_stored_subscriber_shows_their_copy_and_what_the_next_issue_carries(run, tmp_path):
    run("subscribers", "import", "subscribers/sample.csv")
    out = tmp_path / "ben.txt"
    result = run("--now", NOW, "preview", "weekly", "--as", "ben.okafor@example.org", "--format", "text",
                 "--out", str(out))
    assert result.exit_code == 0
    assert result.stderr.startswith("weekly: issue 1, 4 post(s), sections: Culture (2), Travel (2); subject: ")
    text = out.read_text()
    assert "Unsubscribe:\nhttps://harbourlight.example.org/unsubscribe/2.weekly." in text
    run("--now", "2026-01-02T07:00:00+00:00", "send", "weekly")
    after = run("--now", NOW, "preview", "weekly", "--out", str(tmp_path))
    assert after.stderr.startswith("weekly: issue 2, 6 post(s), sections: Culture (1), Science (2), "
                                   "Technology (1), Travel (2); subject: ")


def test_send_refuses_a_subject_it_cannot_render_before_planning_anything(run, tmp_path):
    run("subscribers", "import", "subscribers/sample.csv")
    config = tmp_path / "newsletter.toml"
    config.write_text(config.read_text().replace(
        "subject = \"{{ newsletter.title }}: {{ posts[0].title if posts else 'no new posts' }}{% if posts|length > 1 %}"
        " and {{ posts|length - 1 }} more{% endif %}\"",
        "subject = \"{{ newsletter.title \""))
    result = run("--now", NOW, "send", "weekly")
    assert result.exit_code == 2
    assert "newsletters.weekly.subject:1:" in result.stderr
    assert json.loads(run("status", "--json").stdout) == []


def test_strict_send_stops_on_a_pre_send_warning_before_anything_goes(run, tmp_path):
    run("subscribers", "import", "subscribers/sample.csv")
    config = tmp_path / "newsletter.toml"
    config.write_text(config.read_text().replace("[site]\n", "[site]\nurl = \"\"\n"))  # images without a host
    strict = run("--strict", "--now", NOW, "send", "weekly")
    assert strict.exit_code == 1
    warnings = [line for line in strict.stderr.splitlines() if line.startswith("warning: weekly: ")]
    assert warnings and all("image" in line for line in warnings)
    assert strict.stderr.splitlines()[-1] == ("error: weekly: {} warning(s) before sending and --strict was given; "
                                              "nothing was sent, the issue stays planned".format(len(warnings)))
    assert not (tmp_path / "outbox").exists()
    assert json.loads(run("status", "--json").stdout)[0]["counts"] == {"pending": 8}
    relaxed = run("--now", NOW, "send", "weekly")
    assert relaxed.exit_code == 0
    assert [line for line in relaxed.stderr.splitlines() if line.startswith("warning: weekly: ")] == warnings
    assert json.loads(run("status", "--json").stdout)[0]["counts"] == {"sent": 8}
