"""The message on the wire: structure, headers, no header injection, and stored expected messages."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.digest import compose, plan_issue, render_plan, sample_recipient
from newsletter.message import build_message, to_bytes
from newsletter.posts import read_posts
from newsletter.render import Personal, Recipient

from .conftest import FIXED_NOW, FIXTURES, site_config
from .golden import compare, mask_message


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_sample_weekly_message_matches_the_stored_one(sample_config, sample_posts, regenerate):
    plan = plan_issue(sample_config, sample_config.newsletter("weekly"), sample_posts, FIXED_NOW)
    raw = to_bytes(compose(sample_config, render_plan(sample_config, plan), sample_recipient(sample_config),
                           FIXED_NOW))
    compare("weekly-sample.eml", mask_message(raw), regenerate)


def test_sample_lab_message_for_a_category_subset_matches_the_stored_one(sample_config, sample_posts, regenerate):
    plan = plan_issue(sample_config, sample_config.newsletter("lab"), sample_posts, FIXED_NOW,
                      categories=["science"])
    recipient = Recipient("ana@example.org", "Ana Souza", "https://harbourlight.example.org/unsubscribe/t1",
                          "https://harbourlight.example.org/preferences/t1")
    raw = to_bytes(compose(sample_config, render_plan(sample_config, plan), recipient, FIXED_NOW))
    compare("lab-science-only.eml", mask_message(raw), regenerate)


def test_structure_and_headers(sample_config, sample_posts):
    plan = plan_issue(sample_config, sample_config.newsletter("lab"), sample_posts, FIXED_NOW)
    raw = to_bytes(compose(sample_config, render_plan(sample_config, plan),
                           Recipient("zoe@example.org", "Zoë Λ", "https://h.example.org/u/tok", "https://h/p"),
                           FIXED_NOW))
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
    msg = parse(to_bytes(compose(config, render_plan(config, plan), recipient, FIXED_NOW)))
    assert msg["Subject"] == "Breaking Bcc: victim@example.net"
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["To"] == '"Mallory Bcc: all@example.org" <x@example.org>'
    assert msg["List-Unsubscribe"] == "<https://u/ X-Evil: 1>"


@settings(max_examples=200, deadline=None)
@given(subject=st.text(min_size=1, max_size=200), name=st.text(max_size=60))
def test_any_subject_and_name_round_trip_as_single_header_lines(subject, name):
    personal = Personal(subject=subject, html="<p>x</p>", text="x")
    raw = to_bytes(build_message(personal, Recipient("r@example.org", name), sender="A <a@example.org>",
                                 reply_to=None, list_id=("T", "t"), date=FIXED_NOW))
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line and not line[:1].isspace()]
    assert names == [b"Subject", b"From", b"To", b"Date", b"Message-ID", b"List-Id", b"MIME-Version",
                     b"Content-Type"]
    msg = parse(raw)
    assert msg["Subject"] == " ".join(subject.split())
    assert msg["To"].addresses[0].display_name == " ".join(name.split())
    assert msg["To"].addresses[0].addr_spec == "r@example.org"
