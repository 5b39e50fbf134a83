"""Internationalised addresses through SendGrid: domains in IDNA form, as its schema's `format: email` needs; a
local part that is not ASCII fails that one recipient and the rest of the request goes."""

from __future__ import annotations

import io

from newsletter import ledger
from newsletter.deliver.run import Sender
from newsletter.deliver.sendgrid import SendgridProvider
from newsletter.plan import plan_or_resume
from newsletter.store import subscribers, subscriptions
from newsletter.subscribers import import_csv

from .sendgrid_server import SendgridServer
from .test_sendgrid import KEY, configure


def test_idn_domains_go_as_punycode_and_a_non_ascii_local_part_fails_alone(env):
    import_csv(env.store, env.config, io.StringIO(
        "email,newsletters\nleser@bücher.de,weekly\nplain@example.org,weekly\n"), "t.csv", env.now)
    # The importer refuses non-ASCII local parts; one stored by other means must still fail alone.
    with env.store.engine.begin() as conn:
        subscriber = conn.execute(subscribers.insert().values(
            email="josé@example.org", email_key="josé@example.org", name="", status="active", source="t",
            created_at=env.now, updated_at=env.now).returning(subscribers.c.id)).scalar_one()
        conn.execute(subscriptions.insert().values(subscriber_id=subscriber, newsletter="weekly", categories="",
                                                   created_at=env.now))
    with SendgridServer(api_key=KEY) as server:
        config = configure(env, server.url)
        newsletter = config.newsletter("weekly")
        record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
        report = Sender(env.store, config, newsletter, SendgridProvider(config.delivery.sendgrid, api_key=KEY)).run(
            record, env.now)
    assert server.violations == []
    assert sorted(server.emails()) == ["leser@xn--bcher-kva.de", "plain@example.org"]
    assert dict(report.counts) == {"sent": 2, "failed": 1}
    [failed] = ledger.open_deliveries(env.store, record.id)
    assert failed["email"] == "josé@example.org" and failed["status"] == "failed"
    assert "local part that is not ASCII, which SendGrid's Mail Send does not take" in failed["error"]
