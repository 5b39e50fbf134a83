"""What a reader sees, in headless Chromium (Debian's `chromium`, driven by Playwright with `executable_path`;
nothing downloads a browser): click through unsubscribe, the way back, preferences and sign-up against a real
server on loopback, and check that no page scrolls sideways at a 375-pixel phone width."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import threading
import time

import pytest

from newsletter.config import load_config
from newsletter.site import read_posts
from newsletter.store import open_store
from newsletter.web.app import create_app

from .conftest import FIXED_NOW, ROOT
from .web_helpers import Clock, add, confirmation_link, held, path, send_issue

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium is not installed (.ci/run installs it)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def served(tmp_path):
    """The sample newsletter's app under uvicorn on a free loopback port, at /news."""
    yield from serving(tmp_path)


def serving(tmp_path, **web_settings):
    """Serve the sample newsletter (with these [web] settings) until the generator is closed; yields what the
    tests look at: the config, the store, the outbox and the origin."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = load_config(ROOT / "newsletter.toml")
    config = dataclasses.replace(config, database_url=f"sqlite:///{tmp_path}/web.db", web_base_url_set=True,
                                 web_base_url=f"http://127.0.0.1:{port}/news",
                                 delivery=dataclasses.replace(config.delivery, outbox=tmp_path / "outbox"),
                                 web=dataclasses.replace(config.web, **web_settings))
    store = open_store(config.database_url)
    app = create_app(config, store=store, clock=Clock(FIXED_NOW))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    from types import SimpleNamespace

    from newsletter.tokens import Tokens

    env = SimpleNamespace(config=config, store=store, now=FIXED_NOW, posts=read_posts(config.site, FIXED_NOW).posts,
                          tmp=tmp_path)
    web = SimpleNamespace(config=config, store=store, env=env, tokens=Tokens(store.secret()),
                          outbox=tmp_path / "outbox", origin=f"http://127.0.0.1:{port}")
    yield web
    server.should_exit = True
    thread.join(timeout=10)
    store.engine.dispose()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is required in CI"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 375, "height": 800})
    yield context.new_page()
    context.close()


def press(page, selector: str) -> None:
    """Click a button or link and wait for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)


def fits(page) -> str:
    """The page's heading, after checking it does not scroll sideways and its stylesheet applied under the CSP."""
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, page.url
    assert page.evaluate("document.querySelectorAll('script').length") == 0
    if page.query_selector("main.page"):
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(244, 241, 234)"
    return page.inner_text("h1") if page.query_selector("h1") else ""


def test_unsubscribe_change_my_mind_and_preferences_by_clicking(served, page):
    ana = add(served, "ana.with.a.rather.long.address.for.phones@example.org", "weekly", "lab")
    address = "ana.with.a.rather.long.address.for.phones@example.org"
    page.goto(served.origin + path(served, "unsubscribe", ana, "lab"))
    assert fits(page) == "Unsubscribe from Harbourlight Lab Notes?"
    press(page, "button:has-text('Unsubscribe')")
    assert fits(page) == "You have left Harbourlight Lab Notes"
    assert held(served, address) == {"weekly": ()}
    press(page, "button:has-text('I changed my mind')")
    assert fits(page) == "Your newsletters"
    assert "Welcome back to Harbourlight Lab Notes." in page.inner_text("main")
    assert held(served, address) == {"lab": (), "weekly": ()}
    page.uncheck("input[value=weekly]")
    page.check("input[value='lab:Science']")
    press(page, "button[value=save]")
    assert "Saved." in page.inner_text("main")
    fits(page)
    assert held(served, address) == {"lab": ("Science",)}
    press(page, "button[value=leave_all]")
    assert "You have left every newsletter." in page.inner_text("main")
    assert held(served, address) == {}


def test_sign_up_and_confirm_by_clicking(served, page):
    page.goto(served.origin + "/news/")
    assert fits(page) == "Subscribe"
    page.fill("#email", "reader@example.org")
    page.fill("#name", "Rea Der")
    page.check("input[value=lab]")
    page.check("input[value='lab:Technology']")
    press(page, "button[type=submit]")
    assert fits(page) == "Check your inbox"
    assert held(served, "reader@example.org") is None
    page.goto(confirmation_link(served.outbox, "reader@example.org"))
    assert fits(page) == "Confirm your subscription"
    press(page, "button:has-text('Confirm')")
    assert fits(page) == "You are subscribed"
    assert held(served, "reader@example.org") == {"lab": ("Technology",)}
    press(page, "a:has-text('Your preferences')")
    assert fits(page) == "Your newsletters"


def test_the_archive_and_refusal_pages_fit_a_phone(served, page):
    add(served, "ana@example.org", "weekly")
    send_issue(served, "weekly", FIXED_NOW)
    page.goto(served.origin + "/news/archive/weekly/")
    assert fits(page) == "Harbourlight Weekly"
    press(page, "article h2 a")
    assert page.url.endswith("/news/archive/weekly/2026-01-05/")
    fits(page)
    page.goto(served.origin + "/news/unsubscribe/forged")
    assert fits(page) == "This link is not valid"
