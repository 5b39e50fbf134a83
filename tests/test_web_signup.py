"""Sign-up with double opt-in through `newsletter serve`, on SQLite and PostgreSQL: nothing is active before the
address confirms; the link is signed and expires; one subscriber per address whatever the case; nothing tells
the form whether the address was subscribed; honeypot, limits per address and per IP, body size, origins and
`next=`."""

from __future__ import annotations

import io
import logging

import pytest

from newsletter import preferences, signup, subscribers
from newsletter.store import signups

from .web_helpers import add, confirmation_link, csrf_of, held, make_web, path


@pytest.fixture
def web(env):
    return make_web(env)


def sign_up(web, address="new@example.org", newsletters=("lab",), categories=(), **extra):
    form = {"email": address, "name": "New Reader", "newsletters": list(newsletters),
            "categories": list(categories), "csrf": csrf_of(web.client.get("/news/subscribe").text), **extra}
    return web.client.post("/news/subscribe", data=form, follow_redirects=False)


def confirm(web, address="new@example.org"):
    link = confirmation_link(web.outbox, address).replace("http://testserver", "")
    page = web.client.get(link)
    return link, page


def test_a_sign_up_is_active_only_once_the_address_confirms_with_the_button(web):
    answer = sign_up(web, categories=["lab:Science"])
    assert (answer.status_code, answer.headers["location"]) == (303, "/news/subscribe/sent")
    assert "Check your inbox" in web.client.get("/news/subscribe/sent").text
    assert subscribers.find(web.store, "new@example.org") is None
    link, page = confirm(web)
    assert link.startswith("/news/confirm/")
    assert page.status_code == 200 and "<button" in page.text and "Harbourlight Lab Notes (Science)" in page.text
    assert subscribers.find(web.store, "new@example.org") is None  # a GET (a link scanner) confirms nothing
    assert web.client.post(link, data={}).status_code == 403
    web.clock.advance(minutes=5)
    done = web.client.post(link, data={"csrf": csrf_of(page.text)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    found = subscribers.find(web.store, "new@example.org")
    assert (found.status, found.name, found.source, found.newsletters) == ("active", "New Reader", "web",
                                                                          {"lab": ("Science",)})
    again = web.client.post(link, data={"csrf": csrf_of(page.text)})
    assert again.status_code == 200 and "Already confirmed" in again.text
    [record] = signup.of_address(web.store, "NEW@example.org")
    assert (record.ip, record.created_at, record.confirmed_at) == ("testclient", web.env.now,
                                                                   web.env.now.replace(minute=5))


def test_the_confirmation_email_goes_through_the_outbox_with_its_link(web):
    sign_up(web, newsletters=("weekly", "lab"))
    [eml] = (web.outbox / "signup").glob("*.eml")
    data = eml.read_bytes().decode()
    assert "Subject: Confirm your subscription to Harbourlight Weekly, Harbourlight Lab Notes" in data
    assert "To: New Reader <new@example.org>" in data
    assert "List-Unsubscribe" not in data
    assert confirmation_link(web.outbox, "new@example.org").startswith("http://testserver/news/confirm/")


def test_the_link_expires_after_confirm_expiry(env):
    web = make_web(env, confirm_expiry=__import__("datetime").timedelta(days=2))
    sign_up(web)
    link = confirmation_link(web.outbox, "new@example.org").replace("http://testserver", "")
    token = csrf_of(web.client.get(link).text)
    web.clock.advance(days=2, seconds=1)
    expired = web.client.get(link)
    assert expired.status_code == 410 and "expired" in expired.text
    assert web.client.post(link, data={"csrf": token}).status_code == 410
    assert subscribers.find(web.store, "new@example.org") is None


@pytest.mark.parametrize("change", ["forged", "truncated", "altered"])
def test_bad_confirmation_links_get_400_and_change_nothing(web, change):
    sign_up(web)
    link = confirmation_link(web.outbox, "new@example.org").replace("http://testserver", "")
    bad = {"forged": "/news/confirm/1.0123456789abcdef0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
           "truncated": link[:-4], "altered": link.replace("/confirm/1.", "/confirm/2.")}[change]
    assert web.client.get(bad).status_code == 400
    token = csrf_of(web.client.get("/news/subscribe").text)
    assert web.client.post(bad, data={"csrf": token}).status_code == 400
    assert subscribers.find(web.store, "new@example.org") is None


def test_the_same_address_in_any_case_makes_one_subscriber_and_the_answer_never_tells(web):
    add(web, "ana@example.org", "weekly")
    first = sign_up(web, "ANA@Example.org", newsletters=("lab",))
    unknown = sign_up(web, "someone@example.org", newsletters=("lab",))
    assert (first.status_code, first.headers["location"]) == (unknown.status_code, unknown.headers["location"])
    assert first.text == unknown.text
    _, page = confirm(web, "ANA@example.org")
    link = confirmation_link(web.outbox, "ANA@example.org").replace("http://testserver", "")
    web.client.post(link, data={"csrf": csrf_of(page.text)})
    assert [s.email for s in subscribers.iter_subscribers(web.store)] == ["ana@example.org"]
    assert held(web, "ana@example.org") == {"lab": (), "weekly": ()}


def test_someone_who_unsubscribed_comes_back_only_by_confirming_again(web):
    ana = add(web, "ana@example.org", "lab")
    web.client.post(path(web, "unsubscribe", ana, "lab"), data={"List-Unsubscribe": "One-Click"})
    sign_up(web, "ana@example.org")
    assert held(web, "ana@example.org") == {}
    link, page = confirm(web, "ana@example.org")
    web.client.post(link, data={"csrf": csrf_of(page.text)})
    assert held(web, "ana@example.org") == {"lab": ()}
    assert subscribers.find(web.store, "ana@example.org").status == "active"
    [left] = preferences.departures(web.store, ana)
    assert left.rejoined_at == web.env.now


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_a_bounced_or_complained_address_is_never_mailed_and_the_form_does_not_tell(web, status, caplog):
    add(web, "ana@example.org", "lab", status=status)
    answer = sign_up(web, "ana@example.org")
    assert (answer.status_code, answer.headers["location"]) == (303, "/news/subscribe/sent")
    assert not (web.outbox / "signup").exists()
    assert f"a***@example.org is {status}" in caplog.text


def test_the_honeypot_refuses_with_a_page_and_a_log_line(web, caplog):
    answer = sign_up(web, website="http://spam.example")
    assert answer.status_code == 400 and "as robots do" in answer.text
    assert "refused POST /news/subscribe with 400" in caplog.text
    assert not (web.outbox / "signup").exists()


def test_invalid_input_is_refused_with_the_reason_escaped(web):
    answer = sign_up(web, "<script>@x")
    assert answer.status_code == 400
    assert "is not a valid address" in answer.text and "<script>" not in answer.text
    assert "&#39;&lt;script&gt;@x&#39;" in answer.text
    assert "no newsletter called" in sign_up(web, newsletters=("nope",)).text
    assert "not one of newsletter" in sign_up(web, categories=["lab:Cooking"]).text
    assert "at least one newsletter" in sign_up(web, newsletters=()).text
    assert sign_up(web, newsletters=("weekly",), categories=["lab:Science"]).status_code == 303  # dropped


def test_signups_per_address_are_limited_and_refusals_say_why(env):
    web = make_web(env, signup_limit_address=2)
    assert [sign_up(web, f"Ana@{'example.org'}").status_code for _ in range(2)] == [303, 303]
    third = sign_up(web, "ANA@example.org")
    assert third.status_code == 429 and "Too many sign-ups for this address" in third.text
    assert sign_up(web, "ben@example.org").status_code == 303
    web.clock.advance(hours=1, seconds=1)
    assert sign_up(web, "ana@example.org").status_code == 303


def test_signups_per_client_ip_are_limited(env):
    web = make_web(env, signup_limit_ip=3)
    codes = [sign_up(web, f"reader{i}@example.org").status_code for i in range(4)]
    assert codes == [303, 303, 303, 429]
    assert "Too many sign-ups from your network" in sign_up(web, "other@example.org").text


def test_a_body_over_max_body_gets_413_with_a_page(env):
    web = make_web(env, max_body=2048)
    answer = web.client.post("/news/subscribe", data={"email": "a@example.org", "name": "x" * 4000})
    assert answer.status_code == 413 and "The form is too large" in answer.text
    assert web.client.post("/news/subscribe", content=io.BytesIO(b"email=" + b"x" * 5000),
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 413


def test_the_blogs_form_posts_by_origin_and_other_origins_are_refused(web):
    form = {"email": "new@example.org", "newsletters": "lab"}
    blog = web.client.post("/news/subscribe", data=form, headers={"Origin": "https://harbourlight.example.org"},
                           follow_redirects=False)
    assert blog.status_code == 303
    for origin in ("https://evil.example", "null", None):
        headers = {"Origin": origin} if origin else {}
        refused = web.client.post("/news/subscribe", data=form, headers=headers)
        assert refused.status_code == 403 and "did not come from this site or the blog" in refused.text
    with web.store.engine.connect() as conn:
        assert conn.execute(signups.select()).all().__len__() == 1


@pytest.mark.parametrize(("target", "expected"), [
    ("https://harbourlight.example.org/thanks/", "https://harbourlight.example.org/thanks/"),
    ("/news/archive/lab/", "http://testserver/news/archive/lab/"),
    ("http://testserver/elsewhere", "http://testserver/elsewhere"),
    ("https://evil.example/phish", "/news/subscribe/sent"),
    ("//evil.example/phish", "/news/subscribe/sent"),
    ("/\\evil.example", "/news/subscribe/sent"),
    ("javascript:alert(1)", "/news/subscribe/sent"),
    ("https://harbourlight.example.org.evil.example/", "/news/subscribe/sent"),
])
def test_next_redirects_only_to_our_own_hosts(web, target, expected):
    answer = sign_up(web, next=target)
    assert (answer.status_code, answer.headers["location"]) == (303, expected)


def test_pending_signups_and_consent_evidence_are_reported_and_exported(web):
    sign_up(web, "new@example.org")
    sign_up(web, "late@example.org")
    link, page = confirm(web)
    web.client.post(link, data={"csrf": csrf_of(page.text)})
    assert [s.email for s in signup.pending(web.store, web.config, web.clock.now)] == ["late@example.org"]
    out = io.StringIO()
    subscribers.export_csv(web.store, out)
    assert out.getvalue().splitlines() == [
        "email,name,newsletters,categories,status,signed_up_at,signup_ip",
        "new@example.org,New Reader,lab,,active,2026-01-05T07:00:00+00:00,testclient",
    ]


def test_an_import_never_re_adds_someone_who_left_without_resubscribe(web):
    ana = add(web, "ana@example.org", "weekly", "lab")
    web.client.post(path(web, "unsubscribe", ana, "lab"), data={"List-Unsubscribe": "One-Click"})
    text = "email,newsletters\nana@example.org,weekly;lab\n"
    report = subscribers.import_csv(web.store, web.config, io.StringIO(text), "x.csv", web.env.now)
    assert report.kept_unsubscribed == ["ana@example.org (lab)"]
    assert held(web, "ana@example.org") == {"weekly": ()}
    subscribers.import_csv(web.store, web.config, io.StringIO(text), "x.csv", web.env.now, resubscribe=True)
    assert held(web, "ana@example.org") == {"lab": (), "weekly": ()}
    assert preferences.departures(web.store, ana)[0].rejoined_at == web.env.now


def test_log_lines_of_a_sign_up_hold_no_token_and_no_full_address(web, caplog):
    caplog.set_level(logging.INFO)
    sign_up(web)
    link, page = confirm(web)
    web.client.post(link, data={"csrf": csrf_of(page.text)})
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("newsletter"))
    assert "confirmation sent to n***@example.org" in logged
    assert "GET /news/confirm/<token> 200" in logged
    assert link.rsplit("/", 1)[1][:12] not in logged and "new@example.org" not in logged


def test_confirming_after_the_address_bounced_is_refused_with_why(web):
    add(web, "ana@example.org", "weekly")
    sign_up(web, "ana@example.org", newsletters=("lab",))
    subscribers.set_status(web.store, "ana@example.org", "bounced", web.env.now)
    link, page = confirm(web, "ana@example.org")
    refused = web.client.post(link, data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 409 and "Mail to this address bounced" in refused.text
    assert held(web, "ana@example.org") == {"weekly": ()}
    assert subscribers.find(web.store, "ana@example.org").status == "bounced"
