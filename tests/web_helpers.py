"""Shared pieces of the web tests: the app on the sample newsletter at a pinned clock, and form helpers."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from newsletter import subscribers
from newsletter.tokens import Tokens
from newsletter.web.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette suggests httpx2; httpx is what the test client runs on here
    from starlette.testclient import TestClient

BASE = "http://testserver/news"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    """The app's clock, moved by hand."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def make_web(env, **web_overrides) -> SimpleNamespace:
    """The app for the sample newsletter under a path prefix (/news), on env's database and outbox."""
    config = dataclasses.replace(env.config, web_base_url=BASE, web_base_url_set=True,
                                 web=dataclasses.replace(env.config.web, **web_overrides))
    clock = Clock(env.now)
    app = create_app(config, store=env.store, clock=clock)
    client = TestClient(app, base_url="http://testserver")
    return SimpleNamespace(app=app, client=client, config=config, store=env.store, clock=clock, env=env,
                           tokens=Tokens(env.store.secret()), outbox=env.tmp / "outbox")


def add(web, address: str, *newsletters: str, categories: tuple[str, ...] = (), status: str = "active") -> int:
    subscribers.add(web.store, web.config, address, "", newsletters, categories, web.env.now)
    if status != "active":
        subscribers.set_status(web.store, address, status, web.env.now)
    return subscribers.find(web.store, address).id


def path(web, purpose: str, subscriber_id: int, newsletter: str) -> str:
    """The path part of a subscriber's link (with the /news prefix)."""
    return f"/news/{purpose}/{web.tokens.make(purpose, subscriber_id, newsletter)}"


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, html
    return match.group(1)


def held(web, address: str) -> dict:
    found = subscribers.find(web.store, address)
    return None if found is None else {**found.newsletters}


def confirmation_link(outbox: Path, address: str) -> str:
    """The confirmation link in the newest confirmation email sent to `address`."""
    files = sorted((outbox / "signup").glob(f"*-{address}.eml"))
    assert files, f"no confirmation email to {address} in {outbox}"
    message = email.message_from_bytes(files[-1].read_bytes(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    return re.search(r"(https?://\S+/confirm/\S+)", text).group(1)


def send_issue(web, newsletter_id: str, now: datetime, posts=None, provider=None):
    """Plan and send the issue of `newsletter_id` at `now` through the outbox (or `provider`)."""
    from newsletter.deliver import make_provider
    from newsletter.deliver.run import Sender
    from newsletter.plan import plan_or_resume

    newsletter = web.config.newsletter(newsletter_id)
    record, _ = plan_or_resume(web.store, web.config, newsletter, web.env.posts if posts is None else posts, now)
    if record.status != "skipped":
        Sender(web.store, web.config, newsletter, provider or make_provider(web.config)).run(record, now)
    return record
