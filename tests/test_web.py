"""`newsletter serve`, rule by rule, with Starlette's test client on SQLite and PostgreSQL: one-click and page
unsubscribes, preferences, tokens, CSRF, headers, redirects and logs. Sign-up is in test_web_signup.py, the
archive in test_web_archive.py."""

from __future__ import annotations

import logging

import pytest

from newsletter import preferences, subscribers
from newsletter.store import subscriptions, unsubscribes

from .web_helpers import add, csrf_of, held, make_web, path

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def web(env):
    return make_web(env)


def departures(web, address):
    return [(d.newsletter, d.how, d.rejoined_at is None)
            for d in preferences.departures(web.store, subscribers.find(web.store, address).id)]


def test_one_click_post_unsubscribes_from_that_newsletter_only_answers_200_and_is_idempotent(web):
    ana = add(web, "ana@example.org", "weekly", "lab")
    url = path(web, "unsubscribe", ana, "lab")
    first = web.client.post(url, data=ONE_CLICK, follow_redirects=False)
    assert (first.status_code, first.text) == (200, "Unsubscribed.\n")
    assert "set-cookie" not in first.headers
    assert held(web, "ana@example.org") == {"weekly": ()}
    again = web.client.post(url, content=b"List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (again.status_code, again.text) == (200, "Unsubscribed.\n")
    assert departures(web, "ana@example.org") == [("lab", "one-click", True)]
    assert subscribers.find(web.store, "ana@example.org").status == "active"


def test_one_click_works_as_multipart_too_and_leaving_the_last_newsletter_makes_them_unsubscribed(web):
    ben = add(web, "ben@example.org", "lab")
    answer = web.client.post(path(web, "unsubscribe", ben, "lab"), files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200
    assert held(web, "ben@example.org") == {}
    assert subscribers.find(web.store, "ben@example.org").status == "unsubscribed"


def test_a_get_never_unsubscribes_it_shows_one_button_and_a_way_back(web):
    ana = add(web, "ana@example.org", "weekly", "lab")
    page = web.client.get(path(web, "unsubscribe", ana, "lab"))
    assert page.status_code == 200
    assert held(web, "ana@example.org") == {"lab": (), "weekly": ()}
    assert page.text.count("<button") == 1
    assert "Unsubscribe from Harbourlight Lab Notes?" in page.text
    assert "You stay subscribed to Harbourlight Weekly." in page.text
    assert f'href="{path(web, "preferences", ana, "lab")}"' in page.text
    assert page.headers["cache-control"] == "no-store"


def test_the_page_button_needs_its_csrf_token_and_the_way_back_rejoins(web):
    ana = add(web, "ana@example.org", "weekly", "lab")
    url = path(web, "unsubscribe", ana, "lab")
    token = csrf_of(web.client.get(url).text)
    forged = web.client.post(url, data={"action": "unsubscribe", "csrf": "x" + token})
    assert forged.status_code == 403
    assert "did not come from this site" in forged.text
    assert web.client.post(url, data={"action": "unsubscribe"}).status_code == 403
    assert held(web, "ana@example.org") == {"lab": (), "weekly": ()}
    done = web.client.post(url, data={"action": "unsubscribe", "csrf": token})
    assert done.status_code == 200
    assert "You have left Harbourlight Lab Notes" in done.text
    assert departures(web, "ana@example.org") == [("lab", "page", True)]
    back = web.client.post(path(web, "preferences", ana, "lab"),
                           data={"action": "rejoin", "newsletter": "lab", "csrf": csrf_of(done.text)})
    assert back.status_code == 200
    assert "Welcome back to Harbourlight Lab Notes." in back.text
    assert held(web, "ana@example.org") == {"lab": (), "weekly": ()}
    assert departures(web, "ana@example.org") == [("lab", "page", False)]


def test_the_csrf_cookie_is_httponly_and_samesite(web):
    ana = add(web, "ana@example.org", "lab")
    cookie = web.client.get(path(web, "preferences", ana, "lab")).headers["set-cookie"]
    assert cookie.startswith("nl_csrf=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/news" in cookie


@pytest.mark.parametrize("change", ["forged", "truncated", "altered", "other purpose", "test copy of another"])
def test_bad_tokens_get_4xx_and_change_nothing(web, change):
    ana = add(web, "ana@example.org", "weekly", "lab")
    good = web.tokens.make("unsubscribe", ana, "lab")
    token = {
        "forged": f"{ana}.lab.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "truncated": good[:-3],
        "altered": good.replace(f"{ana}.lab", f"{ana}.weekly", 1),
        "other purpose": web.tokens.make("preferences", ana, "lab"),
        "test copy of another": good.replace(f"{ana}.", "0.", 1),
    }[change]
    for method, url in (("post", f"/news/unsubscribe/{token}"), ("get", f"/news/unsubscribe/{token}")):
        answer = getattr(web.client, method)(url, **({"data": ONE_CLICK} if method == "post" else {}))
        assert answer.status_code == 400
        assert "This link is not valid" in answer.text
    if change == "other purpose":
        token = good  # an unsubscribe token does not open the preferences either
    preferences_answer = web.client.get(f"/news/preferences/{token}")
    assert preferences_answer.status_code == 400
    assert held(web, "ana@example.org") == {"lab": (), "weekly": ()}


def test_a_token_for_one_subscriber_never_acts_on_another(web):
    ana = add(web, "ana@example.org", "lab")
    add(web, "ben@example.org", "lab")
    assert web.client.post(path(web, "unsubscribe", ana, "lab"), data=ONE_CLICK).status_code == 200
    assert held(web, "ana@example.org") == {}
    assert held(web, "ben@example.org") == {"lab": ()}


def test_a_test_copys_link_changes_nothing(web):
    add(web, "ana@example.org", "lab")
    test_token = web.tokens.make("unsubscribe", 0, "lab")
    answer = web.client.post(f"/news/unsubscribe/{test_token}", data=ONE_CLICK)
    assert (answer.status_code, answer.text) == (200, "A test copy's link: nobody was unsubscribed.\n")
    assert "from a test copy" in web.client.get(f"/news/preferences/{web.tokens.make('preferences', 0, 'lab')}").text
    assert held(web, "ana@example.org") == {"lab": ()}


def test_preferences_change_categories_leave_one_and_leave_all(web):
    ana = add(web, "ana@example.org", "weekly", "lab")
    url = path(web, "preferences", ana, "weekly")
    page = web.client.get(url)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert 'value="lab:Science"' in page.text and 'value="lab:Technology"' in page.text
    token = csrf_of(page.text)
    saved = web.client.post(url, data={"action": "save", "csrf": token, "newsletters": ["lab"],
                                       "categories": ["lab:science", "lab:Nonsense", "weekly:Travel"]})
    assert saved.status_code == 200
    assert "Saved." in saved.text
    assert held(web, "ana@example.org") == {"lab": ("Science",)}
    assert departures(web, "ana@example.org") == [("weekly", "preferences", True)]
    assert 'value="lab:Science" checked' in saved.text
    assert "You left on 5 January 2026" in saved.text
    gone = web.client.post(url, data={"action": "leave_all", "csrf": token})
    assert "You have left every newsletter." in gone.text
    assert held(web, "ana@example.org") == {}
    assert subscribers.find(web.store, "ana@example.org").status == "unsubscribed"
    back = web.client.post(url, data={"action": "save", "csrf": token, "newsletters": ["weekly"]})
    assert back.status_code == 200
    assert held(web, "ana@example.org") == {"weekly": ()}
    assert subscribers.find(web.store, "ana@example.org").status == "active"


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_rejoining_after_a_bounce_or_complaint_is_refused_with_a_clear_message(web, status):
    ana = add(web, "ana@example.org", "lab", status=status)
    web.client.post(path(web, "unsubscribe", ana, "lab"), data=ONE_CLICK)
    url = path(web, "preferences", ana, "lab")
    page = web.client.get(url)
    reason = "bounced" if status == "bounced" else "reported one of our messages as spam"
    assert reason in page.text
    refused = web.client.post(url, data={"action": "rejoin", "newsletter": "lab", "csrf": csrf_of(page.text)})
    assert refused.status_code == 409
    assert reason in refused.text and "write to the editors" in refused.text
    assert held(web, "ana@example.org") == {}
    assert subscribers.find(web.store, "ana@example.org").status == status


def test_preferences_need_the_csrf_token(web):
    ana = add(web, "ana@example.org", "lab")
    answer = web.client.post(path(web, "preferences", ana, "lab"), data={"action": "leave_all"})
    assert answer.status_code == 403
    assert held(web, "ana@example.org") == {"lab": ()}


def test_every_response_carries_the_security_headers(web):
    ana = add(web, "ana@example.org", "lab")
    for url in ("/news/", "/news/subscribe", path(web, "unsubscribe", ana, "lab"), "/news/nowhere",
                "/news/archive/weekly/"):
        headers = web.client.get(url).headers
        assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'self';"), url
        assert "script-src" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
    assert web.client.get("/news/archive/weekly/").headers["cache-control"] == "public, max-age=300"
    assert web.client.get("/news/").headers["cache-control"] == "no-store"


def test_unknown_pages_and_methods_get_a_page_that_says_so(web):
    missing = web.client.get("/news/nowhere")
    assert missing.status_code == 404 and "There is no page here." in missing.text
    assert web.client.put("/news/subscribe").status_code == 405


def test_the_app_answers_with_and_without_the_prefix_a_proxy_may_strip(web):
    ana = add(web, "ana@example.org", "weekly", "lab")
    token = web.tokens.make("unsubscribe", ana, "lab")
    assert web.client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200
    assert held(web, "ana@example.org") == {"weekly": ()}
    page = web.client.get("/subscribe")
    assert 'action="/news/subscribe"' in page.text and 'href="/news/assets/web.css"' in page.text


def test_tokens_never_reach_the_logs(web, caplog):
    caplog.set_level(logging.DEBUG)
    ana = add(web, "ana@example.org", "weekly", "lab")
    unsubscribe, prefs = path(web, "unsubscribe", ana, "lab"), path(web, "preferences", ana, "lab")
    web.client.get(unsubscribe)
    web.client.post(unsubscribe, data=ONE_CLICK)
    web.client.post(unsubscribe + "x", data=ONE_CLICK)
    web.client.post(prefs, data={"action": "save"})
    web.client.get(prefs + "?next=x")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("newsletter", "uvicorn")))
    assert "POST /news/unsubscribe/<token> 200" in logged
    assert "refused POST /news/unsubscribe/<token> with 400" in logged
    assert "subscriber %d left lab (one-click)" % ana in logged
    for secret in (unsubscribe.rsplit("/", 1)[1], prefs.rsplit("/", 1)[1], web.store.secret()):
        assert secret[:20] not in logged


def test_everything_shown_is_escaped(web):
    add(web, "ana@example.org", "lab")
    with web.store.engine.begin() as conn:
        conn.execute(subscribers.subscribers.update().values(email="<b>x</b>@example.org"))
    ana = subscribers.iter_subscribers(web.store).__next__().id
    page = web.client.get(path(web, "unsubscribe", ana, "lab")).text
    assert "&lt;b&gt;x&lt;/b&gt;@example.org" in page and "<b>x</b>" not in page


def test_unsubscribes_are_recorded_with_when_and_how(web):
    ana = add(web, "ana@example.org", "weekly", "lab")
    web.clock.advance(hours=3)
    web.client.post(path(web, "unsubscribe", ana, "lab"), data=ONE_CLICK)
    with web.store.engine.connect() as conn:
        row = conn.execute(unsubscribes.select()).one()
    assert (row.newsletter, row.how) == ("lab", "one-click")
    assert row.at.replace(tzinfo=None) == web.clock.now.replace(tzinfo=None)


def test_leaving_while_an_issue_is_being_sent_skips_every_delivery_claimed_afterwards(env):
    from newsletter import ledger
    from newsletter.deliver.outbox import OutboxProvider

    from .web_helpers import send_issue

    web = make_web(env)
    ids = [add(web, f"reader{i}@example.org", "weekly", "lab") for i in range(1, 4)]

    class LeavesMidSend(OutboxProvider):
        """The outbox, one message a batch; reader 3 presses one-click while reader 1's batch is out."""

        def send(self, batch):
            if batch.envelopes[0].recipient.email == "reader1@example.org":
                assert web.client.post(path(web, "unsubscribe", ids[2], "weekly"), data=ONE_CLICK).status_code == 200
            return super().send(batch)

    record = send_issue(web, "weekly", env.now, provider=LeavesMidSend(web.outbox, batch_size=1))
    rows = {r["email"]: (r["status"], r["error"]) for r in ledger.open_deliveries(web.store, record.id)}
    assert rows == {"reader3@example.org": ("skipped", "no longer subscribed to this newsletter")}
    assert ledger.counts(web.store, record.id) == {"sent": 2, "skipped": 1}


def test_someone_the_operator_removed_sees_so_and_comes_back_only_by_saving(web):
    ana = add(web, "ana@example.org", "lab")
    subscribers.set_status(web.store, "ana@example.org", "unsubscribed", web.env.now)
    url = path(web, "preferences", ana, "lab")
    page = web.client.get(url)
    assert "Nothing is sent to this address at the moment." in page.text
    assert subscribers.find(web.store, "ana@example.org").status == "unsubscribed"
    web.client.post(url, data={"action": "save", "csrf": csrf_of(page.text), "newsletters": ["lab"]})
    assert subscribers.find(web.store, "ana@example.org").status == "active"


def test_behind_https_the_csrf_cookie_is_secure(env):
    import dataclasses

    from newsletter.web.app import create_app

    from .web_helpers import TestClient

    config = dataclasses.replace(env.config, web_base_url="https://news.example.org", web_base_url_set=True)
    client = TestClient(create_app(config, store=env.store), base_url="https://news.example.org")
    cookie = client.get("/subscribe").headers["set-cookie"]
    assert "Secure" in cookie and "Path=/;" in cookie


def test_a_file_posted_in_place_of_a_field_is_refused_not_a_crash(web):
    ana = add(web, "ana@example.org", "lab")
    answer = web.client.post(path(web, "unsubscribe", ana, "lab"),
                             files={"List-Unsubscribe": ("x.txt", b"One-Click"), "csrf": ("c.txt", b"x")})
    assert answer.status_code == 403
    signup_answer = web.client.post("/news/subscribe", files={"email": ("e.txt", b"a@example.org")},
                                    headers={"Origin": "https://harbourlight.example.org"})
    assert signup_answer.status_code == 400 and "Please give your email address." in signup_answer.text
    assert held(web, "ana@example.org") == {"lab": ()}


def test_rejoining_gives_back_the_categories_held_when_leaving(web):
    ana = add(web, "ana@example.org", "weekly", "lab", categories=("Science",))
    url = path(web, "unsubscribe", ana, "lab")
    done = web.client.post(url, data={"action": "unsubscribe", "csrf": csrf_of(web.client.get(url).text)})
    assert held(web, "ana@example.org") == {"weekly": ("Science",)}
    back = web.client.post(path(web, "preferences", ana, "lab"),
                           data={"action": "rejoin", "newsletter": "lab", "csrf": csrf_of(done.text)})
    assert back.status_code == 200
    assert held(web, "ana@example.org") == {"lab": ("Science",), "weekly": ("Science",)}


def test_rejoining_keeps_only_categories_still_offered_and_older_departures_give_every_category(web):
    ben = add(web, "ben@example.org", "lab", "weekly")
    with web.store.engine.begin() as conn:  # chosen when lab offered Robotics too, and the site had Gardening
        conn.execute(subscriptions.update().values(categories="science;Robotics;Gardening"))
    assert preferences.unsubscribe(web.store, ben, "lab", "page", web.env.now)
    assert preferences.unsubscribe(web.store, ben, "weekly", "page", web.env.now)
    # lab offers Technology and Science, spelled as its configuration spells them; weekly lists none
    assert preferences.rejoin(web.store, ben, "lab", ("Technology", "Science"), web.env.now) == ("Science",)
    assert preferences.rejoin(web.store, ben, "weekly", (), web.env.now) == ("science", "Robotics", "Gardening")
    assert preferences.unsubscribe(web.store, ben, "lab", "page", web.env.now)
    assert preferences.rejoin(web.store, ben, "lab", ("Technology",), web.env.now) == ()
    assert held(web, "ben@example.org") == {"lab": (), "weekly": ("science", "Robotics", "Gardening")}
    with web.store.engine.begin() as conn:  # a departure recorded before departures kept categories
        conn.execute(unsubscribes.update().values(categories=None))
    assert preferences.unsubscribe(web.store, ben, "weekly", "page", web.env.now)
    with web.store.engine.begin() as conn:
        conn.execute(unsubscribes.update().where(unsubscribes.c.newsletter == "weekly").values(categories=None))
    assert preferences.rejoin(web.store, ben, "weekly", (), web.env.now) == ()
