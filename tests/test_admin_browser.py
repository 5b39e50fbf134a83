"""The editors' console as an editor uses it, in headless Chromium (Debian's `chromium` through Playwright, as
test_web_browser.py does): sign in, open a preview and look into both frames, send a test copy, and retry
unknown deliveries through the confirmation. The app's clock is pinned."""

from __future__ import annotations

import pytest

from newsletter import ledger

from .conftest import FIXED_NOW
from .test_admin import HASH, PASSWORD, make_unknown
from .test_web_browser import browser, press, pytestmark, serving  # noqa: F401  (a fixture; the skip rule)
from .web_helpers import add, send_issue


@pytest.fixture
def served(tmp_path):
    """The sample newsletter's app with a console password, under uvicorn on a free loopback port, at /news."""
    yield from serving(tmp_path, admin_password_hash=HASH)


@pytest.fixture
def page(browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def heading(page) -> str:
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    return page.inner_text("h1")


def test_sign_in_preview_in_both_frames_and_send_a_test_copy(served, page):
    page.goto(served.origin + "/news/admin/preview/weekly")
    assert heading(page) == "Sign in to the editors' console"
    page.fill("#password", "not it")
    press(page, "button:has-text('Sign in')")
    assert "That password is not the console's." in page.inner_text("main")
    page.fill("#password", PASSWORD)
    press(page, "button:has-text('Sign in')")
    assert page.url == served.origin + "/news/admin/preview/weekly"
    assert heading(page) == "Preview of Harbourlight Weekly"
    page.wait_for_load_state("load")
    frames = {}
    for element in page.query_selector_all("iframe"):
        frame = element.content_frame()
        frame.wait_for_load_state("load")
        frames[element.get_attribute("width")] = frame
    assert sorted(frames) == ["375", "600"]
    for width, frame in frames.items():
        assert "Measuring sea level by hand" in frame.inner_text("body"), width
        assert frame.evaluate("window.innerWidth") == int(width)
    narrow = frames["375"]
    assert narrow.evaluate("document.documentElement.scrollWidth") <= narrow.evaluate(
        "document.documentElement.clientWidth")
    assert narrow.evaluate("document.documentElement.clientWidth") <= 375
    page.click("summary:has-text('Headers')")
    assert "List-Unsubscribe-Post" in page.inner_text("table.headers")
    page.fill("#to", "editor@example.org")
    press(page, "button:has-text('Send test copy')")
    assert page.inner_text("#notice") == ("A test copy of 2026-01-05 (10 post(s)) was sent to editor@example.org "
                                          "through outbox. Its links unsubscribe nobody.")
    written = sorted(served.outbox.rglob("*.eml"))
    assert [p.parent.name for p in written] == ["weekly-2026-01-05-test"]


def test_retry_unknown_through_its_confirmation(served, page):
    for name in ("ana", "ben", "cy"):
        add(served, f"{name}@example.org", "weekly")
    record = send_issue(served, "weekly", FIXED_NOW)
    make_unknown(served, record.id, 2)
    page.goto(served.origin + "/news/admin/")
    page.fill("#password", PASSWORD)
    press(page, "button:has-text('Sign in')")
    assert heading(page) == "Newsletters"
    press(page, "#weekly a:has-text('Past issues')")
    assert heading(page) == "Issues of Harbourlight Weekly"
    press(page, f"table.issues a:has-text('{record.id}')")
    assert heading(page) == f"Issue {record.id}: weekly 2026-01-05"
    press(page, "button:has-text('Retry unknown')")
    assert heading(page) == "Send the unknown deliveries again?"
    assert ledger.counts(served.store, record.id) == {"sent": 1, "unknown": 2}
    press(page, "button:has-text('Yes, make 2 pending again')")
    assert heading(page) == "2 delivery(ies) are pending again"
    assert ledger.counts(served.store, record.id) == {"sent": 1, "pending": 2}
