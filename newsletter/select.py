"""The selector: which posts an issue carries, and in which sections. Pure: values in, values out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .posts import Post

OTHER_SECTION = "Other"


@dataclass(frozen=True)
class Section:
    """A heading of the digest and the posts under it, newest first."""

    category: str
    posts: tuple[Post, ...]


@dataclass(frozen=True)
class Selection:
    posts: tuple[Post, ...]
    sections: tuple[Section, ...]
    since: datetime
    until: datetime
    #: posts that qualified but were left out by max_posts (the newest are carried)
    more: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.posts


def select_posts(
    posts: Iterable[Post],
    *,
    since: datetime,
    until: datetime,
    categories: Sequence[str] = (),
    exclude_categories: Sequence[str] = (),
    max_posts: int | None = None,
    exclude_keys: Iterable[str] = (),
) -> Selection:
    """Posts dated in (since, until] in any of `categories` (all when empty, case-insensitive), none of
    `exclude_categories`, and not already carried (`exclude_keys`); newest first, at most `max_posts`, grouped
    into sections."""
    wanted = {c.casefold() for c in categories}
    unwanted = {c.casefold() for c in exclude_categories}
    carried = set(exclude_keys)
    chosen = [
        post
        for post in posts
        if since < post.date <= until
        and (not wanted or post.in_categories(wanted))
        and not post.in_categories(unwanted)
        and post.key not in carried
    ]
    chosen.sort(key=lambda p: (p.date, p.path), reverse=True)
    more = max(0, len(chosen) - max_posts) if max_posts is not None else 0
    if max_posts is not None:
        chosen = chosen[:max_posts]
    return Selection(tuple(chosen), group_sections(chosen, categories), since, until, more)


def group_sections(posts: Sequence[Post], categories: Sequence[str] = ()) -> tuple[Section, ...]:
    """Group posts by category: in the configured order, each post under the first configured category it has;
    with no configured categories, alphabetically, each post under its alphabetically first category, and
    posts without one under "Other". A section's heading keeps the case its newest post's author wrote."""
    order = [c.casefold() for c in dict.fromkeys(categories)]
    groups: dict[str, list[Post]] = {}
    display: dict[str, str] = {}
    for post in posts:
        own = {c.casefold(): c for c in reversed(post.categories)}
        if order:
            home = next((c for c in order if c in own), "")
        else:
            home = min(own) if own else ""
        groups.setdefault(home, []).append(post)
        display.setdefault(home, own.get(home, OTHER_SECTION))
    if order:
        keys = [c for c in order if c in groups]
    else:
        keys = sorted(k for k in groups if k) + ([""] if "" in groups else [])
    return tuple(Section(display[k], tuple(groups[k])) for k in keys)
