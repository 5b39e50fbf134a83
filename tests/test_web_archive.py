"""View in the browser, the archive and its Atom feed, served and written as static files (`newsletter
archive`), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from types import SimpleNamespace

import pytest

from newsletter import ledger
from newsletter.web.archive import variant_token, write_static

from .web_helpers import add, make_web, send_issue

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
def web(env):
    web = make_web(env)
    add(web, "ana@example.org", "weekly", "lab", categories=("lab:Science",))
    send_issue(web, "weekly", env.now)
    send_issue(web, "lab", env.now)
    send_issue(web, "weekly", env.now + timedelta(days=1))  # nothing new: skipped, never listed
    return web


def test_the_archive_lists_past_issues_newest_first_with_date_subject_and_posts(web):
    page = web.client.get("/news/archive/weekly/")
    assert page.status_code == 200
    assert page.text.count('<article class="card">') == 1
    assert ('<a href="/news/archive/weekly/2026-01-05/">Harbourlight Weekly: Measuring sea level by hand and '
            "9 more</a>") in page.text
    assert '<time datetime="2026-01-05T07:00:00+00:00">5 January 2026</time>' in page.text
    link = next(p.link for p in web.env.posts if p.title == "Measuring sea level by hand")
    assert f'<li><a href="{link}">Measuring sea level by hand</a></li>' in page.text
    assert 'href="/news/archive/weekly/feed.atom"' in page.text


def test_an_issue_shows_as_sent_with_personal_fields_blank(web):
    page = web.client.get("/news/archive/weekly/2026-01-05/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")
    assert "XNLFIELD" not in page.text and "ana@example.org" not in page.text
    assert re.search(r'<a href=""[^>]*>Unsubscribe</a>', page.text) and "/unsubscribe/" not in page.text
    assert "Measuring sea level by hand" in page.text
    assert web.client.get("/news/archive/weekly/2026-01-06/").status_code == 404  # skipped
    assert web.client.get("/news/archive/weekly/1999-01-01/").status_code == 404


def test_a_signed_variant_key_shows_that_variant_and_a_bad_one_nothing(web):
    record = ledger.find_issue(web.store, "lab", "2026-01-05")
    with web.store.engine.connect() as conn:
        keys = conn.execute(ledger.variants.select().where(ledger.variants.c.issue_id == record.id)).all()
    science = next(k for k in keys if "Technology" not in k.html)
    token = variant_token(web.store.secret(), record.id, science.key)
    page = web.client.get(f"/news/archive/lab/2026-01-05/?v={token}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "Measuring sea level by hand" in page.text and "A sensor for every mooring" not in page.text
    full = web.client.get("/news/archive/lab/2026-01-05/").text
    assert "A sensor for every mooring" in full
    assert web.client.get(f"/news/archive/lab/2026-01-05/?v={token[:-2]}").status_code == 404
    assert web.client.get(f"/news/archive/weekly/2026-01-05/?v={token}").status_code == 404


def test_the_feed_is_valid_atom(web):
    answer = web.client.get("/news/archive/weekly/feed.atom")
    assert answer.headers["content-type"] == "application/atom+xml"
    feed = ET.fromstring(answer.content)
    assert feed.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated", "author/" + ATOM + "name"):
        assert feed.find(ATOM + required) is not None, required
    assert feed.find(f"{ATOM}updated").text == "2026-01-05T07:00:00Z"
    [entry] = feed.findall(f"{ATOM}entry")
    assert entry.find(f"{ATOM}id").text == "http://testserver/news/archive/weekly/2026-01-05/"
    assert entry.find(f"{ATOM}title").text == "Harbourlight Weekly: Measuring sea level by hand and 9 more"
    assert entry.find(f"{ATOM}link").attrib == {"rel": "alternate", "type": "text/html",
                                                "href": "/news/archive/weekly/2026-01-05/"}
    assert entry.find(f"{ATOM}updated").text == "2026-01-05T07:00:00Z"
    assert entry.find(f"{ATOM}content").attrib["type"] == "html"
    assert "Measuring sea level by hand</a></li>" in entry.find(f"{ATOM}content").text


def test_a_private_newsletter_has_no_public_archive(env):
    config = dataclasses.replace(env.config, newsletters={**env.config.newsletters, "lab": dataclasses.replace(
        env.config.newsletters["lab"], archive=False)})
    web = make_web(SimpleNamespace(**{**vars(env), "config": config}))
    add(web, "ana@example.org", "lab")
    record = send_issue(web, "lab", env.now)
    for url in ("/news/archive/lab/", "/news/archive/lab/feed.atom", "/news/archive/lab/2026-01-05/"):
        answer = web.client.get(url)
        assert answer.status_code == 404, url
        assert "There is no public archive of this newsletter." in answer.text
    with web.store.engine.connect() as conn:
        key = conn.execute(ledger.variants.select().where(ledger.variants.c.issue_id == record.id)).first().key
    token = variant_token(web.store.secret(), record.id, key)
    assert web.client.get(f"/news/archive/lab/2026-01-05/?v={token}").status_code == 200
    written = write_static(web.store, web.config, [n for n in web.config.newsletters.values() if n.archive],
                           env.tmp / "site-archive", web.app.state.web.env)
    assert not (env.tmp / "site-archive" / "lab").exists()
    assert len(written.written) == 3  # the stylesheet, weekly's page and feed; no weekly issue was sent


def test_the_static_archive_has_relative_links_and_a_rerun_writes_only_what_changed(web, env):
    out = env.tmp / "archive"
    first = write_static(web.store, web.config, list(web.config.newsletters.values()), out, web.app.state.web.env)
    assert sorted(str(p.relative_to(out)) for p in first.written) == [
        "lab/2026-01-05/index.html", "lab/feed.atom", "lab/index.html", "web.css", "weekly/2026-01-05/index.html",
        "weekly/feed.atom", "weekly/index.html"]
    page = (out / "weekly" / "index.html").read_text()
    assert 'href="../web.css"' in page and 'href="../weekly/2026-01-05/index.html"' in page
    assert 'href="../weekly/feed.atom"' in page and 'href="/' not in page.replace('href="https://', "")
    assert (out / "weekly" / "2026-01-05" / "index.html").read_text() == web.client.get(
        "/news/archive/weekly/2026-01-05/").text
    again = write_static(web.store, web.config, list(web.config.newsletters.values()), out, web.app.state.web.env)
    assert (again.written, again.unchanged) == ([], 7)
    add(web, "ben@example.org", "weekly")
    send_issue(web, "weekly", env.now + timedelta(days=9), posts=[*env.posts, later_post(env)])
    third = write_static(web.store, web.config, list(web.config.newsletters.values()), out, web.app.state.web.env)
    assert sorted(str(p.relative_to(out)) for p in third.written) == [
        "weekly/2026-01-14/index.html", "weekly/feed.atom", "weekly/index.html"]
    listing = (out / "weekly" / "index.html").read_text()
    assert listing.count("<article") == 2
    assert listing.index("2026-01-14/index.html") < listing.index("2026-01-05/index.html")  # newest first


def later_post(env):
    newest = max(env.posts, key=lambda p: p.date)
    return dataclasses.replace(newest, path="_posts/2026-01-12-a-later-post.md", slug="a-later-post",
                               title="A later post", date=newest.date + timedelta(days=8),
                               fixed_url="/2026/01/12/a-later-post.html")


def test_the_view_link_in_a_sent_email_opens_that_readers_variant(web):
    """Ana takes only Science from lab: her email's view link carries the signed key of her variant."""
    [path] = [p for p in (web.outbox / "lab-2026-01-05").glob("*.eml") if "ana@example.org" in p.name]
    text = email.message_from_bytes(path.read_bytes(), policy=email.policy.default).get_body(("plain",)).get_content()
    link = re.search(r"http://testserver(/news/archive/lab/2026-01-05/\?v=\S+)", text).group(1)
    page = web.client.get(link)
    assert page.status_code == 200
    assert "Measuring sea level by hand" in page.text and "A sensor for every mooring" not in page.text
