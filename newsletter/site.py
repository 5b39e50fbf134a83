"""Reading the site: every post of the configured site at a moment, newest first, with the problems found.

The one place the CLI, the send, the scheduler and the web app read a site through. It walks the folders as
Jekyll does in safe mode (any `_posts/`, never `_drafts/`, nor what `exclude` lists, never a symbolic link out
of the site), works out which of `_config.yml`'s front-matter defaults apply to each file, and hands each file
to the reader in `posts.py`; a post that cannot be read is reported and skipped, and the rest go on.
"""

from __future__ import annotations

import fnmatch
import gc
import glob
import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import Config, SiteConfig
from .errors import Problem, display_path
from .postcache import Outcome, PostCache
from .posts import DATED_NAME, POST_EXTS, Post, PostError, deep_merge, read_post

_SKIPPED_DIRS = {"node_modules", "vendor"}
_NAME = operator.attrgetter("name")


def read_site(config: Config, now: datetime) -> ReadResult:
    """The posts of the configured site as they stand at `now`."""
    return read_posts(config.site, now)


@dataclass
class ReadResult:
    posts: list[Post]
    problems: list[Problem]
    #: how many post files were parsed (the others came from the post cache)
    parsed: int = 0


def read_posts(site: SiteConfig, now: datetime) -> ReadResult:
    """Read every post of the site, newest first, leaving out drafts, unpublished and (unless the site
    publishes them) future posts. A file unchanged since the last read comes from the post cache, with the
    same warnings or error as when it was parsed."""
    # A read makes a few hundred thousand small objects that all live on and hold no cycles; the garbage
    # collector would walk them again and again as they pile up (a tenth of a cold read), so it waits.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _read_posts(site, now)
    finally:
        if collecting:
            gc.enable()


def _read_posts(site: SiteConfig, now: datetime) -> ReadResult:
    posts: list[Post] = []
    problems: list[Problem] = []
    parsed = 0
    defaults = FrontMatterDefaults(site)
    cache = PostCache.for_site(site)
    base_url = site.absolute_base
    for path, relative, folder_categories in find_post_files(site, problems):
        scopes = defaults.scopes(relative)
        stamp = _stamp(path) if cache.enabled else None
        outcome = cache.get(relative, stamp, scopes, base_url) if stamp is not None else None
        if outcome is None:
            outcome = _parse(path, relative, site, folder_categories, defaults.merged(scopes))
            parsed += 1
            if stamp is not None:
                cache.put(relative, stamp, scopes, outcome)
        shown = display_path(path) if outcome.warnings or outcome.error else ""
        if outcome.error is not None:
            problems.append(Problem(shown, str(outcome.error), outcome.error.line))
            continue
        problems.extend(Problem(shown, str(warning), warning.line) for warning in outcome.warnings)
        post = outcome.post
        if post is None or (post.date > now and not site.future):
            continue
        posts.append(post)
    if (unwritable := cache.save()) is not None and cache.path is not None:
        problems.append(Problem(display_path(cache.path), unwritable))
    posts.sort(key=lambda p: (p.date, p.path), reverse=True)
    return ReadResult(posts, problems, parsed)


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    """What the cache knows a file's version by; None when it cannot be had (read_post then says why)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino


def _parse(path: str, relative: str, site: SiteConfig, folders: list[str], defaults: dict[str, Any]) -> Outcome:
    try:
        post, warnings = read_post(path, relative, site, folders, defaults)
    except PostError as err:
        return Outcome(None, (), err)
    return Outcome(post, tuple(warnings))


class FrontMatterDefaults:
    """Jekyll 4's `defaults:` for posts: every set whose scope matches the post's path, merged in the order
    listed. A set takes precedence over the last one that did when its scope path is longer, or as long and it
    names a type (or neither names one); its values are deep-merged over what came before, and the values of a
    set without precedence beneath it (FrontmatterDefaults#all and #has_precedence? in Jekyll 4)."""

    def __init__(self, site: SiteConfig):
        self.sets = site.defaults
        self.source = site.source
        self._globbed: dict[str, tuple[str, ...]] = {}
        self._merged: dict[tuple[int, ...], dict[str, Any]] = {}

    def scopes(self, relative: str) -> tuple[int, ...]:
        """Which sets apply to the post at `relative`, by their place in the list."""
        if not self.sets:
            return ()
        return tuple(i for i, (path, _, _) in enumerate(self.sets) if self._applies(path, relative))

    def merged(self, scopes: tuple[int, ...]) -> dict[str, Any]:
        """The values of these sets merged in Jekyll's order (the same dict for posts with the same sets;
        nothing changes it)."""
        if scopes not in self._merged:
            merged: dict[str, Any] = {}
            winner: tuple[int, bool] | None = None
            for index in scopes:
                path, typed, values = self.sets[index]
                rank = (len(path[1:] if path.startswith("/") else path), typed)
                if winner is None or rank >= winner:
                    merged, winner = deep_merge(merged, values), rank
                else:
                    merged = deep_merge(values, merged)
            self._merged[scopes] = merged
        return self._merged[scopes]

    def for_post(self, relative: str) -> dict[str, Any]:
        return self.merged(self.scopes(relative))

    def _applies(self, scope: str, relative: str) -> bool:
        # As Jekyll: a plain prefix of the path as written (so "tech" also covers "technology/..."), or, with a
        # `*`, a prefix of any path the glob finds in the site
        if not scope:
            return True
        if "*" not in scope:
            return relative.startswith(scope)
        if scope not in self._globbed:
            found = glob.glob(scope, root_dir=self.source, recursive=True)
            self._globbed[scope] = tuple(os.path.normpath(p).replace(os.sep, "/") for p in found)
        return any(relative.startswith(p) for p in self._globbed[scope])


def find_post_files(site: SiteConfig, skipped: list[Problem]) -> Iterator[tuple[str, str, list[str]]]:
    """Yield (path, path relative to the source, categories from folders above _posts/) for each post file.

    Symbolic links are followed as Jekyll's safe mode does: never to a place outside the site, and a folder is
    read once, where it really is (links to folders are followed after every real folder, so a link never
    changes a post's path). Each link left alone is reported in `skipped`.
    """
    root = os.path.realpath(site.source)
    # (real path, read as posts): a folder only searched for _posts/ may still be read once as posts
    seen = {(root, False)}
    folders: list[tuple[str, str, list[str]]] = [(root, root, [])]  # (path, real path, parts), last first
    links: list[tuple[str, list[str]]] = []
    while folders or links:
        if not folders:
            link, parts = links.pop(0)
            real = os.path.realpath(link)
            if not _inside(real, root):
                skipped.append(Problem(display_path(Path(link)), _outside(real)))
            elif (real, "_posts" in parts) in seen:
                already = f"a folder already read ({display_path(Path(real))}); a folder is read once"
                skipped.append(Problem(display_path(Path(link)), f"skipped: a symbolic link to {already}"))
            else:
                seen.add((real, "_posts" in parts))
                folders.append((link, real, parts))
            continue
        folder, real_folder, parts = folders.pop()
        subfolders = []
        prefix = "".join(part + "/" for part in parts)
        categories = parts[: parts.index("_posts")] if "_posts" in parts else []
        # a Jekyll site has posts only below _posts/: elsewhere its files are not even looked at
        files_wanted = not site.is_jekyll or "_posts" in parts
        for entry in _entries(folder, skipped):
            relative = prefix + entry.name
            if entry.is_dir():
                if not _wanted_folder(entry.name, parts, site) or _excluded(relative, site.exclude):
                    continue
                if entry.is_symlink():
                    links.append((entry.path, [*parts, entry.name]))
                    continue
                below = [*parts, entry.name]
                key = (os.path.join(real_folder, entry.name), "_posts" in below)
                if key not in seen:
                    seen.add(key)
                    subfolders.append((entry.path, key[0], below))
                continue
            if not files_wanted or not _wanted_file(entry.name, site.is_jekyll) \
                    or site.exclude and _excluded(relative, site.exclude):
                continue
            if entry.is_symlink() and not _inside(real := os.path.realpath(entry.path), root):
                skipped.append(Problem(display_path(Path(entry.path)), _outside(real)))
                continue
            if not entry.is_file() and os.path.lexists(os.path.realpath(entry.path)):
                skipped.append(Problem(display_path(Path(entry.path)), "skipped: not a regular file"))
                continue
            yield entry.path, relative, categories
        folders.extend(reversed(subfolders))


def _entries(folder: str, skipped: list[Problem]) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=_NAME)
    except OSError as err:
        skipped.append(Problem(display_path(Path(folder)), f"folder cannot be read: {err.strerror}"))
        return []


def _wanted_folder(name: str, parts: list[str], site: SiteConfig) -> bool:
    if "_posts" in parts:
        return not _special(name)
    return name == "_posts" and site.is_jekyll or not _special(name) and name not in _SKIPPED_DIRS


def _wanted_file(name: str, is_jekyll: bool) -> bool:
    """Whether a file in a folder that holds posts is one: a post extension, not special nor a backup, and
    in a Jekyll site a dated name."""
    if name[:1] in _SPECIAL_STARTS or name[-1:] == "~":
        return False
    dot = name.rfind(".")
    if dot <= 0 or name[dot:].lower() not in POST_EXTS:  # os.path.splitext's, for a name without a leading dot
        return False
    return not is_jekyll or DATED_NAME.match(name) is not None


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _outside(real: str) -> str:
    return f"skipped: a symbolic link to {real}, outside the site (links out of the site are never followed)"


def _excluded(relative: str, patterns: tuple[str, ...]) -> bool:
    """Whether Jekyll's `exclude` leaves this path out: a listed path, anything below it, or a glob match."""
    return any(relative == p or relative.startswith(p + "/") or fnmatch.fnmatch(relative, p) for p in patterns)


_SPECIAL_STARTS = frozenset({".", "_", "#", "~"})


def _special(name: str) -> bool:
    return name[:1] in _SPECIAL_STARTS
