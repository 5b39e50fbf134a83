"""The SMTP provider against a real SMTP server on loopback (aiosmtpd): connections reused, per-recipient
answers classified, and a connection lost after the message is unknown, never resent."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import io

import pytest

from newsletter import ledger
from newsletter.config import SmtpConfig
from newsletter.deliver.run import Sender
from newsletter.deliver.smtp import SmtpProvider
from newsletter.plan import plan_or_resume
from newsletter.subscribers import import_csv

from .smtp_server import SmtpServer, free_port


def smtp_env(env, port: int, connections: int = 2):
    config = dataclasses.replace(env.config, delivery=dataclasses.replace(
        env.config.delivery, provider="smtp", max_attempts=3,
        smtp=SmtpConfig(host="127.0.0.1", port=port, security="none", connections=connections, timeout=5)))
    return config


def send(env, config, **options):
    newsletter = config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
    provider = SmtpProvider(config.delivery.smtp, config.delivery.batch_size)
    return Sender(env.store, config, newsletter, provider, sleep=lambda s: None).run(record, env.now, **options)


def people(env, count: int) -> list[str]:
    addresses = [f"reader{i:03d}@example.org" for i in range(count)]
    import_csv(env.store, env.config, io.StringIO("email,newsletters\n" + "".join(f"{a},weekly\n" for a in addresses)),
               "t.csv", env.now)
    return addresses


def test_every_subscriber_gets_one_message_over_reused_connections(env):
    addresses = people(env, 40)
    with SmtpServer() as server:
        report = send(env, smtp_env(env, server.port, connections=2))
    assert report.counts == {"sent": 40}
    assert server.sink.count() == {a: 1 for a in addresses}
    assert server.sink.sessions == 2
    address, raw = server.sink.received[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == address
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]


def test_5xx_for_a_recipient_fails_them_4xx_is_retried_and_lost_answers_are_unknown(env):
    addresses = people(env, 6)
    with SmtpServer() as server:
        server.sink.faults[addresses[0]] = ["550 5.1.1 mailbox unavailable"]
        server.sink.faults[addresses[1]] = ["451 4.3.0 try again later"]
        server.sink.faults[addresses[2]] = ["drop-rcpt"]
        server.sink.faults[addresses[3]] = ["drop-after-data"]
        server.sink.faults[addresses[4]] = ["452 full", "452 full", "452 full"]
        report = send(env, smtp_env(env, server.port))
    assert report.counts == {"sent": 3, "failed": 2, "unknown": 1}
    rows = {r["email"]: (r["status"], r["error"]) for r in ledger.open_deliveries(env.store, report.issue_id)}
    assert rows == {
        addresses[0]: ("failed", "RCPT TO: 550 5.1.1 mailbox unavailable"),
        addresses[3]: ("unknown", f"connection to 127.0.0.1:{server.port} lost after the message was sent, "
                                  "before the server answered: Connection unexpectedly closed"),
        addresses[4]: ("failed", "gave up after 3 attempts: RCPT TO: 452 full"),
    }
    assert server.sink.count() == {addresses[1]: 1, addresses[2]: 1, addresses[3]: 1, addresses[5]: 1}


def test_an_unreachable_server_leaves_everything_pending(env):
    people(env, 3)
    from newsletter.deliver.run import ProviderUnavailable

    with pytest.raises(ProviderUnavailable, match=r"smtp: cannot connect to the SMTP server 127.0.0.1:\d+"):
        send(env, smtp_env(env, free_port()))
    issue = ledger.list_issues(env.store)[0]
    assert issue["counts"] == {"pending": 3}


def test_a_refused_sender_stops_the_send_without_failing_anyone(env):
    people(env, 4)

    class RefusesSender:
        async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
            return "553 5.7.1 sender not allowed"

    from newsletter.deliver.base import StopSend

    from .smtp_server import SmtpServer as Server

    server = Server()
    server.controller.handler = RefusesSender()
    with server, pytest.raises(StopSend, match="refused the sender: MAIL FROM: 553 5.7.1 sender not allowed"):
        send(env, smtp_env(env, server.port))
    assert ledger.list_issues(env.store)[0]["counts"] == {"pending": 4}


@pytest.fixture(scope="module")
def authority():
    import trustme

    return trustme.CA()


def tls_env(env, port: int, security: str, ca_file, username: str | None = "sender"):
    config = smtp_env(env, port)
    smtp = dataclasses.replace(config.delivery.smtp, security=security, ca_file=ca_file, username=username)
    return dataclasses.replace(config, delivery=dataclasses.replace(config.delivery, smtp=smtp))


def accept_sender(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    accepted = (auth_data.login, auth_data.password) == (b"sender", b"s3cret")
    return AuthResult(success=accepted, handled=False)  # handled=False: the server itself answers 535


def send_with(env, config, password: str):
    newsletter = config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
    provider = SmtpProvider(config.delivery.smtp, config.delivery.batch_size, password=password)
    return Sender(env.store, config, newsletter, provider, sleep=lambda s: None).run(record, env.now)


def test_starttls_with_login_verifies_the_server_against_the_configured_authority(env, authority, tmp_path):
    import ssl

    addresses = people(env, 3)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with SmtpServer(tls_context=server_context, require_starttls=True, authenticator=accept_sender,
                    auth_require_tls=True) as server:
        report = send_with(env, tls_env(env, server.port, "starttls", tmp_path / "ca.pem"), "s3cret")
    assert report.counts == {"sent": 3}
    assert server.sink.count() == {a: 1 for a in addresses}


def test_a_wrong_password_or_an_untrusted_certificate_stops_the_send(env, authority, tmp_path):
    import ssl

    from newsletter.deliver.base import StopSend

    people(env, 2)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with SmtpServer(tls_context=server_context, require_starttls=True, authenticator=accept_sender,
                    auth_require_tls=True) as server:
        with pytest.raises(StopSend, match=r"refused the login: 535 5.7.8 Authentication credentials invalid"):
            send_with(env, tls_env(env, server.port, "starttls", tmp_path / "ca.pem"), "wrong")
        with pytest.raises(StopSend, match=r"TLS with the SMTP server 127.0.0.1:\d+ failed: CERTIFICATE_VERIFY_FAILED"):
            send_with(env, tls_env(env, server.port, "starttls", None), "s3cret")
    assert ledger.list_issues(env.store)[0]["counts"] == {"pending": 2}


def test_implicit_tls(env, authority, tmp_path):
    import ssl

    addresses = people(env, 2)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with SmtpServer(ssl_context=server_context) as server:
        report = send_with(env, tls_env(env, server.port, "ssl", tmp_path / "ca.pem", username=None), "")
    assert report.counts == {"sent": 2}
    assert server.sink.count() == {a: 1 for a in addresses}


def delivery_rows(env, issue_id: int) -> dict[str, tuple[str, int]]:
    import sqlalchemy as sa

    from newsletter.store import deliveries, subscribers

    with env.store.engine.connect() as conn:
        rows = conn.execute(sa.select(subscribers.c.email, deliveries.c.status, deliveries.c.attempts)
                            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                            .where(deliveries.c.issue_id == issue_id)).all()
    return {email: (status, attempts) for email, status, attempts in rows}


def test_an_internationalised_domain_goes_out_as_idna_and_the_rest_of_the_batch_goes_on(env):
    addresses = people(env, 2)
    import_csv(env.store, env.config, io.StringIO("email,name,newsletters\nuser@bücher.de,\"Zoë, Leser\",weekly\n"),
               "t.csv", env.now)
    with SmtpServer() as server:
        report = send(env, smtp_env(env, server.port))
    assert report.counts == {"sent": 3}
    assert sorted(rcpt for _, rcpt, _ in server.sink.envelopes) == sorted(addresses + ["user@xn--bcher-kva.de"])
    raw = dict(server.sink.received)["user@xn--bcher-kva.de"]
    assert b'\r\nTo: =?utf-8?q?Zo=C3=AB=2C?= Leser <user@xn--bcher-kva.de>\r\n' in raw
    assert email.message_from_bytes(raw, policy=email.policy.default)["To"].addresses[0].display_name == "Zoë, Leser"


def small_batch(env, *recipients):
    from newsletter.deliver.base import Batch, Envelope
    from newsletter.render import Digest, IssueInfo
    from newsletter.select import Selection

    issue = IssueInfo(1, env.now, "2026-01-05", "https://x.example.org/archive/")
    digest = Digest("weekly", issue, Selection((), (), env.now, env.now), "Hello XNLFIELDnameXNLEND",
                    "<p>Hi</p>", "Hi\n", ())
    return Batch(1, "weekly-2026-01-05", "weekly", "Weekly", digest,
                 tuple(Envelope(i + 1, r) for i, r in enumerate(recipients)),
                 "Harbourlight <news@harbourlight.example.org>", None, env.now)


def send_batch(env, port: int, batch):
    provider = SmtpProvider(SmtpConfig(host="127.0.0.1", port=port, security="none", connections=1, timeout=5))
    with provider:
        return provider.send(batch)


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("this name cannot be shown")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_exception_while_one_message_is_made_fails_that_delivery_alone(env):
    from newsletter.render import Recipient

    batch = small_batch(env, Recipient("ann@example.org", "Ann"), Recipient("bob@example.org", Unprintable()),
                        Recipient("no-at-sign", "Nobody"), Recipient("cy@example.org", "Cy"))
    with SmtpServer() as server:
        outcomes = send_batch(env, server.port, batch)
    assert [(o.status, o.detail) for o in outcomes] == [
        ("sent", None),
        ("failed", "the message could not be built: RuntimeError: this name cannot be shown"),
        ("failed", "'no-at-sign' is not an address that can be sent to: An email address must have an @-sign."),
        ("sent", None),
    ]
    assert server.sink.count() == {"ann@example.org": 1, "cy@example.org": 1}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("offered", [True, False])
def test_a_non_ascii_local_part_goes_with_smtputf8_only_when_the_server_offers_it(env, offered):
    from newsletter.render import Recipient

    batch = small_batch(env, Recipient("jörg@bücher.de", "Jörg"), Recipient("ann@example.org", "Ann"))
    with SmtpServer(enable_SMTPUTF8=offered) as server:
        outcomes = send_batch(env, server.port, batch)
    if offered:
        assert [o.status for o in outcomes] == ["sent", "sent"]
        assert server.sink.envelopes == [
            ("news@harbourlight.example.org", "jörg@xn--bcher-kva.de", ["SMTPUTF8", "BODY=8BITMIME"]),
            ("news@harbourlight.example.org", "ann@example.org", [])]
        raw = server.sink.received[0][1]
        assert "\r\nTo: Jörg <jörg@xn--bcher-kva.de>\r\n".encode() in raw
        assert "\r\nSubject: Hello Jörg\r\n".encode() not in raw  # the Subject stays an encoded word: 7-bit
    else:
        assert [(o.status, o.detail) for o in outcomes] == [
            ("failed", f"the address 'jörg@xn--bcher-kva.de' needs SMTPUTF8 (the local part 'jörg' is not "
                       f"ASCII) and the SMTP server 127.0.0.1:{server.port} does not offer it; send through a "
                       "server that does, or use an ASCII address"),
            ("sent", None)]
        assert server.sink.count() == {"ann@example.org": 1}


def test_the_answer_to_the_end_of_data_5xx_fails_4xx_is_retried(env):
    addresses = people(env, 4)
    with SmtpServer() as server:
        server.sink.faults[addresses[0]] = ["data 554 5.6.0 content rejected"]
        server.sink.faults[addresses[1]] = ["data 451 4.3.0 queue full, try later"]
        report = send(env, smtp_env(env, server.port))
    assert report.counts == {"sent": 3, "failed": 1}
    rows = {r["email"]: (r["status"], r["error"]) for r in ledger.open_deliveries(env.store, report.issue_id)}
    assert rows == {addresses[0]: ("failed", "end of DATA: 554 5.6.0 content rejected")}
    assert delivery_rows(env, report.issue_id)[addresses[1]] == ("sent", 2)
    assert server.sink.count() == {a: 1 for a in addresses[1:]}


def auth_server(**options) -> SmtpServer:
    from .smtp_server import SmtpSink

    sink = SmtpSink()
    return SmtpServer(sink, authenticator=sink.authenticate, auth_require_tls=False, **options)


def login_env(env, port: int, connections: int):
    config = smtp_env(env, port, connections=connections)
    smtp = dataclasses.replace(config.delivery.smtp, username="sender")
    return dataclasses.replace(config, delivery=dataclasses.replace(config.delivery, smtp=smtp))


@pytest.mark.parametrize("fault", ["login refused", "connection cut"])
def test_a_new_connection_failing_mid_batch_leaves_the_batch_to_the_open_one(env, fault):
    addresses = people(env, 4)
    with auth_server() as server:
        server.sink.session_faults[2] = "refuse-login" if fault == "login refused" else "drop"
        for address in addresses:  # whichever message takes the first connection waits for a second to be tried
            server.sink.faults[address] = ["hold-for-session 2"]
        report = send_with(env, login_env(env, server.port, connections=2), "s3cret")
    assert report.counts == {"sent": 4}
    assert {row[0] for row in delivery_rows(env, report.issue_id).values()} == {"sent"}
    assert {attempts for _, attempts in delivery_rows(env, report.issue_id).values()} == {1}
    assert sorted(server.sink.held) == [f"{a} until session 2" for a in addresses]
    assert server.sink.count() == {a: 1 for a in addresses}
    assert server.sink.sessions == 2
    assert {(n, ok) for n, ok in server.sink.logins} == ({(1, True), (2, False)} if fault == "login refused"
                                                         else {(1, True)})


@pytest.mark.parametrize("fault", ["login refused", "connection cut"])
def test_when_no_connection_is_left_mid_batch_the_rest_is_retried_never_failed_or_unknown(env, fault):
    addresses = people(env, 4)
    with auth_server() as server:
        server.sink.faults[addresses[1]] = ["drop-rcpt"]  # the only connection closes (421) mid-batch
        server.sink.session_faults[2] = "refuse-login" if fault == "login refused" else "drop"
        report = send_with(env, login_env(env, server.port, connections=1), "s3cret")
    assert report.counts == {"sent": 4}
    assert delivery_rows(env, report.issue_id) == {addresses[0]: ("sent", 1), addresses[1]: ("sent", 2),
                                                   addresses[2]: ("sent", 2), addresses[3]: ("sent", 2)}
    assert server.sink.count() == {a: 1 for a in addresses}
    assert server.sink.sessions == 3
    assert {(n, ok) for n, ok in server.sink.logins} == ({(1, True), (2, False), (3, True)}
                                                         if fault == "login refused" else {(1, True), (3, True)})


def test_a_pooled_connection_the_server_closed_while_idle_is_replaced_without_a_retry(env):
    addresses = people(env, 3)
    with SmtpServer() as server:
        server.sink.faults[addresses[0]] = ["close-after-data"]
        report = send(env, smtp_env(env, server.port, connections=1))
    assert report.counts == {"sent": 3}
    assert delivery_rows(env, report.issue_id) == {a: ("sent", 1) for a in addresses}
    assert server.sink.count() == {a: 1 for a in addresses}
    assert server.sink.sessions == 2
