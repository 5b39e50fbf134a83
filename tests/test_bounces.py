"""SMTP bounces: per-delivery signed bounce addresses, and `newsletter bounces` reading the fixture mbox and
Maildir (tests/fixtures/bounces: Postfix, Exim, Exchange and Gmail bounces, an ARF complaint, an unmatched
bounce and a forged address) into the same rules as SendGrid's events."""

from __future__ import annotations

import json
import shutil
import ssl

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from newsletter.cli import cli
from newsletter.verp import BounceAddresses

from .conftest import FIXTURES, ROOT

NOW = "2026-01-05T07:00:00+00:00"
LATER = "2026-01-05T12:00:00+00:00"
SECRET = "bounce-fixtures-secret"  # the fixtures' bounce addresses are signed with it
BOUNCES = FIXTURES / "bounces"
# In this order, so that their deliveries of the first issue are 1 to 8, as the fixtures' addresses say.
PEOPLE = ["no-such-user@example.net", "gone@example.com", "left.company@contoso.example", "old.address@example.net",
          "full.mailbox@example.net", "complainer@example.com", "steady.reader@example.org",
          "forged.target@example.org"]


def test_a_bounce_address_names_its_delivery_and_nothing_else_does():
    made = BounceAddresses("Bounces@News.Example.org", SECRET)
    address = made.for_delivery(1234)
    assert address == "Bounces+1234.p5hqti73544aei26@news.example.org"
    assert made.delivery_of(address) == 1234
    assert made.delivery_of(f"<{address.upper()}>") == 1234  # a server may change the case on the way back
    assert made.delivery_of(address.replace("1234.", "1235.")) is None
    assert made.delivery_of(address.replace("@news.", "@other.")) is None
    assert made.delivery_of("bounces+1234@news.example.org") is None
    assert BounceAddresses("bounces@news.example.org", "another secret").delivery_of(address) is None
    assert len(address.partition("@")[0]) <= 64


@given(st.integers(min_value=1, max_value=2**63))
def test_every_delivery_id_round_trips_through_its_address(delivery_id):
    made = BounceAddresses("bounces@news.example.org", SECRET)
    assert made.delivery_of(made.for_delivery(delivery_id)) == delivery_id


@pytest.fixture
def run(tmp_path, monkeypatch, db_url):
    """The sample newsletter with a bounce address, its database at `db_url`; returns an invoker."""
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    text = (tmp_path / "newsletter.toml").read_text()
    (tmp_path / "newsletter.toml").write_text(
        text.replace('source = "site"', f'source = "{ROOT / "site"}"')
        + '\n[delivery.smtp]\nbounce_address = "bounces@harbourlight.example.org"\n'
        + f'\n[render]\ntemplates = "{ROOT / "templates"}"\n')
    (tmp_path / "people.csv").write_text("email,newsletters\n" + "".join(f"{a},weekly\n" for a in PEOPLE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", db_url)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SECRET)

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    assert invoke("--now", NOW, "subscribers", "import", "people.csv").exit_code == 0
    assert invoke("--now", NOW, "send", "weekly").exit_code == 0
    return invoke


def statuses(run) -> dict[str, str]:
    listed = run("subscribers", "list", "--json").stdout.splitlines()
    return {s["email"]: s["status"] for s in map(json.loads, listed)}


def test_bounces_from_an_mbox_and_a_maildir_are_matched_by_their_address_and_applied(run):
    mbox = run("--now", LATER, "bounces", "--mbox", str(BOUNCES / "bounces.mbox"))
    assert mbox.exit_code == 0
    assert mbox.stdout == ("bounced\tgone@example.com\nbounced\tno-such-user@example.net\n"
                           "bounced\told.address@example.net\n"
                           "5 message(s): recorded 4, already recorded 0; bounced 3, complained 0; 1 not applied "
                           "(listed below)\n")
    assert mbox.stderr == (f"warning: {BOUNCES / 'bounces.mbox'} message 5: unmatched bounce: no bounce address of "
                           "ours (bounces+…@harbourlight.example.org) in its headers (failed: steady.reader@example.org)\n")
    maildir = run("--now", LATER, "bounces", "--maildir", str(BOUNCES / "Maildir"))
    assert maildir.stdout == ("bounced\tleft.company@contoso.example\ncomplained\tcomplainer@example.com\n"
                              "3 message(s): recorded 2, already recorded 0; bounced 1, complained 1; 1 not applied "
                              "(listed below)\n")
    assert maildir.stderr == (f"warning: {BOUNCES / 'Maildir'}/new/1767604500.M3P4103.mail: unmatched bounce: "
                              "bounces+8.aaaaaaaaaaaaaaaa@harbourlight.example.org is not a bounce address this "
                              "database signed (failed: forged.target@example.org)\n")
    assert statuses(run) == {
        "no-such-user@example.net": "bounced", "gone@example.com": "bounced", "left.company@contoso.example": "bounced",
        "old.address@example.net": "bounced", "full.mailbox@example.net": "active",  # one soft bounce of three
        "complainer@example.com": "complained", "steady.reader@example.org": "active",
        "forged.target@example.org": "active"}
    again = run("--strict", "--now", LATER, "bounces", "--mbox", str(BOUNCES / "bounces.mbox"))
    assert again.stdout == ("5 message(s): recorded 0, already recorded 4; bounced 0, complained 0; 1 not applied "
                            "(listed below)\n")
    assert again.exit_code == 1  # --strict: an unmatched report is a warning


def test_events_and_status_show_what_the_bounces_said(run):
    run("--now", LATER, "bounces", "--mbox", str(BOUNCES / "bounces.mbox"))
    run("--now", LATER, "bounces", "--maildir", str(BOUNCES / "Maildir"))
    listed = json.loads(run("events", "1", "--json").stdout)
    assert {k: v for k, v in listed.items() if k != "events"} == {
        "issue": 1, "counts": {"bounce_hard": 4, "bounce_soft": 1, "spamreport": 1}, "sent": 8, "complained": 1,
        "hard_bounced": 4, "complaint_rate": 0.125, "hard_bounce_rate": 0.5, "now_bounced": 4, "now_complained": 1}
    assert [(e["email"], e["event"], e["classification"]) for e in listed["events"]] == [
        ("no-such-user@example.net", "bounce", "hard"), ("gone@example.com", "bounce", "hard"),
        ("old.address@example.net", "bounce", "hard"), ("left.company@contoso.example", "bounce", "hard"),
        ("complainer@example.com", "spamreport", None), ("full.mailbox@example.net", "bounce", "soft")]
    text = run("events", "1").stdout.splitlines()
    assert text[0] == ("2026-01-05T07:02:11+00:00\tbounce (hard)\tno-such-user@example.net\tmailbox\t5.1.1; smtp; "
                       "550 5.1.1 <no-such-user@example.net>: Recipient address rejected: User unknown in virtual "
                       "mailbox table")
    assert text[-1] == ("issue 1: bounce_hard 4, bounce_soft 1, spamreport 1; subscribers now bounced 4, "
                        "complained 1; complaint rate 12.50%, hard bounce rate 50.00% of 8 sent")
    status = json.loads(run("status", "1", "--json").stdout)
    assert (status["events"], status["rates"]["complaint_rate"]) == (listed["counts"], 0.125)
    assert run("status", "1").stdout.splitlines()[1] == (
        "reported: bounce_hard 4, bounce_soft 1, spamreport 1; subscribers now bounced 4, complained 1; complaint "
        "rate 12.50%, hard bounce rate 50.00% of 8 sent")
    assert run("events", "7").exit_code == 2


def test_bounces_needs_a_bounce_address_and_a_mailbox(run, tmp_path):
    assert run("bounces").exit_code == 2
    missing = run("bounces", "--maildir", str(tmp_path))
    assert (missing.exit_code, missing.stderr) == (1, f"error: --maildir {tmp_path}: not a Maildir (it needs cur/ "
                                                      "and new/ folders)\n")
    config = tmp_path / "newsletter.toml"
    config.write_text(config.read_text().replace('bounce_address = "bounces@harbourlight.example.org"', ""))
    unset = run("bounces", "--mbox", str(BOUNCES / "bounces.mbox"))
    assert unset.exit_code == 2
    assert "delivery.smtp.bounce_address is not set" in unset.stderr


def reading(name: str):
    from datetime import datetime, timezone

    from newsletter.bounces import read_report

    data = (BOUNCES / "messages" / f"{name}.eml").read_bytes()
    return read_report(name, data, BounceAddresses("bounces@harbourlight.example.org", SECRET),
                       datetime(2026, 1, 10, tzinfo=timezone.utc))


def test_a_dsn_that_failed_after_temporary_errors_is_a_soft_bounce():
    found = reading("postfix-expired-after-temporary-failures")
    assert (found.event.delivery_id, found.event.kind, found.event.classification) == (7, "bounce", "soft")
    assert found.event.detail == "4.4.7; smtp; 452 4.2.2 <steady.reader@example.org>: Mailbox full"


@pytest.mark.parametrize("name, delivery, kind, classification", [
    ("postfix-hard-user-unknown", 1, "bounce", "hard"), ("exim-plain-text-failed-recipients", 2, "bounce", "hard"),
    ("exchange-recipient-not-found", 3, "bounce", "hard"), ("gmail-address-not-found", 4, "bounce", "hard"),
    ("postfix-soft-mailbox-full-delayed", 5, "bounce", "soft"), ("arf-abuse-complaint", 6, "spamreport", None)])
def test_each_fixture_is_read_as_its_format_says(name, delivery, kind, classification):
    event = reading(name).event
    assert (event.delivery_id, event.kind, event.classification, event.source) == (delivery, kind, classification,
                                                                                   "mailbox")


def test_a_bounce_naming_a_subscriber_in_its_text_but_not_our_address_is_not_matched():
    found = reading("unmatched-bounce-without-verp")
    assert (found.event, found.recipients) == (None, ("steady.reader@example.org",))


def test_an_imap_folder_is_read_over_tls_and_left_as_it_was(run, tmp_path, monkeypatch):
    import trustme

    from .imap_server import ImapServer

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    names = ["postfix-hard-user-unknown", "arf-abuse-complaint", "unmatched-bounce-without-verp"]
    folder = [(BOUNCES / "messages" / f"{n}.eml").read_bytes().replace(b"\n", b"\r\n") for n in names]
    with ImapServer(context, "bounces", "s3cret pass", {"Bounces": folder}) as server:
        url = f"imaps://bounces@127.0.0.1:{server.port}/Bounces"
        assert run("bounces", "--imap", url).stderr == (
            "error: --imap needs the password in the environment variable NEWSLETTER_IMAP_PASSWORD\n")
        monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "wrong")
        refused = run("bounces", "--imap", url)
        assert refused.exit_code == 1 and "the server refused the login" in refused.stderr
        assert "wrong" not in refused.stderr
        monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "s3cret pass")
        read = run("--now", LATER, "bounces", "--imap", url)
    assert read.stdout == ("bounced\tno-such-user@example.net\ncomplained\tcomplainer@example.com\n"
                           "3 message(s): recorded 2, already recorded 0; bounced 1, complained 1; 1 not applied "
                           "(listed below)\n")
    assert read.stderr.startswith(f"warning: imaps://bounces@127.0.0.1:{server.port}/Bounces UID 3: unmatched bounce")
    assert not [c for c in server.commands if c.split(" ")[0].upper() in ("STORE", "EXPUNGE", "COPY", "MOVE")]
    assert "UID FETCH 1 (BODY.PEEK[])" in server.commands
