"""Suppression holds everywhere: an address that bounced or complained is never sent to again, through the
outbox or SendGrid, for any newsletter, even by an issue planned before the report came; an unsubscribe event
ends that newsletter only; an import never brings them back without --resubscribe; export keeps their status."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta

import pytest

from newsletter import ledger
from newsletter.config import SendgridConfig
from newsletter.deliver import make_provider
from newsletter.deliver.run import Sender
from newsletter.deliver.sendgrid import SendgridProvider
from newsletter.events import Event, record_events
from newsletter.plan import plan_or_resume
from newsletter.subscribers import export_csv, find, import_csv

from .sendgrid_server import SendgridServer
from .test_events import sent_issue

PEOPLE = ["hard@example.org", "complains@example.org", "leaves@example.org", "stays@example.org"]
KEY = "SG.test-key"


def report_on_first_issue(env) -> None:
    """A first issue a week earlier went to everyone; providers then report on three of its deliveries."""
    _, ids = sent_issue(env, PEOPLE, now=env.now - timedelta(days=7))
    at = env.now - timedelta(days=6)
    record_events(env.store, [
        Event("e1", "sendgrid", ids["hard@example.org"], "bounce", at, "hard"),
        Event("e2", "sendgrid", ids["complains@example.org"], "spamreport", at),
        Event("e3", "sendgrid", ids["leaves@example.org"], "unsubscribe", at)], at)


def skipped(env, issue_id: int) -> dict[str, tuple[str, str]]:
    return {r["email"]: (r["status"], r["error"]) for r in ledger.open_deliveries(env.store, issue_id)}


EXPECTED_SKIPS = {"hard@example.org": ("skipped", "bounced after the issue was planned"),
                  "complains@example.org": ("skipped", "complained after the issue was planned"),
                  "leaves@example.org": ("skipped", "no longer subscribed to this newsletter")}


def sendgrid_config(env, url: str):
    return dataclasses.replace(env.config, delivery=dataclasses.replace(
        env.config.delivery, provider="sendgrid", sendgrid=SendgridConfig(api_host=url, timeout=5.0)))


@pytest.mark.parametrize("provider", ["outbox", "sendgrid"])
def test_an_issue_planned_before_the_reports_skips_them(env, provider):
    _, ids = sent_issue(env, PEOPLE, now=env.now - timedelta(days=7))
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)
    assert ledger.counts(env.store, record.id) == {"pending": 4}
    at = env.now - timedelta(hours=1)
    record_events(env.store, [Event("e1", "sendgrid", ids["hard@example.org"], "bounce", at, "hard"),
                              Event("e2", "sendgrid", ids["complains@example.org"], "spamreport", at),
                              Event("e3", "sendgrid", ids["leaves@example.org"], "group_unsubscribe", at)], at)
    if provider == "outbox":
        Sender(env.store, env.config, newsletter, make_provider(env.config)).run(record, env.now)
        received = sorted(p.name.split("-", 1)[1][:-4] for p in (env.tmp / "outbox" / "weekly-2026-01-05").iterdir())
    else:
        with SendgridServer(api_key=KEY) as server:
            config = sendgrid_config(env, server.url)
            Sender(env.store, config, newsletter, SendgridProvider(config.delivery.sendgrid, api_key=KEY),
                   sleep=lambda s: None).run(record, env.now)
        received = server.emails()
    assert received == ["stays@example.org"]
    assert skipped(env, record.id) == EXPECTED_SKIPS


def test_the_next_issues_of_every_newsletter_leave_them_out(env):
    report_on_first_issue(env)
    for newsletter, expected in (("weekly", ["stays@example.org"]), ("lab", ["leaves@example.org", "stays@example.org"])):
        record, _ = plan_or_resume(env.store, env.config, env.config.newsletter(newsletter), env.posts, env.now)
        Sender(env.store, env.config, env.config.newsletter(newsletter), make_provider(env.config)).run(record, env.now)
        folder = env.tmp / "outbox" / f"{newsletter}-2026-01-05"
        assert sorted(p.name.split("-", 1)[1][:-4] for p in folder.iterdir()) == expected


def test_an_import_brings_nobody_back_without_resubscribe_and_export_keeps_their_status(env):
    report_on_first_issue(env)
    again = "email,newsletters\n" + "".join(f"{a},weekly;lab\n" for a in PEOPLE)
    report = import_csv(env.store, env.config, io.StringIO(again), "again.csv", env.now)
    # and the reader who left weekly through SendGrid's unsubscribe event stays out of weekly
    assert report.kept_unsubscribed == ["hard@example.org", "complains@example.org", "leaves@example.org (weekly)"]
    assert (find(env.store, "hard@example.org").status, find(env.store, "complains@example.org").status) == (
        "bounced", "complained")
    out = io.StringIO()
    export_csv(env.store, out)
    assert out.getvalue().splitlines()[1:3] == ["hard@example.org,,lab;weekly,,bounced,,",
                                                "complains@example.org,,lab;weekly,,complained,,"]
    import_csv(env.store, env.config, io.StringIO(again), "again.csv", env.now, resubscribe=True)
    assert find(env.store, "hard@example.org").status == "active"
