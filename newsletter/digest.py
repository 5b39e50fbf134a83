"""One issue of one newsletter: plan it from the posts at a given moment, render it, compose its messages.

This is the library API that the command line, the sender and the web preview share, so a preview is the
same code path as a send.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import make_msgid
from pathlib import Path

import jinja2
from PIL import Image, UnidentifiedImageError

from .config import Config, NewsletterConfig
from .message import MessageTemplate, domain_of
from .posts import Post
from .render import Digest, IssueInfo, Recipient, render_digest, template_environment
from .select import Selection, select_posts

SAMPLE_EMAIL = "reader@example.org"
SAMPLE_TOKEN = "preview"


@dataclass(frozen=True)
class Plan:
    """What an issue will carry: the newsletter, the moment, and the selected posts."""

    newsletter: NewsletterConfig
    issue: IssueInfo
    selection: Selection


def period_of(now: datetime, config: Config) -> str:
    """The period of a manual send: the day of `now` in the site's time zone."""
    return now.astimezone(config.site.timezone).date().isoformat()


def view_url(config: Config, newsletter_id: str, period: str) -> str:
    return f"{config.web_base_url}/archive/{newsletter_id}/{period}/"


def plan_issue(
    config: Config,
    newsletter: NewsletterConfig,
    posts: Iterable[Post],
    now: datetime,
    *,
    number: int = 1,
    categories: Sequence[str] | None = None,
    since: datetime | None = None,
    carried: Iterable[str] = (),
) -> Plan:
    """Select the posts of the issue at `now`: those in the newsletter's categories (or `categories`, a
    subset chosen by a subscriber) dated within its window, minus those an earlier issue carried."""
    local_now = now.astimezone(config.site.timezone)
    period = period_of(now, config)
    selection = select_posts(
        posts,
        since=since or local_now - newsletter.window,
        until=local_now,
        categories=categories if categories else newsletter.categories,
        exclude_categories=newsletter.exclude_categories,
        max_posts=newsletter.max_posts,
        exclude_keys=carried,
    )
    issue = IssueInfo(number=number, date=local_now, period=period, view_url=view_url(config, newsletter.id, period))
    return Plan(newsletter, issue, selection)


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


def sample_recipient(config: Config, email: str = SAMPLE_EMAIL, name: str = "Sample Reader") -> Recipient:
    """The recipient previews are shown as when no stored subscriber is named; its links unsubscribe nobody."""
    base = config.web_base_url
    return Recipient(
        email=email,
        name=name,
        unsubscribe_url=f"{base}/unsubscribe/{SAMPLE_TOKEN}",
        preferences_url=f"{base}/preferences/{SAMPLE_TOKEN}",
    )


def compose(config: Config, digest: Digest, recipient: Recipient, now: datetime) -> bytes:
    """The complete message for one recipient of a rendered digest, as it would go on the wire."""
    newsletter = config.newsletter(digest.newsletter_id)
    template = MessageTemplate(digest, sender=config.delivery.from_addr, reply_to=config.delivery.reply_to,
                               list_id=(newsletter.title, newsletter.id), date=now)
    return template.render(recipient, make_msgid(domain=domain_of(config.delivery.from_addr)))
