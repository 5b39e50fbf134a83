"""The post cache: what reading each post file gave last time, so an unchanged site is read again quickly.

The scheduler and the web app read the whole site again and again; parsing front matter is most of that work.
The cache keeps, for each post file, what reading it gave (the post, nothing for an unpublished one, or the
error) with the warnings, keyed by the file's path, size, modification and change times (in nanoseconds) and
inode, and by which of `_config.yml`'s front-matter defaults apply to it. A file whose key differs is read
again. The whole cache is dropped when anything else that shapes a post changes: `_config.yml`'s content, the
site settings, or the reader itself (its version and its source code).

It is one file per site, written whole to a temporary file and renamed over the old one, so a reader in
another process sees the old cache or the new one, never half of either. It holds only plain values (marshal
of str, int, float, bytes, tuples, lists and dicts, checked by a digest and then field by field), never
pickled objects: a damaged, truncated or foreign file is ignored and rebuilt, and loading one cannot run code.
Deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import sys
import tempfile
import time
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from . import clock, frontyaml, permalink, posts
from .config import SiteConfig
from .errors import NewsletterError, display_path
from .posts import Post, PostError, PostWarning

MAGIC = b"newsletter post cache\n"
FORMAT = 1
# Bump when what the reader makes of a file changes without its source changing (the source is hashed too).
READER_VERSION = 1
_DIGEST_SIZE = 32
RACY_NS = 2_000_000_000
# The modules whose code decides what a post file reads as.
_READER_MODULES = (posts, frontyaml, permalink, clock, sys.modules[__name__])


class _Uncacheable(Exception):
    """A value the cache does not store: that post is read from its file every time."""


@dataclass(frozen=True)
class Outcome:
    """What reading one post file gave: a post, or None (unpublished), or an error; and the warnings."""

    post: Post | None
    warnings: tuple[PostWarning, ...] = ()
    error: PostError | None = None


def cache_file(site: SiteConfig) -> Path | None:
    """The site's cache file inside the configured cache folder, named after the site's folder (one folder
    may hold the caches of several sites); None when the cache is turned off."""
    if site.cache is None:
        return None
    source = os.path.realpath(site.source)
    name = hashlib.blake2b(source.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return site.cache / f"posts-{name}.cache"


def fingerprint(site: SiteConfig) -> bytes:
    """Everything besides a file itself that shapes its post: the reader (version and code), PyYAML and
    Python's versions, `_config.yml` as written, and the settings the reader uses."""
    digest = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    digest.update(repr((FORMAT, READER_VERSION, yaml.__version__, sys.version, marshal.version)).encode())
    for module in _READER_MODULES:
        digest.update(Path(module.__file__).read_bytes())
    try:
        digest.update((site.source / "_config.yml").read_bytes())
    except OSError:
        digest.update(b"no _config.yml")
    settings = (str(site.source), site.url, site.baseurl, str(site.timezone), site.permalink,
                site.excerpt_separator, site.is_jekyll, site.defaults)
    digest.update(repr(settings).encode("utf-8", "surrogateescape"))
    return digest.digest()


class PostCache:
    """One site's cache, loaded at the start of a read and saved at its end when anything changed."""

    def __init__(self, path: Path | None, fingerprint: bytes, started_ns: int | None = None):
        self.path = path
        self.enabled = path is not None
        self.fingerprint = fingerprint
        # A file changed less than RACY_NS before the read began may change again within the same tick of the
        # file system's clock, keeping its stamp: such a file is read from disk until it is older.
        self._racy_from = (time.time_ns() if started_ns is None else started_ns) - RACY_NS
        self._old: dict[str, tuple] = _load(path, fingerprint) if path is not None else {}
        self._new: dict[str, tuple] = {}
        self._changed = path is not None and not self._old

    @classmethod
    def for_site(cls, site: SiteConfig) -> PostCache:
        path = cache_file(site)
        return cls(path, fingerprint(site) if path is not None else b"")

    def get(self, relative: str, stamp: tuple, scopes: tuple[int, ...], base_url: str) -> Outcome | None:
        """The outcome kept for this file, when its stamp and defaults are the ones it was read with."""
        entry = self._old.get(relative) if self.enabled else None
        if entry is None or entry[2] is None or entry[0] != stamp or entry[1] != scopes:
            return None
        try:
            outcome = _unpack_outcome(entry[2], relative, base_url, self.path)
        except Exception:  # noqa: BLE001 - a damaged entry, whatever is wrong with it: the file is read again
            return None
        self._new[relative] = entry
        return outcome

    def put(self, relative: str, stamp: tuple, scopes: tuple[int, ...], outcome: Outcome) -> None:
        """Keep what reading a file gave (or, for a file changed just now or a post the cache cannot hold, a
        mark that it is read from disk)."""
        if not self.enabled:
            return
        packed = None
        if stamp[1] < self._racy_from:
            try:
                packed = _pack_outcome(outcome)
            except (_Uncacheable, ValueError):  # ValueError: an integer too long for JSON to write
                pass
        entry = (stamp, scopes, packed)
        self._new[relative] = entry
        if not self._changed and self._old.get(relative) != entry:
            self._changed = True

    def save(self) -> str | None:
        """Write the cache when it changed (a file read, added or gone); the reason when it cannot be."""
        if self.path is None or not (self._changed or len(self._old) != len(self._new)):
            return None
        body = marshal.dumps((FORMAT, self.fingerprint, self._new))
        data = MAGIC + hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest() + body
        temporary = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("wb", dir=self.path.parent, prefix=".posts-", suffix=".tmp",
                                             delete=False) as out:
                temporary = out.name
                out.write(data)
            os.replace(temporary, self.path)  # readers in other processes see the old file or the new one
        except OSError as err:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            return f"the post cache cannot be written ({err.strerror or err}); set [site] cache to a writable " \
                   "folder, or to \"\" to read without one"
        return None


def _load(path: Path, fingerprint: bytes) -> dict[str, tuple]:
    """The entries of a cache file written for this fingerprint; empty for a missing, damaged or foreign one."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    head = len(MAGIC) + _DIGEST_SIZE
    if not data.startswith(MAGIC) or len(data) < head:
        return {}
    body = data[head:]
    if hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest() != data[len(MAGIC) : head]:
        return {}
    try:
        loaded = marshal.loads(body)
    except (ValueError, EOFError, TypeError):
        return {}
    if not (isinstance(loaded, tuple) and len(loaded) == 3 and loaded[0] == FORMAT and loaded[1] == fingerprint
            and isinstance(loaded[2], dict)):
        return {}
    return {key: entry for key, entry in loaded[2].items()
            if isinstance(key, str) and isinstance(entry, tuple) and len(entry) == 3}


def _pack_outcome(outcome: Outcome) -> tuple:
    warnings = tuple((str(w), w.line) for w in outcome.warnings)
    if outcome.error is not None:
        return ("error", str(outcome.error), outcome.error.line, warnings)
    post = outcome.post
    if post is None:
        return ("unpublished", warnings)
    values = post.url_values
    if post.fixed_url is not None or values.categories != list(post.categories) or values.date != post.date:
        raise _Uncacheable
    return ("post", warnings, _pack(post.date), post.title, post.slug, post.categories, post.tags, post.author,
            post.image, post.image_alt, post.image_path, post.excerpt_source, post.excerpt_is_html,
            _pack_data(post.data), post.url_template, values.slug, values.basename, values.output_ext)


def _unpack_outcome(packed: tuple, relative: str, base_url: str, path: Path | None = None) -> Outcome:
    kind = packed[0]
    if kind == "error" and len(packed) == 4:
        _, message, line, warnings = packed
        return Outcome(None, _warnings(warnings), PostError(_text(message), _line(line)))
    if kind == "unpublished" and len(packed) == 2:
        return Outcome(None, _warnings(packed[1]))
    if kind != "post" or len(packed) != 18:
        raise ValueError(kind)
    (_, warnings, when, title, slug, categories, tags, author, image, image_alt, image_path, excerpt_source,
     excerpt_is_html, data, url_template, url_slug, basename, output_ext) = packed
    when = _unpack(when)
    if when.__class__ is not datetime or excerpt_is_html.__class__ is not bool:
        raise TypeError(when)
    for text in (title, slug, excerpt_source, url_template, url_slug, basename, output_ext):
        if text.__class__ is not str:
            raise TypeError(text)
    for text in (author, image, image_alt, image_path):
        if text is not None and text.__class__ is not str:
            raise TypeError(text)
    for names in (categories, tags):
        if names.__class__ is not tuple:
            raise TypeError(names)
        for name in names:
            if name.__class__ is not str:
                raise TypeError(name)
    if data.__class__ is not tuple or not data or data[0] not in _DATA_KINDS:  # the rest is checked when used
        raise TypeError(data)
    post = Post.from_parts({
        "path": relative, "date": when, "title": title, "slug": slug, "categories": categories, "tags": tags,
        "author": author, "image": image, "image_alt": image_alt, "image_path": image_path,
        "excerpt_source": excerpt_source, "excerpt_is_html": excerpt_is_html, "url_template": url_template,
        "base_url": base_url, "fixed_url": None,
    }, (_deferred_field, (data, url_slug, basename, output_ext, path)))  # fmt: skip
    return Outcome(post, () if warnings == () else _warnings(warnings))


class DamagedEntry(NewsletterError):
    """A post cache entry that passed the file's digest but not the check of a field made later: a cache file
    not written by this reader. The post cannot be trusted, so the command stops rather than use it."""


def _deferred_field(post: Post, name: str, packed: tuple) -> Any:
    """A cached post's front matter or URL values, made when first asked for."""
    data, url_slug, basename, output_ext, path = packed
    if name == "url_values":
        return permalink.UrlValues(date=post.date, slug=url_slug, basename=basename,
                                   categories=list(post.categories), output_ext=output_ext, path=post.path)
    try:
        return _unpack_data(data)
    except Exception as err:  # noqa: BLE001 - whatever is wrong with it, the entry is not what we wrote
        where = f"delete {display_path(path)}" if path is not None else "delete the post cache file"
        raise DamagedEntry(f"{post.path}: the post cache holds a damaged front matter for this post ({err!r}); "
                           f"{where} and run the command again to read every post from its file") from err


def _text(value: Any) -> str:
    if value.__class__ is not str:
        raise TypeError(value)
    return value


def _line(value: Any) -> int | None:
    if value is not None and value.__class__ is not int:
        raise TypeError(value)
    return value


def _warnings(value: Any) -> tuple[PostWarning, ...]:
    if value.__class__ is not tuple:
        raise TypeError(value)
    return tuple(PostWarning(_text(message), _line(line)) for message, line in value)


# Front-matter values as marshal stores them: the plain ones as they are, the others as a tuple naming their
# type (YAML makes tuples only inside !!omap and !!pairs, and those are tagged too).
_PLAIN = frozenset({str, int, float, bool, type(None), bytes})


def _plain(value: Any) -> bool:
    """Whether JSON gives this value back as it is: no dates, tuples, sets, bytes or keys but strings."""
    kind = value.__class__
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if kind is list:
        return all(map(_plain, value))
    if kind is dict:
        return all(key.__class__ is str for key in value) and all(map(_plain, value.values()))
    return False


def _pack_data(data: dict[str, Any]) -> tuple:
    """A front matter as ("json", JSON of the mapping with its top-level values that are not plain set to
    null, those values tagged), which is quick to unpack and gives nothing but plain values (usually only
    `date` needs tagging), or ("tagged", the whole tagged) when a key is not a string."""
    mapping, tagged = {}, []
    for key, value in data.items():
        if key.__class__ is not str:
            return ("tagged", _pack(data))
        if _plain(value):
            mapping[key] = value
        else:
            mapping[key] = None
            tagged.append((key, _pack(value)))
    return ("json", json.dumps(mapping), tuple(tagged))


_DATA_KINDS = frozenset({"json", "tagged"})


def _unpack_data(packed: Any) -> dict[str, Any]:
    if packed[0] == "json" and len(packed) == 3:
        data = json.loads(packed[1])
        if data.__class__ is not dict:
            raise TypeError(data)
        for key, value in packed[2]:
            if key not in data or data[key] is not None:
                raise ValueError(key)
            data[key] = _unpack(value)
        return data
    if packed[0] == "tagged" and len(packed) == 2:
        data = _unpack(packed[1])
        if data.__class__ is not dict:
            raise TypeError(data)
        return data
    raise ValueError(packed[0])


def _pack(value: Any) -> Any:
    kind = value.__class__
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_pack(item) for item in value]
    if kind is dict:
        return {_pack(key): _pack(item) for key, item in value.items()}
    if kind is datetime:
        return ("datetime", value.year, value.month, value.day, value.hour, value.minute, value.second,
                value.microsecond, value.fold, _pack_zone(value.tzinfo))
    if kind is date:
        return ("date", value.year, value.month, value.day)
    if kind is tuple:
        return ("tuple", [_pack(item) for item in value])
    if kind is set:
        return ("set", [_pack(item) for item in value])
    raise _Uncacheable(kind)


def _pack_zone(zone: Any) -> Any:
    if zone is None:
        return None
    if zone.__class__ is zoneinfo.ZoneInfo and zone.key is not None and zoneinfo.ZoneInfo(zone.key) is zone:
        return zone.key
    if zone.__class__ is timezone:
        offset = zone.utcoffset(None)
        if repr(timezone(offset)) == repr(zone):  # no name of its own
            return (offset.days, offset.seconds, offset.microseconds)
    raise _Uncacheable(zone)


_ZONES: dict[str, zoneinfo.ZoneInfo] = {}


def _unpack(value: Any) -> Any:
    kind = value.__class__
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_unpack(item) for item in value]
    if kind is dict:
        return {_unpack(key): _unpack(item) for key, item in value.items()}
    if kind is not tuple:
        raise TypeError(kind)
    tag = value[0]
    if tag == "datetime":
        zone = value[9]
        if zone is None:
            tz = None
        elif zone.__class__ is str:
            tz = _ZONES.get(zone) or _ZONES.setdefault(zone, zoneinfo.ZoneInfo(zone))
        else:
            tz = timezone(timedelta(*zone))
        return datetime(*value[1:8], fold=value[8], tzinfo=tz)
    if tag == "date":
        return date(*value[1:])
    if tag == "tuple":
        return tuple(_unpack(item) for item in value[1])
    if tag == "set":
        return {_unpack(item) for item in value[1]}
    raise ValueError(tag)
