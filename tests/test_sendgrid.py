"""The SendGrid provider against a local server answering as SendGrid does; every request body is validated
against SendGrid's own OpenAPI description of Mail Send (tests/data/sendgrid)."""

from __future__ import annotations

import dataclasses
import html
import io
import time

import pytest

from newsletter import ledger
from newsletter.config import SendgridConfig
from newsletter.deliver.base import StopSend
from newsletter.deliver.run import ProviderUnavailable, Sender
from newsletter.deliver.sendgrid import SendgridProvider
from newsletter.plan import plan_or_resume
from newsletter.subscribers import import_csv
from newsletter.tokens import Tokens

from .sendgrid_server import Fault, SendgridServer
from .smtp_server import free_port

KEY = "SG.test-key"


def configure(env, api_host: str, batch_size: int = 1000, timeout: float = 5.0, max_attempts: int = 4,
              requests_in_flight: int = 1):
    """One request at a time unless asked: the scripts of faults these tests queue are in request order, which
    requests in flight at once would make a race (tests/test_sendgrid_concurrent.py covers those)."""
    return dataclasses.replace(env.config, delivery=dataclasses.replace(
        env.config.delivery, provider="sendgrid", max_attempts=max_attempts,
        sendgrid=SendgridConfig(api_host=api_host, timeout=timeout, batch_size=batch_size,
                                requests_in_flight=requests_in_flight)))


def send(env, config, key: str = KEY, **options):
    newsletter = config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
    waits = []
    sender = Sender(env.store, config, newsletter, SendgridProvider(config.delivery.sendgrid, api_key=key),
                    sleep=waits.append)
    report = sender.run(record, env.now, **options)
    report.waits = waits
    return report


def people(env, count: int, name: str = "") -> list[str]:
    addresses = [f"reader{i:04d}@example.org" for i in range(count)]
    import_csv(env.store, env.config, io.StringIO(
        "email,name,newsletters\n" + "".join(f"{a},{name},weekly\n" for a in addresses)), "t.csv", env.now)
    return addresses


def rows(env, issue_id):
    return {r["email"]: (r["status"], r["error"]) for r in ledger.open_deliveries(env.store, issue_id)}


def test_a_send_is_schema_valid_personalised_and_recorded(env):
    addresses = people(env, 3, name="Zoë <O'Hara> & Co")
    with SendgridServer(api_key=KEY) as server:
        report = send(env, configure(env, server.url))
    assert report.counts == {"sent": 3}
    assert server.violations == [] and server.requests == 1
    assert sorted(server.emails()) == addresses
    first = server.accepted[0]
    assert first["to"] == [{"email": addresses[0], "name": "Zoë <O'Hara> & Co"}]
    assert first["custom_args"]["issue_id"] == str(report.issue_id)
    assert first["categories"] == ["weekly"]
    assert first["from"] == {"email": "news@harbourlight.example.org", "name": "Harbourlight"}
    unsubscribe = first["headers"]["List-Unsubscribe"].strip("<>")
    claims = Tokens(env.store.secret()).verify("unsubscribe", unsubscribe.rsplit("/", 1)[1])
    assert claims.newsletter == "weekly"
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    substitutions = first["substitutions"]
    assert substitutions["%nl_html_email%"] == addresses[0]
    assert substitutions["%nl_html_unsubscribe_url%"] == html.escape(unsubscribe)
    html_part = first["content"][1]["value"]
    assert "%nl_html_unsubscribe_url%" in html_part and "XNLFIELD" not in html_part
    with env.store.engine.connect() as conn:
        import sqlalchemy as sa

        ids = conn.execute(sa.text("SELECT DISTINCT message_id FROM deliveries")).scalars().all()
    assert len(ids) == 1 and len(ids[0]) == 22


def test_batches_hold_at_most_the_configured_number_of_personalizations(env):
    people(env, 25)
    with SendgridServer(api_key=KEY) as server:
        report = send(env, configure(env, server.url, batch_size=10))
    assert report.counts == {"sent": 25}
    assert server.requests == 3 and server.violations == []


def test_429_and_5xx_are_retried_honouring_the_reset_header(env):
    addresses = people(env, 5)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("status", 429, "too many requests", {"X-RateLimit-Reset": str(int(time.time()) + 30)}),
                     Fault("status", 503, "unavailable", {"Retry-After": "7"}),
                     Fault("status", 500, "internal error"))
        report = send(env, configure(env, server.url))
    assert report.counts == {"sent": 5}
    assert sorted(server.emails()) == addresses
    assert server.requests == 4
    reset_wait, retry_after = report.waits
    assert 28 <= reset_wait <= 30 and retry_after == 7.0


def test_retries_are_bounded_and_leave_the_batch_pending(env):
    people(env, 2)
    with SendgridServer(api_key=KEY) as server:
        server.queue(*[Fault("status", 500, "down")] * 10)
        with pytest.raises(ProviderUnavailable, match=r"sendgrid: SendGrid answered 500: down; the rest stays "
                                                      r"pending, run send again later"):
            send(env, configure(env, server.url, max_attempts=3))
    assert server.requests == 3
    assert ledger.list_issues(env.store)[0]["counts"] == {"pending": 2}


def test_a_400_naming_one_recipient_fails_them_and_sends_the_rest(env):
    addresses = people(env, 4)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("reject_recipient", email=addresses[2], message="Does not contain a valid address."))
        report = send(env, configure(env, server.url))
    assert report.counts == {"sent": 3, "failed": 1}
    assert rows(env, report.issue_id) == {addresses[2]: ("failed", "SendGrid 400: Does not contain a valid address.")}
    assert sorted(server.emails()) == [a for i, a in enumerate(addresses) if i != 2]


def test_a_413_splits_the_batch(env):
    people(env, 8)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("status", 413, "too large"), Fault("status", 413, "too large"))
        report = send(env, configure(env, server.url))
    assert report.counts == {"sent": 8}
    assert server.requests == 5 and len(server.accepted) == 8


@pytest.mark.parametrize("status", [401, 403, 400])
def test_auth_and_request_errors_stop_the_send_and_fail_nobody(env, status):
    people(env, 3)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("status", status, "access forbidden"))
        with pytest.raises(StopSend, match=rf"SendGrid refused the request \({status}\): access forbidden"):
            send(env, configure(env, server.url))
    assert ledger.list_issues(env.store)[0]["counts"] == {"pending": 3}
    with env.store.engine.connect() as conn:
        import sqlalchemy as sa

        assert conn.execute(sa.text("SELECT max(attempts) FROM deliveries")).scalar_one() == 0


def test_a_wrong_api_key_stops_with_sendgrids_words(env):
    people(env, 2)
    with SendgridServer(api_key=KEY) as server, pytest.raises(StopSend, match=r"\(401\): The provided authorization"):
        send(env, configure(env, server.url), key="SG.wrong")
    assert ledger.list_issues(env.store)[0]["counts"] == {"pending": 2}


def test_a_lost_answer_or_a_timeout_is_unknown_and_not_resent(env):
    addresses = people(env, 6)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("lose_answer"), Fault("timeout", seconds=2.0))
        config = configure(env, server.url, batch_size=2, timeout=0.5)
        report = send(env, config)
        assert report.counts == {"unknown": 4, "sent": 2}
        assert report.exit_code == 3
        again = send(env, config)
        assert again.counts == {"unknown": 4, "sent": 2}
    assert server.requests == 3
    assert sorted(server.emails()) == addresses
    unknown = rows(env, report.issue_id)
    assert unknown[addresses[0]][0] == "unknown"
    assert unknown[addresses[0]][1].startswith("the request to SendGrid went out but no answer came back")


def test_an_unreachable_api_leaves_everything_pending(env):
    people(env, 2)
    with pytest.raises(ProviderUnavailable, match=r"SendGrid at http://127.0.0.1:\d+ could not be reached"):
        send(env, configure(env, f"http://127.0.0.1:{free_port()}", max_attempts=2))
    assert ledger.list_issues(env.store)[0]["counts"] == {"pending": 2}


def test_the_api_key_is_required():
    with pytest.raises(StopSend, match="needs an API key in the environment variable SENDGRID_API_KEY"):
        SendgridProvider(SendgridConfig())
