"""The message on the wire: structure, headers, no header injection, and stored expected messages."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import html as html_module
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.digest import compose, render_plan, sample_recipient
from newsletter.message import MessageTemplate
from newsletter.plan import plan_issue
from newsletter.render import Digest, IssueInfo, Recipient
from newsletter.select import Selection
from newsletter.site import read_posts

from .conftest import FIXED_NOW, FIXTURES, site_config
from .golden import compare, mask_message


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_sample_weekly_message_matches_the_stored_one(sample_config, sample_posts, regenerate):
    plan = plan_issue(sample_config, sample_config.newsletter("weekly"), sample_posts, FIXED_NOW)
    raw = compose(sample_config, render_plan(sample_config, plan), sample_recipient(sample_config), FIXED_NOW)
    compare("weekly-sample.eml", mask_message(raw), regenerate)


def test_sample_lab_message_for_a_category_subset_matches_the_stored_one(sample_config, sample_posts, regenerate):
    plan = plan_issue(sample_config, sample_config.newsletter("lab"), sample_posts, FIXED_NOW,
                      categories=["science"])
    recipient = Recipient("ana@example.org", "Ana Souza", "https://harbourlight.example.org/unsubscribe/t1",
                          "https://harbourlight.example.org/preferences/t1")
    raw = compose(sample_config, render_plan(sample_config, plan), recipient, FIXED_NOW)
    compare("lab-science-only.eml", mask_message(raw), regenerate)


def test_structure_and_headers(sample_config, sample_posts):
    plan = plan_issue(sample_config, sample_config.newsletter("lab"), sample_posts, FIXED_NOW)
    raw = compose(sample_config, render_plan(sample_config, plan),
                  Recipient("zoe@example.org", "Zoë Λ", "https://h.example.org/u/tok", "https://h/p"), FIXED_NOW)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == "Harbourlight Lab Notes: 5 January 2026"
    assert msg["From"] == "Harbourlight <news@harbourlight.example.org>"
    assert msg["Reply-To"] == "Harbourlight editors <editors@harbourlight.example.org>"
    assert msg["To"] == "Zoë Λ <zoe@example.org>"
    assert msg["Date"] == "Mon, 05 Jan 2026 07:00:00 +0000"
    assert msg["Message-ID"].endswith("@harbourlight.example.org>")
    assert msg["List-Id"] == "Harbourlight Lab Notes <lab.harbourlight.example.org>"
    assert msg["List-Unsubscribe"] == "<https://h.example.org/u/tok>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = msg.get_body(("html",)).get_content()
    assert 'href="https://h.example.org/u/tok"' in html


def test_line_breaks_in_post_data_never_reach_a_header(sample_config):
    config = site_config(FIXTURES / "hostile-site")
    newsletter = dataclasses.replace(sample_config.newsletter("weekly"), id="n", subject="{{ posts[0].title }}")
    config = dataclasses.replace(config, templates=sample_config.templates, newsletters={"n": newsletter},
                                 delivery=sample_config.delivery)
    posts = [p for p in read_posts(config.site, FIXED_NOW).posts if p.slug == "title-with-line-breaks"]
    plan = plan_issue(config, newsletter, posts, FIXED_NOW, since=datetime(2020, 1, 1, tzinfo=timezone.utc))
    recipient = Recipient("x@example.org", "Mallory\r\nBcc: all@example.org", "https://u/\r\nX-Evil: 1")
    msg = parse(compose(config, render_plan(config, plan), recipient, FIXED_NOW))
    assert msg["Subject"] == "Breaking Bcc: victim@example.net"
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["To"] == '"Mallory Bcc: all@example.org" <x@example.org>'
    assert msg["List-Unsubscribe"] == "<https://u/ X-Evil: 1>"


def digest_of(subject: str, html: str, text: str) -> Digest:
    issue = IssueInfo(1, FIXED_NOW, "2026-01-05", "https://x/archive/")
    return Digest("t", issue, Selection((), (), FIXED_NOW, FIXED_NOW), subject, html, text, ())


printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(subject=st.text(min_size=1, max_size=200), name=st.text(max_size=60), text=printable, html=printable,
       url=st.from_regex(r"https://[a-z]{1,10}\.example\.org/[A-Za-z0-9._~/-]{0,80}", fullmatch=True))
def test_any_subject_name_and_body_round_trip_through_a_standard_parser(subject, name, text, html, url):
    template = MessageTemplate(digest_of(subject + "XNLFIELDnameXNLEND", "<p>" + html + "XNLFIELDnameXNLEND</p>",
                                         text + "\nXNLFIELDunsubscribe_urlXNLEND"),
                               sender="A <a@example.org>", reply_to=None, list_id=("T", "t"), date=FIXED_NOW)
    raw = template.render(Recipient("r@example.org", name, url), "<id.1@example.org>")
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line and not line[:1].isspace()]
    assert names == [b"Subject", b"From", b"To", b"Date", b"List-Id", b"Precedence", b"X-Auto-Response-Suppress",
                     b"Feedback-ID", b"Message-ID", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"MIME-Version",
                     b"Content-Type"]
    assert b"\n" not in raw.replace(b"\r\n", b"") and max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(raw)
    assert msg.defects == []
    assert msg["Subject"] == " ".join((subject + " ".join(name.split())).split())
    assert msg["To"].addresses[0].display_name == " ".join(name.split())
    assert msg["To"].addresses[0].addr_spec == "r@example.org"
    assert msg["List-Unsubscribe"] == f"<{url}>"
    plain, rich = list(msg.iter_parts())

    def lines(value: str) -> str:
        return value.replace("\r\n", "\n").rstrip("\n")

    assert lines(plain.get_content()) == lines(text + "\n" + url)
    assert lines(rich.get_content()) == lines("<p>" + html + html_module.escape(name, quote=True) + "</p>")
