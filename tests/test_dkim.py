"""DKIM: what newsletter signs, dkimpy (an independent implementation) verifies against the published key, and
any change to a signed header or the body breaks the signature."""

from __future__ import annotations

import dataclasses
import re

import dkim as dkimpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.config import DkimConfig
from newsletter.deliver.base import Batch, Envelope
from newsletter.deliver.outbox import OutboxProvider
from newsletter.digest import compose, render_plan, sample_recipient
from newsletter.dkim import SIGNED_HEADERS, public_key_record, sign
from newsletter.errors import ConfigError
from newsletter.message import MessageTemplate
from newsletter.plan import plan_issue
from newsletter.render import Recipient

from .conftest import FIXED_NOW, FIXTURES
from .test_message import digest_of

KEY_FILE = FIXTURES / "dkim" / "test-only.pem"
CONFIG = DkimConfig("harbourlight.example.org", "nl2026", KEY_FILE)
RECORD_NAME = b"nl2026._domainkey.harbourlight.example.org."


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv("NEWSLETTER_DKIM_PRIVATE_KEY", raising=False)


def dns_stub(record: str):
    """What a resolver would answer for the selector's TXT record, and nothing else."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record.encode("ascii") if name == RECORD_NAME else None

    return lookup


def verifies(message: bytes, record: str | None = None) -> bool:
    return bool(dkimpy.verify(message, dnsfunc=dns_stub(record or public_key_record(CONFIG))))


@pytest.fixture
def weekly_message(sample_config, sample_posts) -> bytes:
    plan = plan_issue(sample_config, sample_config.newsletter("weekly"), sample_posts, FIXED_NOW)
    return compose(sample_config, render_plan(sample_config, plan), sample_recipient(sample_config), FIXED_NOW)


def header_value(message: bytes, name: str) -> bytes:
    match = re.search(rb"(?mi)^" + name.encode() + rb":(.*(?:\r\n[ \t].*)*)\r\n", message)
    assert match, name
    return match.group(1)


def test_a_signed_digest_verifies_against_the_published_key(weekly_message):
    signed = sign(weekly_message, CONFIG)
    assert signed.endswith(weekly_message)
    head = signed[: len(signed) - len(weekly_message)].decode("ascii")
    assert head.startswith("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n d=harbourlight.example.org; "
                           "s=nl2026; t=1767596400; h=From:From:To:To:\r\n Subject:Subject:")
    assert max(len(line) for line in head.split("\r\n")) <= 78
    assert verifies(signed)


def test_the_signature_covers_what_one_click_unsubscribe_and_dmarc_need():
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                 "List-Unsubscribe-Post"):
        assert name in SIGNED_HEADERS


@pytest.mark.parametrize("name", ["From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                                  "List-Unsubscribe-Post", "Reply-To", "Content-Type"])
def test_changing_any_signed_header_breaks_the_signature(weekly_message, name):
    signed = sign(weekly_message, CONFIG)
    value = header_value(signed, name)
    changed = signed.replace(name.encode() + b":" + value, name.encode() + b":" + value + b"x", 1)
    assert changed != signed
    assert not verifies(changed)


def test_changing_the_body_breaks_it_and_adding_a_signed_header_does_too(weekly_message):
    signed = sign(weekly_message, CONFIG)
    assert not verifies(signed.replace(b"tide readings", b"tide readinGs", 1))
    # a second List-Unsubscribe above the signed one: the verifier takes the bottom-most instance first
    forged = signed.replace(b"\r\nList-Unsubscribe:", b"\r\nList-Unsubscribe: <https://evil.example/>"
                                                      b"\r\nList-Unsubscribe:", 1)
    assert not verifies(forged)


def test_relaxed_canonicalisation_survives_what_relays_do(weekly_message):
    signed = sign(weekly_message, CONFIG)
    refolded = signed.replace(b"\r\nSubject: Harbourlight Weekly:", b"\r\nSubject: Harbourlight\r\n\tWeekly:", 1)
    spaced = refolded.replace(b"Harbourlight Weekly\r\n", b"Harbourlight   Weekly  \r\n", 1)
    assert spaced != signed and verifies(spaced)


def test_a_wrong_or_missing_public_key_fails(weekly_message, tmp_path):
    signed = sign(weekly_message, CONFIG)
    other = public_key_record(DkimConfig("harbourlight.example.org", "nl2026", FIXTURES / "dkim" / "other.pem"))
    assert not verifies(signed, other)
    assert not dkimpy.verify(signed, dnsfunc=lambda name, timeout=5: None)


def test_the_key_may_come_from_the_environment(weekly_message, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", KEY_FILE.read_text())
    from_environment = dataclasses.replace(CONFIG, key_file=None)
    assert verifies(sign(weekly_message, from_environment))
    assert public_key_record(from_environment) == public_key_record(CONFIG)


def test_a_bad_key_names_where_it_came_from_and_never_shows_it(weekly_message, monkeypatch, tmp_path):
    secret = "-----BEGIN PRIVATE KEY-----\nTOPSECRETbutbroken\n-----END PRIVATE KEY-----\n"
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", secret)
    with pytest.raises(ConfigError) as caught:
        sign(weekly_message, dataclasses.replace(CONFIG, key_file=None))
    assert "NEWSLETTER_DKIM_PRIVATE_KEY" in str(caught.value)
    assert "TOPSECRET" not in str(caught.value) and "TOPSECRET" not in repr(caught.value.__cause__)
    missing = tmp_path / "absent.pem"
    with pytest.raises(ConfigError, match="delivery.dkim.key_file: cannot be read"):
        sign(weekly_message, dataclasses.replace(CONFIG, key_file=missing))


def test_outbox_messages_are_signed_when_dkim_is_configured(sample_config, sample_posts, tmp_path):
    plan = plan_issue(sample_config, sample_config.newsletter("lab"), sample_posts, FIXED_NOW)
    digest = render_plan(sample_config, plan)
    envelopes = (Envelope(1, Recipient("ana@example.org", "Ana", "https://h.example.org/u/1", "https://h/p/1")),
                 Envelope(2, Recipient("ben@example.org", "Ben", "https://h.example.org/u/2", "https://h/p/2")))
    batch = Batch(1, "lab-2026-01-05", "lab", "Lab", digest, envelopes, sample_config.delivery.from_addr, None,
                  FIXED_NOW, CONFIG)
    OutboxProvider(tmp_path).send(batch)
    written = sorted((tmp_path / "lab-2026-01-05").iterdir())
    assert [p.name for p in written] == ["0000001-ana@example.org.eml", "0000002-ben@example.org.eml"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"DKIM-Signature: ") and verifies(data)
    unsigned = dataclasses.replace(batch, dkim=None)
    assert not unsigned.message_bytes(envelopes[0])[1].startswith(b"DKIM-Signature")


@settings(max_examples=40, deadline=None)
@given(subject=st.text(min_size=1, max_size=120), name=st.text(max_size=40),
       body=st.text(st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_any_subject_name_and_body_sign_and_verify(subject, name, body):
    template = MessageTemplate(digest_of(subject, "<p>" + body + "</p>", body), sender="A <a@harbourlight.example.org>",
                               reply_to=None, list_id=("T", "t"), date=FIXED_NOW)
    raw = template.render(Recipient("r@example.org", name, "https://h.example.org/u/t"), "<id.1@example.org>")
    assert verifies(sign(raw, CONFIG))



@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"b", b" ", b"\t", b"\r\n", b"  ", b"=20"]), max_size=60))
def test_body_canonicalisation_is_dkimpys_relaxed(pieces):
    from dkim.canonicalization import Relaxed

    from newsletter.dkim import _relaxed_body

    body = b"".join(pieces)
    assert _relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_a_send_through_the_outbox_signs_every_copy(env):
    """The send loop hands its batches the DKIM configuration: each .eml written verifies."""
    import io

    from newsletter.deliver import make_provider
    from newsletter.deliver.run import Sender
    from newsletter.plan import plan_or_resume
    from newsletter.subscribers import import_csv

    import_csv(env.store, env.config, io.StringIO("email,newsletters\na@example.org,weekly\nb@example.org,weekly\n"),
               "t.csv", env.now)
    config = dataclasses.replace(env.config, delivery=dataclasses.replace(env.config.delivery, dkim=CONFIG))
    newsletter = config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
    report = Sender(env.store, config, newsletter, make_provider(config)).run(record, env.now)
    assert dict(report.counts) == {"sent": 2}
    written = sorted((env.tmp / "outbox").rglob("*.eml"))
    assert len(written) == 2
    for path in written:
        message = path.read_bytes()
        assert message.startswith(b"DKIM-Signature: ") and verifies(message)


def published(records: dict[str, list[str]]):
    """A stand-in for DNS: the TXT strings each name publishes, nothing elsewhere."""
    return lambda name: records.get(name, [])


def test_check_dns_compares_what_is_published_with_what_should_be(sample_config):
    config = dataclasses.replace(sample_config, delivery=dataclasses.replace(sample_config.delivery, dkim=CONFIG))
    key = public_key_record(CONFIG)
    good = {"nl2026._domainkey.harbourlight.example.org": [key],
            "harbourlight.example.org": ["v=spf1 mx ~all", "google-site-verification=x"],
            "_dmarc.harbourlight.example.org": ["v=DMARC1; p=none"]}
    from newsletter.dkim import check_dns

    assert check_dns(config, published(good)) == [
        (True, "nl2026._domainkey.harbourlight.example.org: the published DKIM key is the signing key"),
        (True, "harbourlight.example.org: SPF record 'v=spf1 mx ~all'"),
        (True, "_dmarc.harbourlight.example.org: DMARC record 'v=DMARC1; p=none'")]
    wrong = {**good, "nl2026._domainkey.harbourlight.example.org": [key.replace("p=MII", "p=MIJ")],
             "harbourlight.example.org": ["v=spf1 mx ~all", "v=spf1 a -all"]}
    del wrong["_dmarc.harbourlight.example.org"]
    assert [ok for ok, _ in check_dns(config, published(wrong))] == [False, False, False]
    assert check_dns(config, published(wrong))[1][1] == (
        "harbourlight.example.org: 2 SPF records (only one may be published)")


def test_check_dns_warns_through_the_cli_and_strict_fails(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from newsletter import dkim as dkim_module
    from newsletter.cli import cli

    from .conftest import ROOT

    monkeypatch.setattr(dkim_module, "_txt_records", published({"harbourlight.example.org": ["v=spf1 mx ~all"]}))
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    result = CliRunner().invoke(cli, ["--config", str(ROOT / "newsletter.toml"), "--now", "2026-01-05T07:00:00+00:00",
                                      "--strict", "check", "--dns"])
    assert "dns: harbourlight.example.org: SPF record 'v=spf1 mx ~all'" in result.stdout
    assert "warning: dns: _dmarc.harbourlight.example.org: no DMARC record" in result.stderr
    assert result.exit_code == 1
