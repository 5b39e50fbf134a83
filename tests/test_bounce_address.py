"""The wiring of what providers report back into sending: SMTP messages carry their delivery's own signed
bounce address, and send warns after an issue with too many complaints."""

from __future__ import annotations

import dataclasses

from click.testing import CliRunner

from newsletter import events as ev
from newsletter import ledger
from newsletter.cli import cli
from newsletter.deliver import make_provider
from newsletter.deliver.run import Sender
from newsletter.plan import plan_or_resume
from newsletter.verp import BounceAddresses

from .conftest import ROOT
from .smtp_server import SmtpServer
from .test_events import FIXED_NOW_PLUS, sent_issue
from .test_smtp import people, smtp_env


def test_each_smtp_message_goes_with_its_deliverys_own_bounce_address(env):
    addresses = people(env, 5)
    with SmtpServer() as server:
        config = smtp_env(env, server.port)
        config = dataclasses.replace(config, delivery=dataclasses.replace(config.delivery, smtp=dataclasses.replace(
            config.delivery.smtp, bounce_address="bounces@news.example.org")))
        newsletter = config.newsletter("weekly")
        record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
        report = Sender(env.store, config, newsletter, make_provider(config, "smtp", env.store)).run(record, env.now)
    assert dict(report.counts) == {"sent": 5}
    verp = BounceAddresses("bounces@news.example.org", env.store.secret())
    ids = {row["email"]: row["delivery"] for row in _deliveries(env, record.id)}
    senders = {rcpt: mail_from for mail_from, rcpt, _ in server.sink.envelopes}
    assert sorted(senders) == addresses
    for address, mail_from in senders.items():
        assert mail_from == verp.for_delivery(ids[address])
        assert mail_from.startswith(f"bounces+{ids[address]}.") and mail_from.endswith("@news.example.org")
        assert verp.delivery_of(mail_from) == ids[address]


def _deliveries(env, issue_id):
    import sqlalchemy as sa

    from newsletter.store import deliveries, subscribers

    with env.store.engine.connect() as conn:
        rows = conn.execute(sa.select(subscribers.c.email, deliveries.c.id).join(
            subscribers, subscribers.c.id == deliveries.c.subscriber_id).where(deliveries.c.issue_id == issue_id))
        return [{"email": e, "delivery": d} for e, d in rows]


def test_send_warns_before_sending_when_the_last_issue_drew_complaints(env):
    addresses = [f"r{i:02d}@example.org" for i in range(50)]
    _issue, ids = sent_issue(env, addresses)
    ev.record_events(env.store, [ev.Event("c", "sendgrid", ids["r00@example.org"], "spamreport", FIXED_NOW_PLUS(0))],
                     env.now)
    toml = env.tmp / "newsletter.toml"
    toml.write_text((ROOT / "newsletter.toml").read_text().replace('source = "site"', f'source = "{ROOT / "site"}"')
                    .replace("[delivery]\n", f'[delivery]\noutbox = "{env.tmp / "outbox"}"\n'))
    database = {"NEWSLETTER_DATABASE_URL": env.config.database_url}
    result = CliRunner().invoke(cli, ["--config", str(toml), "--now", "2026-01-12T07:00:00+00:00", "send", "weekly",
                                      "--dry-run"], env=database)
    assert "reported it as spam" not in result.output  # a dry run sends nothing, and says nothing of it
    result = CliRunner().invoke(cli, ["--config", str(toml), "--now", "2026-01-12T07:00:00+00:00", "--strict", "send",
                                      "weekly"], env=database)
    assert "warning: weekly: 1 of 50 recipients of issue" in result.stderr
    assert "reported it as spam (2.00%, above 0.1%)" in result.stderr
    assert result.exit_code == 1  # --strict counts it
    assert ledger.list_issues(env.store)[0]["period"] == "2026-01-12"
