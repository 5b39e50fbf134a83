"""What tells receivers a digest is a wanted list message: the bulk headers in every provider, the mailto:
unsubscribe target, the [delivery.dkim] and [web] unsubscribe_mailto keys, and the DNS records to publish."""

from __future__ import annotations

import email
import email.policy
import shutil

import pytest

from newsletter.config import load_config
from newsletter.deliver.base import Batch, Envelope
from newsletter.deliver.sendgrid import SendgridProvider
from newsletter.digest import render_plan
from newsletter.dkim import dns_advice, public_key_record
from newsletter.errors import ConfigError
from newsletter.plan import plan_issue
from newsletter.render import Recipient
from newsletter.site import read_posts

from .conftest import FIXED_NOW, FIXTURES, ROOT

KEY = FIXTURES / "dkim" / "test-only.pem"


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv("NEWSLETTER_DKIM_PRIVATE_KEY", raising=False)


def config_with(tmp_path, extra: str):
    """The sample newsletter.toml, moved next to a copy of the key, with `extra` appended."""
    shutil.copy(KEY, tmp_path / "dkim.pem")
    text = (ROOT / "newsletter.toml").read_text().replace('source = "site"', f'source = "{ROOT / "site"}"')
    path = tmp_path / "newsletter.toml"
    path.write_text(text + extra)
    return load_config(path)


def lab_batch(config, mailto: str | None = None) -> Batch:
    plan = plan_issue(config, config.newsletter("lab"), read_posts(config.site, FIXED_NOW).posts, FIXED_NOW)
    digest = render_plan(config, plan)
    recipient = Recipient("ana@example.org", "Ana", "https://h.example.org/u/1", "https://h.example.org/p/1")
    return Batch(7, "lab-2026-01-05", "lab", "Harbourlight Lab Notes", digest, (Envelope(11, recipient),),
                 config.delivery.from_addr, config.delivery.reply_to, FIXED_NOW, None, mailto)


def test_messages_carry_bulk_headers_and_the_mailto_target(sample_config):
    raw = lab_batch(sample_config, "unsubscribe@harbourlight.example.org").message_bytes(
        lab_batch(sample_config).envelopes[0])[1]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Precedence"] == "bulk"
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert msg["Feedback-ID"] == "1:lab:newsletter:harbourlight.example.org"
    assert msg["List-Unsubscribe"] == ("<https://h.example.org/u/1>, "
                                       "<mailto:unsubscribe@harbourlight.example.org?subject=unsubscribe%20lab>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain = lab_batch(sample_config).message_bytes(lab_batch(sample_config).envelopes[0])[1]
    assert b"List-Unsubscribe: <https://h.example.org/u/1>\r\n" in plain


def test_sendgrid_requests_carry_the_same_headers(sample_config):
    provider = SendgridProvider(sample_config.delivery.sendgrid, api_key="SG.test")
    body = provider.payload(lab_batch(sample_config, "unsubscribe@harbourlight.example.org"))
    assert body["headers"] == {"List-Id": "Harbourlight Lab Notes <lab.harbourlight.example.org>",
                               "Precedence": "bulk", "X-Auto-Response-Suppress": "OOF, AutoReply",
                               "Feedback-ID": "1:lab:newsletter:harbourlight.example.org"}
    assert body["personalizations"][0]["headers"] == {
        "List-Unsubscribe": "<https://h.example.org/u/1>, "
                            "<mailto:unsubscribe@harbourlight.example.org?subject=unsubscribe%20lab>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def test_the_new_keys_are_read_with_paths_relative_to_the_file(tmp_path):
    config = config_with(tmp_path, '\n[delivery.dkim]\ndomain = "Harbourlight.example.org."\nselector = "nl2026"\n'
                                   'key_file = "dkim.pem"\n[web]\nunsubscribe_mailto = "unsubscribe@example.org"\n')
    assert config.delivery.dkim.domain == "harbourlight.example.org"
    assert config.delivery.dkim.key_file == tmp_path / "dkim.pem"
    assert config.unsubscribe_mailto == "unsubscribe@example.org"
    assert load_config(ROOT / "newsletter.toml").delivery.dkim is None


def test_every_problem_with_the_new_keys_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config_with(tmp_path, '\n[delivery.dkim]\ndomain = "not a domain"\nkey_file = "absent.pem"\nsize = 1\n'
                              '[web]\nunsubscribe_mailto = "Unsub <u@example.org>"\n')
    where = str(tmp_path / "newsletter.toml")
    assert [str(p) for p in caught.value.problems] == [
        f"{where}: delivery.dkim.domain: 'not a domain' is not a DNS name",
        f"{where}: delivery.dkim.selector: is needed to sign messages (or remove [delivery.dkim])",
        f"{where}: delivery.dkim.key_file: {tmp_path / 'absent.pem'} is not a file (a PEM private key)",
        f"{where}: web.unsubscribe_mailto: 'Unsub <u@example.org>' must be a bare address, like "
        "unsubscribe@example.org",
        f"{where}: delivery.dkim.size: unknown key, ignored (known keys: domain, selector, key_file)",
    ]


def test_without_a_key_file_the_environment_must_hold_the_key(tmp_path, monkeypatch):
    extra = '\n[delivery.dkim]\ndomain = "harbourlight.example.org"\nselector = "s1"\n'
    with pytest.raises(ConfigError, match="NEWSLETTER_DKIM_PRIVATE_KEY"):
        config_with(tmp_path, extra)
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", KEY.read_text())
    assert config_with(tmp_path, extra).delivery.dkim.key_file is None


def test_dns_advice_for_smtp_with_dkim(tmp_path):
    config = config_with(tmp_path, '\n[delivery.dkim]\ndomain = "harbourlight.example.org"\nselector = "nl2026"\n'
                                   'key_file = "dkim.pem"\n')
    config = config.__class__(**{**config.__dict__, "delivery": config.delivery.__class__(
        **{**config.delivery.__dict__, "provider": "smtp",
           "smtp": config.delivery.smtp.__class__(host="smtp.example.net")})})
    lines = dns_advice(config)
    record = public_key_record(config.delivery.dkim)
    assert lines[0] == f'nl2026._domainkey.harbourlight.example.org. TXT "{record[:255]}" "{record[255:]}"'
    assert lines[1:] == [
        'harbourlight.example.org. TXT "v=spf1 a:smtp.example.net ~all"  (SPF: list every server that sends as '
        "harbourlight.example.org, in one record; change ~all to -all once nothing else does)",
        '_dmarc.harbourlight.example.org. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@harbourlight.example.org; '
        'adkim=r; aspf=r"  (DMARC: start at p=none, read the reports, then move to p=quarantine and p=reject)',
    ]
    assert "PRIVATE" not in "\n".join(lines)


def test_dns_advice_warns_when_dkim_does_not_align_and_points_sendgrid_at_its_own_settings(tmp_path):
    config = config_with(tmp_path, '\n[delivery.dkim]\ndomain = "mail.example.net"\nselector = "s1"\n'
                                   'key_file = "dkim.pem"\n')
    assert dns_advice(config)[1] == ('warning: DKIM signs as mail.example.net but mail is from '
                                     'harbourlight.example.org: DMARC needs them to align; set [delivery.dkim] '
                                     'domain = "harbourlight.example.org"')
    sendgrid = load_config(ROOT / "newsletter.toml")
    sendgrid = sendgrid.__class__(**{**sendgrid.__dict__, "delivery": sendgrid.delivery.__class__(
        **{**sendgrid.delivery.__dict__, "provider": "sendgrid"})})
    lines = dns_advice(sendgrid)
    assert lines[0].startswith("DKIM for SendGrid: authenticate the domain in SendGrid")
    assert lines[1].startswith('harbourlight.example.org. TXT "v=spf1 include:sendgrid.net ~all"')
