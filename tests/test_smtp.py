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
