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
    assert msg["List-Unsubscribe"] == "<https://u/%20X-Evil:%201>"


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
    assert names == [b"Subject", b"From", b"To", b"Date", b"List-Id", b"Message-ID", b"List-Unsubscribe",
                     b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type"]
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


def copy_for(recipient: Recipient, sender: str = "A <a@example.org>", reply_to: str | None = None) -> bytes:
    template = MessageTemplate(digest_of("S", "<p>XNLFIELDemailXNLEND</p>", "XNLFIELDemailXNLEND"), sender=sender,
                               reply_to=reply_to, list_id=("T", "t"), date=FIXED_NOW)
    return template.render(recipient, "<id.1@example.org>")


def head_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def test_an_internationalised_domain_goes_out_as_idna_and_the_body_keeps_the_address_as_given():
    raw = copy_for(Recipient("user@bücher.de", "Zoë"), sender="Bücher <news@bücher.de>",
                   reply_to="Leser <leser@bücher.de>")
    assert raw.isascii()
    msg = parse(raw)
    assert msg.defects == []
    assert msg["To"].addresses[0].addr_spec == "user@xn--bcher-kva.de"
    assert msg["From"] == "Bücher <news@xn--bcher-kva.de>"
    assert msg["Reply-To"] == "Leser <leser@xn--bcher-kva.de>"
    assert msg["List-Id"] == "T <t.xn--bcher-kva.de>"
    assert msg.get_body(("plain",)).get_content().rstrip("\n") == "user@bücher.de"


def test_a_non_ascii_local_part_makes_the_address_headers_utf8_never_an_encoded_word():
    raw = copy_for(Recipient("jörg@bücher.de", "Jörg, \"der\" Leser"))
    to_line = [line for line in head_of(raw).split(b"\r\n") if line.startswith(b"To:")]
    assert to_line == ['To: "Jörg, \\"der\\" Leser" <jörg@xn--bcher-kva.de>'.encode()]
    msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)  # RFC 6532: UTF-8 headers
    assert msg["To"].addresses[0].display_name == 'Jörg, "der" Leser'
    assert msg["To"].addresses[0].addr_spec == "jörg@xn--bcher-kva.de"


def test_names_with_commas_and_quotes_stay_one_address():
    msg = parse(copy_for(Recipient("ann@example.org", 'Ann "Nan", O\'Neil; <boss>')))
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ('Ann "Nan", O\'Neil; <boss>', "ann@example.org")]


def test_an_address_that_cannot_go_on_the_wire_is_an_address_error():
    import pytest

    from newsletter.message import AddressError

    with pytest.raises(AddressError, match=r"'no-at-sign' is not an address that can be sent to: .*@-sign"):
        copy_for(Recipient("no-at-sign"))


def test_a_long_unsubscribe_link_stays_one_link_and_one_too_long_for_a_line_is_refused():
    import pytest

    from newsletter.message import AddressError

    url = "https://example.org/unsubscribe/" + "t" * 900 + "/é"
    raw = copy_for(Recipient("r@example.org", "", url))
    assert f"\r\nList-Unsubscribe: <{url[:-1]}%C3%A9>\r\n".encode() in raw
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    with pytest.raises(AddressError, match=r"the List-Unsubscribe link is 1037 characters long; a header line "
                                           r"holds at most 998, so shorten \[web\] base_url"):
        copy_for(Recipient("r@example.org", "", url + "x" * 98))


def test_a_name_or_title_too_long_to_fold_becomes_encoded_words_and_every_line_fits():
    template = MessageTemplate(digest_of("S", "<p>x</p>", "x"), sender="A <a@example.org>", reply_to=None,
                               list_id=("T" * 2000, "t"), date=FIXED_NOW)
    raw = template.render(Recipient("r@example.org", "N" * 2000), "<id.1@example.org>")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(raw)
    assert msg.defects == []
    assert msg["List-Id"] == "T" * 2000 + " <t.example.org>"
    to = msg["To"].addresses[0]
    assert to.addr_spec == "r@example.org"
    # Python's parser keeps the folding space between encoded words inside a phrase; RFC 2047 readers drop it
    assert to.display_name.replace(" ", "") == "N" * 2000


labels = st.text(alphabet="abcxyzéüñøåж", min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(local=st.text(alphabet="abcXYZ019._+-éжü", min_size=1, max_size=20).filter(
           lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s),
       domain=st.lists(labels, min_size=1, max_size=3).map(lambda parts: ".".join(parts) + ".example"),
       name=st.text(max_size=80))
def test_any_internationalised_address_round_trips_through_the_headers(local, domain, name):
    import idna

    raw = copy_for(Recipient(f"{local}@{domain}", name))
    head = head_of(raw)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"=?" not in head.split(b"\r\nTo:", 1)[1].split(b"\r\n", 1)[0].split(b"<")[-1]  # never inside <...>
    msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    to = msg["To"].addresses[0]
    assert to.domain.isascii() and idna.decode(to.domain) == domain
    assert to.username == local
    assert raw.isascii() == local.isascii()
