"""Rendering an issue: its digest variants, rendered once and kept with the issue, and its messages.

This is the library API that the command line, the sender and the web pages share, so a preview is the same
code path as a send. What an issue carries is decided in `plan.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from email.utils import make_msgid
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from PIL import Image, UnidentifiedImageError

from . import ledger
from .config import Config, NewsletterConfig
from .errors import Problem, RenderError
from .message import AddressError, MessageTemplate, domain_of
from .posts import Post
from .render import (
    Digest,
    IssueInfo,
    Recipient,
    check_html,
    compile_templates,
    render_digest,
    template_environment,
)
from .select import Selection, group_sections
from .store import Store
from .subscribers import decode_categories
from .tokens import checked_secret, variant_token

if TYPE_CHECKING:
    from .plan import Plan

SAMPLE_EMAIL = "reader@example.org"
SAMPLE_TOKEN = "preview"


def view_url(config: Config, newsletter_id: str, period: str) -> str:
    return f"{config.web_base_url}/archive/{newsletter_id}/{period}/"


def image_sizes(posts: Iterable[Post], source: Path) -> dict[str, tuple[int, int]]:
    """Pixel sizes of the posts' images whose files are in the site (Pillow reads only the header)."""
    sizes = {}
    for post in posts:
        path = post.image_file(source)
        if path is None:
            continue
        try:
            with Image.open(path) as image:
                sizes[post.key] = image.size
        except (OSError, UnidentifiedImageError):
            continue  # the check of the rendered HTML still reports what the email will show
    return sizes


def render_plan(config: Config, plan: Plan, env: jinja2.Environment | None = None) -> Digest:
    env = env or template_environment(config.templates)
    return render_digest(
        env,
        newsletter=plan.newsletter,
        site=config.site,
        issue=plan.issue,
        selection=plan.selection,
        image_sizes=image_sizes(plan.selection.posts, config.site.source),
    )


class Variants:
    """Each distinct subset of an issue's posts rendered and inlined once, and kept with the issue so that a
    resumed send sends exactly what the first run rendered."""

    def __init__(self, store: Store | None, config: Config, newsletter: NewsletterConfig,
                 record: ledger.IssueRecord, env: jinja2.Environment | None = None):
        self.store, self.config, self.newsletter, self.record = store, config, newsletter, record
        self.env = env or template_environment(config.templates)
        self._by_categories: dict[str, Digest | None] = {}
        self._by_key: dict[str, Digest] = {}

    @cached_property
    def secret(self) -> str:
        return checked_secret(self.store.secret())

    @property
    def issue_info(self) -> IssueInfo:
        record = self.record
        local = record.reference_time.astimezone(self.config.site.timezone)
        return IssueInfo(record.number, local, record.period, view_url(self.config, record.newsletter,
                                                                        record.period), record.more)

    def for_categories(self, stored: str) -> Digest | None:
        """The variant for a subscriber's stored categories; None when none of the issue's posts are in them."""
        if stored not in self._by_categories:
            wanted = {c.casefold() for c in decode_categories(stored)}
            subset = [p for p in self.record.posts if not wanted or p.in_categories(wanted)]
            self._by_categories[stored] = self._variant(subset) if subset else None
        return self._by_categories[stored]

    def _variant(self, subset: list[Post]) -> Digest:
        keys = [p.key for p in subset]
        key = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
        if key in self._by_key:
            return self._by_key[key]
        selection = Selection(tuple(subset), group_sections(subset, self.newsletter.categories),
                              self.record.reference_time, self.record.reference_time)
        keeps = self.store is not None and bool(self.record.id)
        info = self.issue_info
        if keeps:  # the view link opens this very variant (a private newsletter's too)
            info = dataclasses.replace(info, view_url=f"{info.view_url}?v={variant_token(self.secret, self.record.id, key)}")
        stored = ledger.load_variant(self.store, self.record.id, key) if keeps else None
        digest = None
        if stored is None:
            digest = render_digest(self.env, newsletter=self.newsletter, site=self.config.site,
                                   issue=info, selection=selection, image_sizes=self.record.image_sizes)
            if keeps and not ledger.save_variant(self.store, self.record.id, key, keys, digest.subject, digest.html,
                                                 digest.text):
                # another process rendered and stored it at the same moment: theirs is the frozen one
                stored, digest = ledger.load_variant(self.store, self.record.id, key), None
        if digest is None:  # the frozen one; its checks are run again, so a resumed send still reports them
            checks = tuple(check_html(stored.html, where=f"{self.newsletter.template}.html.j2"))
            digest = Digest(self.newsletter.id, info, selection, stored.subject, stored.html,
                            stored.text, checks)
        self._by_key[key] = digest
        return digest

    @property
    def rendered(self) -> int:
        return len(self._by_key)

    @property
    def digests(self) -> list[Digest]:
        return list(self._by_key.values())


def sample_recipient(config: Config, email: str = SAMPLE_EMAIL, name: str = "Sample Reader") -> Recipient:
    """The recipient previews are shown as when no stored subscriber is named; its links unsubscribe nobody."""
    base = config.web_base_url
    return Recipient(
        email=email,
        name=name,
        unsubscribe_url=f"{base}/unsubscribe/{SAMPLE_TOKEN}",
        preferences_url=f"{base}/preferences/{SAMPLE_TOKEN}",
    )


def preview_recipient(config: Config, store: Store | None, newsletter_id: str,
                      address: str | None) -> tuple[Recipient, tuple[str, ...], Problem | None]:
    """Who a preview is addressed to: the stored subscriber at `address` (with their categories and real
    links) when there is one, else a sample reader. Returns (recipient, their categories, a warning when
    they are not subscribed to the newsletter)."""
    from .subscribers import find
    from .tokens import Tokens

    if address and store is not None and (subscriber := find(store, address)) is not None:
        unsubscribe, preferences = Tokens(store.secret()).urls(config.web_base_url, subscriber.id, newsletter_id)
        warning = None
        if newsletter_id not in subscriber.newsletters:
            warning = Problem(address, f"is not subscribed to {newsletter_id}; previewing as if they were")
        return (Recipient(subscriber.email, subscriber.name, unsubscribe, preferences),
                subscriber.newsletters.get(newsletter_id, ()), warning)
    return (sample_recipient(config, address) if address else sample_recipient(config)), (), None


def preview_variant(store: Store | None, config: Config, newsletter: NewsletterConfig, posts: Sequence[Post],
                    now: datetime, categories: Sequence[str] = ()
                    ) -> tuple[ledger.IssueRecord, Digest | None]:
    """What a send at `now` would carry, rendered for a reader of `categories` (none: every category), with
    nothing recorded: the issue, and its variant (None when none of its posts are in those categories). The
    CLI's `preview` and the editors' console both show this, and a send renders the same variant."""
    from .plan import next_issue

    record = next_issue(store, config, newsletter, posts, now)
    return record, Variants(None, config, newsletter, record).for_categories(";".join(categories))


def compose(config: Config, digest: Digest, recipient: Recipient, now: datetime) -> bytes:
    """The complete message for one recipient of a rendered digest, as it would go on the wire."""
    newsletter = config.newsletter(digest.newsletter_id)
    template = MessageTemplate(digest, sender=config.delivery.from_addr, reply_to=config.delivery.reply_to,
                               list_id=(newsletter.title, newsletter.id), date=now,
                               unsubscribe_mailto=config.unsubscribe_mailto)
    return template.render(recipient, make_msgid(domain=domain_of(config.delivery.from_addr)))


def check_newsletters(config: Config, posts: Sequence[Post], now: datetime,
                      newsletters: Sequence[NewsletterConfig] | None = None,
                      env: jinja2.Environment | None = None) -> list[Problem]:
    """Render every newsletter's subject and templates against a sample issue (its newest posts, whatever their
    age, for the sample recipient) and compose the message, as a send would: one Problem for each error, naming
    the template and line. `check` reports them before a send plans an issue it cannot render. With no post to
    show, the templates and subject are only compiled, since a send never renders an empty issue. Every
    template with a syntax error is reported; the others are rendered only when none has one. A send passes
    the `env` it renders its variants with, so that the templates are loaded and compiled once."""
    from .plan import plan_issue

    env = env or template_environment(config.templates)
    recipient = sample_recipient(config)
    since = min((post.date for post in posts), default=now) - timedelta(seconds=1)
    found: list[Problem] = []
    for newsletter in config.newsletters.values() if newsletters is None else newsletters:
        plan = plan_issue(config, newsletter, posts, now, since=since)
        errors: list[Exception] = list(compile_templates(env, newsletter))
        if not errors and plan.selection.posts:
            try:
                compose(config, render_plan(config, plan, env), recipient, now)
            except (RenderError, AddressError) as err:
                errors.append(err)
        for err in errors:
            problem = Problem(config.where, str(err))
            if problem not in found:  # a template shared by several newsletters is reported once
                found.append(problem)
    return found
