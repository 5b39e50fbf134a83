"""Planning an issue: the issue of newsletter N for period P, found when it was planned already, else planned now.

The one place `send`, the scheduler, the web app and `preview` decide what an issue carries:
- a newsletter's unfinished issue (a send cut short) is resumed before a new one is planned, so that no issue is
  ever orphaned;
- the first issue looks back `window`; later ones carry every post no earlier issue carried that is dated after
  the previous issue's time less `window`, but never further back than `max_lookback`, so that a long pause
  loses no post and a post published late with an earlier date still goes out;
- durations are taken on instants (UTC), never on wall-clock time, so a 12 h window is 12 h across a change of
  daylight saving time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from . import ledger
from .config import Config, NewsletterConfig
from .digest import image_sizes, view_url
from .posts import Post
from .render import IssueInfo
from .schedule import manual_period
from .select import Selection, select_posts
from .store import Store


@dataclass(frozen=True)
class Plan:
    """What an issue will carry: the newsletter, the moment, and the selected posts."""

    newsletter: NewsletterConfig
    issue: IssueInfo
    selection: Selection


def period_of(now: datetime, config: Config, newsletter: NewsletterConfig) -> str:
    """The period of a send by hand at `now`: its day in the newsletter's time zone (the site's unless it sets
    one), the same period a scheduled fire that day has, so that the two find one issue. On a day its schedule
    fires more than once, the period of the latest fire at or before `now` (or the day's first fire before any
    came): see schedule.manual_period."""
    return manual_period(newsletter, now)


def plan_issue(config: Config, newsletter: NewsletterConfig, posts: Iterable[Post], now: datetime, *,
               number: int = 1, categories: Sequence[str] | None = None, since: datetime | None = None,
               carried: Iterable[str] = (), period: str | None = None) -> Plan:
    """Select the posts of the issue at `now`: those in the newsletter's categories (or `categories`, a
    subset chosen by a subscriber) dated after `since` (default: `window` before `now`), minus those an
    earlier issue carried."""
    zone = config.site.timezone
    local_now = now.astimezone(zone)
    if since is None:
        since = now.astimezone(timezone.utc) - newsletter.window
    selection = select_posts(
        posts,
        since=since.astimezone(zone),
        until=local_now,
        categories=categories if categories else newsletter.categories,
        exclude_categories=newsletter.exclude_categories,
        max_posts=newsletter.max_posts,
        exclude_keys=carried,
    )
    period = period or period_of(now, config, newsletter)
    issue = IssueInfo(number=number, date=local_now, period=period, view_url=view_url(config, newsletter.id, period),
                      more=selection.more)
    return Plan(newsletter, issue, selection)


def lookback_start(previous: datetime | None, newsletter: NewsletterConfig, now: datetime) -> datetime:
    """How far back the issue at `now` reaches: `window` for a first issue; otherwise from the previous issue's
    time less `window`, bounded by `max_lookback` before `now`, and never less than `window`."""
    now = now.astimezone(timezone.utc)
    shortest = now - newsletter.window
    if previous is None:
        return shortest
    return min(shortest, max(previous.astimezone(timezone.utc) - newsletter.window, now - newsletter.max_lookback))


@dataclass(frozen=True)
class Planned:
    """A new issue's contents before it is recorded."""

    posts: tuple[Post, ...]
    number: int
    image_sizes: dict[str, tuple[int, int]]
    more: int
    since: datetime


def planned_posts(store: Store | None, config: Config, newsletter: NewsletterConfig, posts: Sequence[Post],
                  now: datetime) -> Planned:
    """What a new issue at `now` would carry: posts no earlier issue carried, dated since the lookback start;
    its number; the pixel sizes of its images. Without a store, no issue was sent before."""
    carried, earlier = ledger.carried_posts(store, newsletter.id) if store else (set(), 0)
    previous = ledger.previous_issue_time(store, newsletter.id, now) if store else None
    since = lookback_start(previous, newsletter, now)
    plan = plan_issue(config, newsletter, posts, now, number=earlier + 1, carried=carried, since=since)
    chosen = plan.selection.posts
    return Planned(chosen, earlier + 1, image_sizes(chosen, config.site.source), plan.selection.more, since)


def plan_or_resume(store: Store, config: Config, newsletter: NewsletterConfig, posts: Sequence[Post],
                   now: datetime, period: str | None = None) -> tuple[ledger.IssueRecord, bool]:
    """The issue a send at `now` must work on, and whether it was planned just now.

    An unfinished earlier issue of the newsletter comes first: the caller sends it, then asks again for
    `period` (by default the day of `now` in the newsletter's zone; a scheduler passes its own). Otherwise the
    issue for `period`, found when already planned (by this process or another), else planned now."""
    unfinished = ledger.unfinished_issue(store, newsletter.id)
    if unfinished is not None:
        return unfinished, False
    period = period or period_of(now, config, newsletter)
    existing = ledger.find_issue(store, newsletter.id, period)
    if existing is not None:
        return existing, False
    planned = planned_posts(store, config, newsletter, posts, now)
    return ledger.record_issue(store, newsletter=newsletter.id, period=period, number=planned.number,
                               posts=planned.posts, image_sizes=planned.image_sizes, reference_time=now,
                               more=planned.more)


def next_issue(store: Store | None, config: Config, newsletter: NewsletterConfig, posts: Sequence[Post],
               now: datetime) -> ledger.IssueRecord:
    """The issue a send at `now` would work on, without recording anything: an unfinished one, else the one
    already planned for the period, else what planning it now would choose."""
    record = None
    if store is not None:
        record = ledger.unfinished_issue(store, newsletter.id) or ledger.find_issue(
            store, newsletter.id, period_of(now, config, newsletter))
    if record is None:
        planned = planned_posts(store, config, newsletter, posts, now)
        record = ledger.IssueRecord(0, newsletter.id, period_of(now, config, newsletter), planned.number,
                                    "sending" if planned.posts else "skipped", now, planned.posts,
                                    planned.image_sizes, planned.more)
    return record
