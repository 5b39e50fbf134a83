"""The editors' console (/admin/ of `newsletter serve`), rule by rule, with Starlette's test client on SQLite and
PostgreSQL: who gets in (password, session cookie, loopback), the sign-in limit, CSRF, the preview against
the CLI's, the test copy, retry-unknown's confirmation, pause/resume and one-off sends. The clock is pinned."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import warnings
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from newsletter import ledger, schedule
from newsletter.cli import cli
from newsletter.config import load_config
from newsletter.errors import ConfigError
from newsletter.store import deliveries
from newsletter.web.app import create_app
from newsletter.web.signin import hash_password, password_matches

from .conftest import FIXED_NOW, ROOT
from .web_helpers import BASE, add, csrf_of, held, make_web, send_issue

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)
ADMIN = "/news/admin"
LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def web(env):
    return make_web(env, admin_password_hash=HASH)


def client(web, ip: str = "testclient", base: str = "http://testserver", headers: dict | None = None) -> TestClient:
    return TestClient(web.app, base_url=base, client=(ip, 50000), headers=headers)


def sign_in(web, password: str = PASSWORD, browser: TestClient | None = None, next_page: str = f"{ADMIN}/"):
    browser = browser or web.client
    token = csrf_of(browser.get(f"{ADMIN}/login").text)
    return browser.post(f"{ADMIN}/login", data={"password": password, "csrf": token, "next": next_page},
                        follow_redirects=False)


def csrf(web, browser: TestClient | None = None) -> str:
    return csrf_of((browser or web.client).get(f"{ADMIN}/").text)


def state_of(web, newsletter: str):
    return schedule.get_state(web.store, newsletter)


def one_offs(web, newsletter: str) -> list[tuple[str, str]]:
    return [(f.fire_time.isoformat(), f.status) for f in schedule.list_fires(web.store, newsletter=newsletter)
            if f.kind == "one-off"]


# --- who gets in -------------------------------------------------------------------------------------------

def test_without_signing_in_pages_redirect_to_the_sign_in_and_posts_change_nothing(web):
    home = web.client.get(f"{ADMIN}/", follow_redirects=False)
    assert (home.status_code, home.headers["location"]) == (303, f"{ADMIN}/login?next=%2Fnews%2Fadmin%2F")
    deep = web.client.get(f"{ADMIN}/preview/lab?as=ana%40example.org", follow_redirects=False)
    assert deep.headers["location"] == f"{ADMIN}/login?next=%2Fnews%2Fadmin%2Fpreview%2Flab%3Fas%3Dana%2540example.org"
    frame = web.client.get(f"{ADMIN}/preview/lab/frame", follow_redirects=False)
    assert frame.status_code == 303
    token = csrf_of(web.client.get(f"{ADMIN}/login").text)
    refused = web.client.post(f"{ADMIN}/schedule/weekly/pause", data={"csrf": token}, follow_redirects=False)
    assert refused.status_code == 403
    assert "Your console session has ended; nothing was changed." in refused.text
    assert state_of(web, "weekly") is None


def test_the_wrong_password_is_refused_and_the_right_one_opens_a_session_cookie(web):
    wrong = sign_in(web, "correct horse")
    assert wrong.status_code == 403
    assert "That password is not the console&#39;s." in wrong.text
    assert "nl_admin" not in wrong.headers.get("set-cookie", "")
    right = sign_in(web, next_page=f"{ADMIN}/issues/weekly")
    assert (right.status_code, right.headers["location"]) == (303, f"{ADMIN}/issues/weekly")
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("nl_admin=")
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert flags["path"] == "Path=/news/admin"
    assert flags["max-age"] == "Max-Age=43200"
    assert flags["samesite"].lower() == "samesite=strict"
    assert "httponly" in flags
    assert "secure" not in flags  # http base URL
    home = web.client.get(f"{ADMIN}/")
    assert home.status_code == 200
    assert "<h1>Newsletters</h1>" in home.text
    assert "No console password is set" not in home.text
    assert "Sign out" in home.text


def test_the_session_cookie_is_secure_under_an_https_base_url(env):
    config = dataclasses.replace(env.config, web_base_url="https://testserver/news", web_base_url_set=True,
                                 web=dataclasses.replace(env.config.web, admin_password_hash=HASH))
    app = create_app(config, store=env.store, clock=lambda: FIXED_NOW)
    browser = TestClient(app, base_url="https://testserver")
    token = csrf_of(browser.get(f"{ADMIN}/login").text)
    answer = browser.post(f"{ADMIN}/login", data={"password": PASSWORD, "csrf": token}, follow_redirects=False)
    assert answer.status_code == 303
    assert [p.strip() for p in answer.headers["set-cookie"].split(";")].count("Secure") == 1
    assert browser.get(f"{ADMIN}/").status_code == 200


def test_a_session_ends_after_12_hours_and_when_the_password_changes(web):
    assert sign_in(web).status_code == 303
    web.clock.advance(hours=11, minutes=59)
    assert web.client.get(f"{ADMIN}/", follow_redirects=False).status_code == 200
    web.clock.advance(minutes=1)
    assert web.client.get(f"{ADMIN}/", follow_redirects=False).status_code == 303
    web.clock.advance(minutes=1)
    assert sign_in(web).status_code == 303
    other = make_web(web.env, admin_password_hash=hash_password("another password"))
    other.client.cookies = web.client.cookies
    other.clock.now = web.clock.now
    assert other.client.get(f"{ADMIN}/", follow_redirects=False).status_code == 303


def test_sign_in_stops_after_five_failures_from_one_address_until_the_window_passes(web):
    for _ in range(5):
        assert sign_in(web, "guess").status_code == 403
    limited = sign_in(web)  # the right password, but too late
    assert limited.status_code == 429
    assert "Too many failed sign-ins" in limited.text
    assert "nl_admin" not in limited.headers.get("set-cookie", "")
    assert sign_in(web, browser=client(web, "192.0.2.9")).status_code == 303  # another address is not limited
    web.clock.advance(minutes=15)
    assert sign_in(web).status_code == 303


def test_successful_sign_ins_do_not_count_towards_the_limit(web):
    for _ in range(4):
        assert sign_in(web, "guess").status_code == 403
    for _ in range(3):
        assert sign_in(web).status_code == 303
    assert sign_in(web, "guess").status_code == 403
    assert sign_in(web).status_code == 429


def test_a_sign_in_only_goes_on_to_a_console_page(web):
    for target in ("https://evil.example/", "//evil.example/news/admin/", "/news/unsubscribe/x", "/news/admin",
                   "/news/admin/../unsubscribe/x"):
        assert sign_in(web, next_page=target).headers["location"] == f"{ADMIN}/"


def test_sign_out_ends_the_session(web):
    sign_in(web)
    out = web.client.post(f"{ADMIN}/logout", data={"csrf": csrf(web)}, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, f"{ADMIN}/login")
    assert 'nl_admin=""' in out.headers["set-cookie"]
    assert web.client.get(f"{ADMIN}/", follow_redirects=False).status_code == 303


def test_without_a_password_the_console_answers_on_loopback_only_and_says_so(env):
    open_web = make_web(env)
    for ip in ("127.0.0.1", "::1"):
        home = client(open_web, ip).get(f"{ADMIN}/")
        assert home.status_code == 200
        assert "No console password is set, so this console answers only on this machine" in home.text
        assert "Sign out" not in home.text
    assert client(open_web, "127.0.0.1").get(f"{ADMIN}/login", follow_redirects=False).headers["location"] == (
        f"{ADMIN}/")
    for browser in (open_web.client, client(open_web, "192.0.2.9"),
                    client(open_web, "127.0.0.1", headers={"X-Forwarded-For": "203.0.113.5"}),
                    client(open_web, "127.0.0.1", headers={"Forwarded": "for=203.0.113.5"})):
        refused = browser.get(f"{ADMIN}/")
        assert refused.status_code == 403
        assert "The editors&#39; console is not set up" in refused.text
        assert "run `newsletter admin hash-password`, put the hash it prints in [web] admin_password_hash" in (
            refused.text)
    assert open_web.client.post(f"{ADMIN}/login", data={"password": "x"}).status_code == 403


def test_with_a_password_loopback_signs_in_too(web):
    assert client(web, "127.0.0.1").get(f"{ADMIN}/", follow_redirects=False).status_code == 303


def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(web):
    add(web, "ana@example.org", "weekly")
    record = send_issue(web, "weekly", FIXED_NOW)
    make_unknown(web, record.id, 1)
    sign_in(web)
    token = csrf(web)
    for data in ({}, {"csrf": "x" + token}):
        posts = {f"{ADMIN}/schedule/weekly/pause": {},
                 f"{ADMIN}/schedule/weekly/one-off": {"at": "2026-01-06T09:30"},
                 f"{ADMIN}/issue/{record.id}/retry-unknown": {"confirm": "yes"},
                 f"{ADMIN}/preview/weekly/test": {"to": "editor@example.org"},
                 f"{ADMIN}/logout": {}}
        for url, fields in posts.items():
            answer = web.client.post(url, data={**fields, **data}, follow_redirects=False)
            assert answer.status_code == 403, url
            assert "did not come from the console" in answer.text
    assert state_of(web, "weekly") is None
    assert one_offs(web, "weekly") == []
    assert ledger.counts(web.store, record.id) == {"unknown": 1}
    assert not (web.outbox / "weekly-2026-01-05-test").exists()
    assert web.client.get(f"{ADMIN}/", follow_redirects=False).status_code == 200  # still signed in
    login = web.client.post(f"{ADMIN}/login", data={"password": PASSWORD}, follow_redirects=False)
    assert login.status_code == 403
    assert "nl_admin" not in login.headers.get("set-cookie", "")


# --- what the pages show -----------------------------------------------------------------------------------

def test_the_first_page_shows_each_schedule_next_fires_one_offs_and_the_issue_a_send_would_make(web):
    sign_in(web)
    schedule.add_one_off(web.store, web.config, "lab", datetime(2026, 1, 6, 9, 30, tzinfo=LONDON), FIXED_NOW)
    page = web.client.get(f"{ADMIN}/").text
    weekly = page[page.index('id="weekly"'):page.index('id="lab"')]
    assert "<code>0 8 * * mon</code> in Europe/London" in weekly
    assert ('<ul class="fires"><li>2026-01-05 08:00 GMT</li><li>2026-01-12 08:00 GMT</li>'
            "<li>2026-01-19 08:00 GMT</li></ul>") in weekly
    assert "Issue 1 for 2026-01-05: 10 post(s);\nsections: Culture (2), Science (3), Technology (3), Travel (2)." in weekly
    assert '<q class="subject">Harbourlight Weekly: Measuring sea level by hand and 9 more</q>' in weekly
    lab = page[page.index('id="lab"'):]
    assert "Schedule: none (sent by hand or one-off)" in lab
    assert re.search(r'<ul class="one-offs"><li>2026-01-06 09:30 GMT\n<form method="post" '
                     r'action="/news/admin/one-off/\d+/cancel"', lab)
    assert "sections: Technology (3), Science (3)." in lab


def test_the_preview_page_frames_the_digest_at_600_and_375_pixels_with_text_headers_and_checks(web):
    sign_in(web)
    page = web.client.get(f"{ADMIN}/preview/weekly")
    assert page.status_code == 200
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    frames = re.findall(r'<iframe src="([^"]+)" width="(\d+)"', page.text)
    assert frames == [(f"{ADMIN}/preview/weekly/frame", "600"), (f"{ADMIN}/preview/weekly/frame", "375")]
    framed = web.client.get(frames[0][0])
    assert "frame-ancestors 'self'" in framed.headers["content-security-policy"]
    assert "script-src" not in framed.headers["content-security-policy"]
    assert framed.headers["x-frame-options"] == "SAMEORIGIN"
    assert page.headers["x-frame-options"] == "DENY"
    size = len(framed.content)
    assert f"The HTML is {round(size / 1024, 1)} KB; Gmail clips messages over 102 KB." in page.text
    offered = re.findall(r'name="categories" value="([^"]+)"', page.text)
    assert offered == ["Culture", "Science", "Technology", "Travel"]  # weekly takes every category: its posts'
    assert "<summary>Plain-text part</summary>" in page.text
    assert "Measuring sea level by hand" in page.text[page.text.index('<pre class="text">'):]
    headers = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", page.text))
    assert headers["To"] == "Sample Reader &lt;reader@example.org&gt;"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["Subject"] == "Harbourlight Weekly: Measuring sea level by hand and 9 more"


def test_the_preview_lists_the_pre_send_checks(web):
    """A site without a URL makes relative image URLs: the check the send would print is on the page."""
    config = dataclasses.replace(web.config, site=dataclasses.replace(web.config.site, url=""))
    config_open = dataclasses.replace(config, web=dataclasses.replace(config.web, admin_password_hash=None))
    browser = TestClient(create_app(config_open, store=web.store, clock=lambda: FIXED_NOW),
                         base_url="http://testserver", client=("127.0.0.1", 1))
    page = browser.get(f"{ADMIN}/preview/weekly").text
    checks = page[page.index('<aside class="card checks">'):page.index("</aside>")]
    assert "has no absolute URL; set [site] url</li>" in checks
    assert "No image without an absolute URL" not in checks


@pytest.mark.parametrize("newsletter,query,arguments", [
    ("weekly", "", []),
    ("lab", "?categories=Technology", ["--categories", "Technology"]),
    ("weekly", "?categories=Travel&categories=Culture", ["--categories", "Travel", "--categories", "Culture"]),
    ("lab", "?as=ana%40example.org", ["--as", "ana@example.org"]),
])
def test_the_console_preview_is_byte_for_byte_what_the_cli_preview_writes(web, newsletter, query, arguments):
    add(web, "ana@example.org", "lab", categories=("Science",))
    sign_in(web)
    framed = web.client.get(f"{ADMIN}/preview/{newsletter}/frame{query}")
    assert framed.status_code == 200
    out = web.env.tmp / "cli.html"
    result = CliRunner().invoke(cli, ["--config", str(ROOT / "newsletter.toml"), "--now", FIXED_NOW.isoformat(),
                                      "preview", newsletter, *arguments, "--out", str(out)],
                                env={"NEWSLETTER_DATABASE_URL": web.config.database_url,
                                     "NEWSLETTER_WEB_BASE_URL": BASE}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert framed.content == out.read_bytes()
    if arguments[:1] == ["--as"]:  # the subscriber's own links, and only their category
        assert "/news/unsubscribe/" + web.tokens.make("unsubscribe", held_id(web, "ana@example.org"), "lab") in (
            framed.text)
        assert "Technology" not in re.sub(r"<[^>]+>", "", framed.text.split("<body", 1)[1]).split("Science", 1)[0]


def held_id(web, address: str) -> int:
    from newsletter import subscribers

    return subscribers.find(web.store, address).id


def test_a_test_copy_lands_once_in_the_outbox_and_its_links_unsubscribe_nobody(web):
    ana = add(web, "ana@example.org", "weekly")
    sign_in(web)
    answer = web.client.post(f"{ADMIN}/preview/weekly/test", data={"to": "Editor@Example.org", "csrf": csrf(web)})
    assert answer.status_code == 200
    assert ('<p class="notice" id="notice">A test copy of 2026-01-05 (10 post(s)) was sent to Editor@example.org '
            "through outbox. Its links unsubscribe nobody.</p>") in answer.text
    written = sorted(web.outbox.rglob("*.eml"))
    assert [p.relative_to(web.outbox).parts[0] for p in written] == ["weekly-2026-01-05-test"]
    message = email.message_from_bytes(written[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "Editor@example.org"
    link = re.search(r"<(http://testserver/news/unsubscribe/[^>]+)>", message["List-Unsubscribe"]).group(1)
    token = link.rsplit("/", 1)[1]
    assert web.tokens.verify("unsubscribe", token).subscriber_id == 0
    clicked = web.client.post(link.replace("http://testserver", ""), data={"List-Unsubscribe": "One-Click"})
    assert clicked.text == "A test copy's link: nobody was unsubscribed.\n"
    assert held(web, "ana@example.org") == {"weekly": ()}
    assert ana and ledger.list_issues(web.store) == []  # the ledger is untouched


def test_a_test_copy_the_provider_refuses_is_reported_with_its_answer(web):
    from newsletter.config import SmtpConfig

    from .smtp_server import SmtpServer

    with SmtpServer() as server:
        server.sink.faults["editor@example.org"].append("550 5.1.1 no such mailbox")
        config = dataclasses.replace(web.config, delivery=dataclasses.replace(
            web.config.delivery, provider="smtp",
            smtp=SmtpConfig(host="127.0.0.1", port=server.port, security="none", connections=1, timeout=5)))
        app = create_app(config, store=web.store, clock=lambda: FIXED_NOW)
        browser = TestClient(app, base_url="http://testserver")
        sign_in(web, browser=browser)
        answer = browser.post(f"{ADMIN}/preview/weekly/test",
                              data={"to": "editor@example.org", "csrf": csrf(web, browser)})
    assert answer.status_code == 502
    error = re.search(r'<p class="notice error" id="error">([^<]+)</p>', answer.text).group(1)
    assert error.startswith("The test copy was not sent: the test copy to editor@example.org was not sent: ")
    assert "550" in error and "no such mailbox" in error
    sign_in(web)
    bad = web.client.post(f"{ADMIN}/preview/weekly/test", data={"to": "not an address", "csrf": csrf(web)})
    assert bad.status_code == 400
    assert "&#39;not an address&#39; cannot be sent to" in bad.text


# --- past issues and retrying unknown deliveries -----------------------------------------------------------

def make_unknown(web, issue_id: int, count: int, reason: str = "the connection dropped after DATA") -> None:
    with web.store.engine.begin() as conn:
        ids = conn.execute(sa.select(deliveries.c.id).where(deliveries.c.issue_id == issue_id)
                           .order_by(deliveries.c.id).limit(count)).scalars().all()
        conn.execute(deliveries.update().where(deliveries.c.id.in_(ids)).values(status="unknown", last_error=reason))


def test_issue_pages_show_counts_reasons_and_events(web):
    for name in ("ana", "ben", "cy"):
        add(web, f"{name}@example.org", "weekly")
    record = send_issue(web, "weekly", FIXED_NOW)
    make_unknown(web, record.id, 1)
    from newsletter.events import Event, record_events

    first = ledger.open_deliveries(web.store, record.id)[0]["delivery"]
    record_events(web.store, [Event("e1", "sendgrid", first + 1, "delivered", FIXED_NOW),
                              Event("e2", "sendgrid", first + 2, "open", FIXED_NOW)], FIXED_NOW)
    sign_in(web)
    listing = web.client.get(f"{ADMIN}/issues/weekly").text
    assert (f'<tr><td><a href="{ADMIN}/issue/{record.id}">{record.id}</a></td><td>2026-01-05</td><td>1</td>'
            "<td>done</td>\n<td>sent 2, unknown 1</td></tr>") in listing
    page = web.client.get(f"{ADMIN}/issue/{record.id}").text
    assert "<tr><td>sent</td><td>2</td></tr>\n<tr><td>unknown</td><td>1</td></tr>\n<tr><td>total</td><td>3</td></tr>" in page
    assert '<p class="events">Reported: delivered 1, open 1;' in page
    assert ("<tr><td>unknown</td><td>ana@example.org</td><td>the connection dropped after DATA</td></tr>") in page
    assert "1 delivery(ies) are unknown" in page
    assert web.client.get(f"{ADMIN}/issue/999").status_code == 404


def test_retry_unknown_asks_first_then_makes_them_pending_and_the_next_send_sends_them(web):
    for name in ("ana", "ben", "cy", "dee"):
        add(web, f"{name}@example.org", "weekly")
    record = send_issue(web, "weekly", FIXED_NOW)
    make_unknown(web, record.id, 3)
    sign_in(web)
    url = f"{ADMIN}/issue/{record.id}/retry-unknown"
    asked = web.client.post(url, data={"csrf": csrf(web)})
    assert asked.status_code == 200
    assert "<h1>Send the unknown deliveries again?</h1>" in asked.text
    assert "has 3 delivery(ies) whose outcome is\nunknown" in asked.text
    assert ledger.counts(web.store, record.id) == {"sent": 1, "unknown": 3}
    done = web.client.post(url, data={"csrf": csrf_of(asked.text), "confirm": "yes"})
    assert done.status_code == 200
    assert "<h1>3 delivery(ies) are pending again</h1>" in done.text
    assert "The next send of weekly sends them before anything else" in done.text
    assert ledger.counts(web.store, record.id) == {"sent": 1, "pending": 3}
    assert [i["status"] for i in ledger.list_issues(web.store)] == ["unfinished"]
    send_issue(web, "weekly", FIXED_NOW + timedelta(days=7))  # the next issue's send finishes this one first
    assert ledger.counts(web.store, record.id) == {"sent": 4}


# --- the schedule ------------------------------------------------------------------------------------------

def test_pause_and_resume_change_the_schedule_state(web):
    sign_in(web)
    paused = web.client.post(f"{ADMIN}/schedule/weekly/pause", data={"csrf": csrf(web)})
    assert "<h1>Harbourlight Weekly is paused</h1>" in paused.text
    assert state_of(web, "weekly").paused is True
    assert state_of(web, "weekly").paused_at == FIXED_NOW
    assert state_of(web, "lab") is None
    again = web.client.post(f"{ADMIN}/schedule/weekly/pause", data={"csrf": csrf(web)})
    assert "<h1>Harbourlight Weekly was paused already</h1>" in again.text
    assert '<strong class="state">paused</strong>' in web.client.get(f"{ADMIN}/").text
    resumed = web.client.post(f"{ADMIN}/schedule/weekly/resume", data={"csrf": csrf(web)})
    assert "<h1>Harbourlight Weekly is resumed</h1>" in resumed.text
    assert state_of(web, "weekly").paused is False
    assert web.client.post(f"{ADMIN}/schedule/nope/pause", data={"csrf": csrf(web)}).status_code == 404


def test_a_one_off_is_read_in_the_newsletters_zone_and_bad_or_past_times_are_refused(web):
    sign_in(web)
    url = f"{ADMIN}/schedule/lab/one-off"
    for text, why in (("next tuesday", "is not a date and time; give one like 2026-01-05T09:30 (in Europe/London)"),
                      ("2026-01-05T06:59", "2026-01-05 06:59 GMT is in the past (it is now 2026-01-05 07:00 GMT)")):
        refused = web.client.post(url, data={"at": text, "csrf": csrf(web)})
        assert refused.status_code == 400
        assert why in refused.text.replace("&#39;", "'")
    assert one_offs(web, "lab") == []
    made = web.client.post(url, data={"at": "2026-07-06T09:30", "csrf": csrf(web)})
    assert made.status_code == 200
    assert "<h1>Harbourlight Lab Notes will be sent at 2026-07-06 09:30 BST</h1>" in made.text
    assert one_offs(web, "lab") == [("2026-07-06T08:30:00+00:00", "scheduled")]
    twice = web.client.post(url, data={"at": "2026-07-06T09:30", "csrf": csrf(web)})
    assert twice.status_code == 409
    fire = schedule.list_fires(web.store, newsletter="lab")[0]
    cancelled = web.client.post(f"{ADMIN}/one-off/{fire.id}/cancel", data={"csrf": csrf(web)})
    assert "<h1>The one-off send of lab at 2026-07-06 09:30 BST is cancelled</h1>" in cancelled.text
    assert one_offs(web, "lab") == [("2026-07-06T08:30:00+00:00", "cancelled")]
    assert web.client.post(f"{ADMIN}/one-off/{fire.id}/cancel", data={"csrf": csrf(web)}).status_code == 409
    assert web.client.post(f"{ADMIN}/one-off/9999/cancel", data={"csrf": csrf(web)}).status_code == 404


# --- set-up: the hash and its configuration ----------------------------------------------------------------

def test_hash_password_reads_standard_input_and_prints_only_a_hash_that_verifies():
    result = CliRunner().invoke(cli, ["admin", "hash-password"], input="s3cret words\n")
    assert result.exit_code == 0
    printed = result.stdout.strip()
    assert result.stdout == printed + "\n"
    assert printed.startswith("$argon2id$")
    assert password_matches(printed, "s3cret words") and not password_matches(printed, "s3cret word")
    empty = CliRunner().invoke(cli, ["admin", "hash-password"], input="\n")
    assert empty.exit_code == 2
    assert empty.stdout == ""


def test_the_hash_comes_from_the_config_or_the_environment_and_a_bad_one_is_named(tmp_path, monkeypatch):
    base = (ROOT / "newsletter.toml").read_text().replace('source = "site"', f'source = "{ROOT / "site"}"')
    path = tmp_path / "newsletter.toml"
    path.write_text(base + f'\n[web]\nadmin_password_hash = "{HASH}"\n')
    assert load_config(path).web.admin_password_hash == HASH
    other = hash_password("other")
    monkeypatch.setenv("NEWSLETTER_ADMIN_PASSWORD_HASH", other)
    assert load_config(path).web.admin_password_hash == other
    monkeypatch.setenv("NEWSLETTER_ADMIN_PASSWORD_HASH", "hunter2")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert [p.message for p in raised.value.problems] == [
        "web.admin_password_hash: (from NEWSLETTER_ADMIN_PASSWORD_HASH) is not an argon2 hash (it must start with "
        "$argon2id$); make one with `newsletter admin hash-password`"]
    monkeypatch.delenv("NEWSLETTER_ADMIN_PASSWORD_HASH")
    path.write_text(base + '\n[web]\nadmin_password_hash = "$argon2id$v=19$m=65536,t=3,p=4$broken"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems[0].message.startswith("web.admin_password_hash: is not a usable argon2 hash (")
    assert "broken" not in str(raised.value.problems[0])  # the value is never printed
    path.write_text(base)
    assert load_config(path).web.admin_password_hash is None


def test_the_clock_is_the_apps_not_the_machines(web):
    """Every moment on the pages comes from the app's clock: moved a week on, the next issue moves too."""
    sign_in(web)
    web.clock.now = datetime(2026, 1, 12, 7, 0, tzinfo=timezone.utc)
    assert sign_in(web).status_code == 303
    page = web.client.get(f"{ADMIN}/").text
    assert "As of 2026-01-12 07:00 GMT." in page
    assert "<li>2026-01-12 08:00 GMT</li><li>2026-01-19 08:00 GMT</li><li>2026-01-26 08:00 GMT</li>" in page
