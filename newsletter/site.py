"""Reading the site: every post of the configured site at a moment, newest first, with the problems found.

The one place the CLI, the send, the scheduler and the web app read a site through. It walks the folders as
Jekyll does (any `_posts/`, never `_drafts/`, nor what `exclude` lists) and hands each file to the reader in
`posts.py`; a post that cannot be read is reported and skipped, and the rest go on.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .config import Config, SiteConfig
from .errors import Problem, display_path
from .posts import DATED_NAME, POST_EXTS, Post, PostError, read_post

_SKIPPED_DIRS = {"node_modules", "vendor"}


def read_site(config: Config, now: datetime) -> ReadResult:
    """The posts of the configured site as they stand at `now`."""
    return read_posts(config.site, now)


@dataclass
class ReadResult:
    posts: list[Post]
    problems: list[Problem]


def read_posts(site: SiteConfig, now: datetime) -> ReadResult:
    """Read every post of the site, newest first, leaving out drafts, unpublished and (unless the site
    publishes them) future posts."""
    posts: list[Post] = []
    problems: list[Problem] = []
    for path, relative, folder_categories in find_post_files(site):
        try:
            post = read_post(path, relative, site, folder_categories)
        except PostError as err:
            problems.append(Problem(display_path(path), str(err), err.line))
            continue
        if post is None or (post.date > now and not site.future):
            continue
        posts.append(post)
    posts.sort(key=lambda p: (p.date, p.path), reverse=True)
    return ReadResult(posts, problems)


def find_post_files(site: SiteConfig) -> Iterator[tuple[Path, str, list[str]]]:
    """Yield (path, path relative to the source, categories from folders above _posts/) for each post file."""
    root = site.source
    for folder, dirs, files in os.walk(root, followlinks=True):
        rel_folder = os.path.relpath(folder, root)
        parts = [] if rel_folder == "." else rel_folder.split(os.sep)
        in_posts = "_posts" in parts
        if in_posts:
            dirs[:] = sorted(d for d in dirs if not _special(d))
        else:
            dirs[:] = sorted(
                d for d in dirs if d == "_posts" and site.is_jekyll or not _special(d) and d not in _SKIPPED_DIRS
            )
        dirs[:] = [d for d in dirs if not _excluded("/".join([*parts, d]), site.exclude)]
        if site.is_jekyll and not in_posts:
            continue
        above = parts[: parts.index("_posts")] if in_posts else []
        for name in sorted(files):
            ext = os.path.splitext(name)[1].lower()
            if _special(name) or name.endswith("~") or ext not in POST_EXTS:
                continue
            if site.is_jekyll and not DATED_NAME.match(name):
                continue
            relative = "/".join([*parts, name])
            if _excluded(relative, site.exclude):
                continue
            yield Path(folder, name), relative, above


def _excluded(relative: str, patterns: tuple[str, ...]) -> bool:
    """Whether Jekyll's `exclude` leaves this path out: a listed path, anything below it, or a glob match."""
    return any(relative == p or relative.startswith(p + "/") or fnmatch.fnmatch(relative, p) for p in patterns)


def _special(name: str) -> bool:
    return name[:1] in (".", "_", "#", "~")


