"""The reader: a blog's posts as Jekyll 4 sees them.

Reads every post file under any `_posts/` folder of a Jekyll site (or every Markdown file of a plain folder
with front-matter dates), applies Jekyll's rules for dates, categories, titles, slugs and URLs, and returns
`Post` values, newest first. A post that cannot be read is reported as a `Problem` naming the file and line and
skipped; the others are still returned. Excerpts are rendered lazily, so only the posts a digest selects pay
for Markdown and sanitising.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from . import permalink
from .clock import localize, parse_moment
from .config import SiteConfig
from .frontyaml import ImpossibleValue, load_yaml
from .markup import render_excerpt

MARKDOWN_EXTS = frozenset({".markdown", ".mkdown", ".mkdn", ".mkd", ".md"})
POST_EXTS = MARKDOWN_EXTS | {".html"}
DATED_NAME = re.compile(r"^(\d{2,4}-\d{1,2}-\d{1,2})-([^/]*)(\.[^.]+)$")
# Jekyll's YAML_FRONT_MATTER_REGEXP: a first line of ---, closed by a line of --- or ...
FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n?)^(?:---|\.\.\.)[ \t]*$\n?", re.DOTALL | re.MULTILINE)
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:.+$", re.MULTILINE)


class PostError(Exception):
    """A post that cannot be read; `line` is the line in the file when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class PostWarning(PostError):
    """Something wrong in a post that is read all the same (a field left out or replaced); not raised."""


@dataclass(frozen=True)
class Post:
    path: str
    date: datetime
    title: str
    slug: str
    categories: tuple[str, ...]
    tags: tuple[str, ...]
    author: str | None
    image: str | None
    image_alt: str | None
    image_path: str | None
    excerpt_source: str = field(repr=False)
    excerpt_is_html: bool = False
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    url_template: str = field(default="/:title/", repr=False, compare=False)
    url_values: Any = field(default=None, repr=False, compare=False)
    base_url: str = field(default="", repr=False)
    fixed_url: str | None = field(default=None, repr=False, compare=False)

    @cached_property
    def url(self) -> str:
        """Exactly Jekyll's post.url; made when first asked for, since most posts read are never shown."""
        if self.fixed_url is not None:
            return self.fixed_url
        return permalink.generate(self.url_template, self.url_values)

    def freeze(self) -> dict[str, Any]:
        """Everything needed to render this post again later, as JSON-ready values (an issue keeps these)."""
        return {
            "path": self.path, "date": self.date.isoformat(), "title": self.title, "slug": self.slug,
            "categories": list(self.categories), "tags": list(self.tags), "author": self.author,
            "image": self.image, "image_alt": self.image_alt, "image_path": self.image_path,
            "excerpt_source": self.excerpt_source, "excerpt_is_html": self.excerpt_is_html,
            "data": _json_ready(self.data), "url": self.url, "base_url": self.base_url,
        }  # fmt: skip

    @classmethod
    def from_parts(cls, fields: dict[str, Any], deferred: tuple[Callable[[Post, str, Any], Any], Any]) -> Post:
        """A post made without its constructor: `fields` are every field but `data` and `url_values`, which
        `deferred[0](post, name, deferred[1])` makes when first asked for (the post cache's quick path)."""
        post = object.__new__(cls)
        post.__dict__.update(fields)
        post.__dict__["_deferred"] = deferred
        return post

    @classmethod
    def thaw(cls, frozen: dict[str, Any]) -> Post:
        values = dict(frozen)
        url = values.pop("url")
        values["date"] = datetime.fromisoformat(values["date"])
        values["categories"] = tuple(values["categories"])
        values["tags"] = tuple(values["tags"])
        return cls(**values, fixed_url=url)

    @property
    def link(self) -> str:
        """The absolute link for the email: the site's url and baseurl, then post.url."""
        return self.base_url + self.url

    @property
    def key(self) -> str:
        """What identifies a post across issues: its path and slug."""
        return f"{self.path}#{self.slug}"

    @cached_property
    def _excerpt(self) -> tuple[str, str]:
        return render_excerpt(self.excerpt_source, is_html=self.excerpt_is_html, base_url=self.link)

    @property
    def excerpt_html(self) -> str:
        return self._excerpt[0]

    @property
    def excerpt(self) -> str:
        return self._excerpt[1]

    def image_file(self, source: Path) -> Path | None:
        """The image's file when it is inside the site `source` (never a path that climbs out of it)."""
        if self.image_path is None:
            return None
        local = (source / self.image_path).resolve()
        return local if local.is_relative_to(source) and local.is_file() else None

    def in_categories(self, wanted: set[str]) -> bool:
        return any(category.casefold() in wanted for category in self.categories)

    def as_json(self) -> dict[str, Any]:
        """The fields `newsletter posts --json` prints and templates see."""
        return {
            "path": self.path,
            "date": self.date.isoformat(),
            "title": self.title,
            "categories": list(self.categories),
            "tags": list(self.tags),
            "url": self.url,
            "link": self.link,
            "excerpt": self.excerpt,
            "image": self.image,
            "author": self.author,
        }


def _json_ready(value: Any) -> Any:
    """A front matter as JSON values: keys as strings (YAML allows dates and numbers), anything else not JSON
    as its text. The nesting is bounded when the post is read."""
    if isinstance(value, dict):
        return {_ruby_str(k) if not isinstance(k, str) else k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return value
    return str(value)


def split_front_matter(raw: bytes) -> tuple[dict[str, Any], str]:
    """Decode a post and split it as Jekyll does: (front matter, content).

    Handles what python-frontmatter alone gets wrong: a UTF-8 byte-order mark, CRLF line endings, and front
    matter closed by `...`.
    """
    if b"\x00" in raw:
        raise PostError("binary file, not a text post")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise PostError(f"not valid UTF-8 (byte {err.start}); save the file as UTF-8", line) from err
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    match = FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        data = load_yaml(match.group(1)) or {}
    except ImpossibleValue as err:
        raise PostError(str(err), err.line) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context_mark", None)
        if context is not None and mark is not None and context.line != mark.line:
            problem += f" ({getattr(err, 'context', None) or 'started'} at line {context.line + 2})"
        raise PostError(f"invalid YAML front matter: {problem}", line) from err
    if not isinstance(data, dict):
        raise PostError(f"front matter must be a mapping of keys to values, not a {type(data).__name__}", 2)
    return data, text[match.end() :]


def _ruby_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    names = {list: "list", dict: "mapping", set: "set", bytes: "binary value"}
    return names.get(type(value), type(value).__name__)


# Values a front-matter field that is text may hold; YAML dates and numbers read as Jekyll prints them.
_SCALARS = (str, int, float, bool, date)


@dataclass
class _Notes:
    """The warnings about one post's fields, each at the line of its key when the key is in the file."""

    line_of: Callable[[str], int | None]
    warnings: list[PostWarning] = field(default_factory=list)

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(PostWarning(message, self.line_of(key)))

    def text(self, data: dict[str, Any], key: str, instead: str) -> str | None:
        """The field as text; None when it is missing, or a list or map (warning what is used `instead`)."""
        value = data.get(key)
        if value is None or isinstance(value, _SCALARS):
            return None if value is None else _ruby_str(value)
        self.warn(key, f"{key} is a {_kind(value)} ({_shown(value)}), not text; {instead}")
        return None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Jekyll's Utils.deep_merge_hashes: `over` wins, except where its value is null, and mappings under the
    same key are merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if key in merged:
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(merged[key], dict):
                value = deep_merge(merged[key], value)
        merged[key] = value
    return merged


def _listed(value: Any) -> list[Any]:
    return value.split() if isinstance(value, str) else value if isinstance(value, list) else [value]


def _with_defaults(defaults: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The front matter over the defaults, as Document#merge_data! does: deep-merged, except that categories
    from both are kept (the defaults' first)."""
    if not defaults:
        return data
    merged = deep_merge(defaults, data)
    if data.get("categories") is not None and defaults.get("categories") is not None:
        union: list[Any] = []
        for value in _listed(defaults["categories"]) + _listed(data["categories"]):
            if value not in union:
                union.append(value)
        merged["categories"] = union
    return merged


def _values(value: Any, split: bool, key: str, notes: _Notes) -> list[Any]:
    """The names a categories or tags field lists (lists flattened, a string split on spaces when `split`);
    a mapping or other non-name among them is left out with a warning."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split() if split else [value]
    if not isinstance(value, list):
        if isinstance(value, _SCALARS):
            return [value]
        notes.warn(key, f"{key} is a {_kind(value)} ({_shown(value)}), not a list of names; it is left out")
        return []
    flat: list[Any] = []
    for item in value:
        if isinstance(item, list):
            flat.extend(_values(item, False, key, notes))
        elif isinstance(item, _SCALARS):
            flat.append(item)
        elif item is not None:
            notes.warn(key, f"{key} lists a {_kind(item)} ({_shown(item)}), not a name; it is left out")
    return flat


def _categories(data: dict[str, Any], folders: list[str], notes: _Notes) -> tuple[str, ...]:
    plural = _values(data.get("categories"), True, "categories", notes)
    merged = list(folders)
    for value in plural:
        if value not in merged:
            merged.append(value)
    if data.get("category") is not None:
        merged += _values(data["category"], False, "category", notes)
    else:
        merged += plural
    return tuple(dict.fromkeys(_ruby_str(v) for v in merged))


def _tags(data: dict[str, Any], notes: _Notes) -> tuple[str, ...]:
    if data.get("tag") is not None:
        return tuple(_ruby_str(v) for v in _values(data["tag"], False, "tag", notes))
    return tuple(_ruby_str(v) for v in _values(data.get("tags"), True, "tags", notes))


def _post_date(data: dict[str, Any], name_date: str | None, site: SiteConfig, line_of: Any) -> datetime:
    value = data.get("date")
    if value:
        try:
            return _front_matter_date(value, site)
        except OverflowError as err:  # near year 1 or 9999, the instant has no place in the site's zone
            raise PostError(f"invalid date {value} in front matter: {err}", line_of("date")) from err
        except ValueError:
            raise PostError(f"invalid date {_shown(value)} in front matter; write it like 2025-07-22T12:00:26",
                            line_of("date")) from None
    if name_date is None:
        raise PostError("no date: add `date:` to the front matter or name the file YYYY-MM-DD-slug.md")
    try:
        year, month, day = (int(part) for part in name_date.split("-"))
        return localize(date(year, month, day), site.timezone)
    except ValueError as err:
        raise PostError(f"invalid date {name_date!r} in the file name: {err}") from err


def _front_matter_date(value: Any, site: SiteConfig) -> datetime:
    if isinstance(value, datetime) and value.tzinfo is None and site.is_jekyll:
        # Jekyll's YAML reader takes an unquoted timestamp without an offset as UTC (seen in Jekyll 4.3), and
        # its post.url uses that instant; links must match, so the reader does the same.
        return value.replace(tzinfo=timezone.utc).astimezone(site.timezone)
    if isinstance(value, (datetime, date)):
        return localize(value, site.timezone)
    if isinstance(value, str):
        return parse_moment(value, site.timezone)
    raise ValueError(value)


def _line_finder(raw: bytes) -> Callable[[str], int | None]:
    """A function giving the line of a top-level front-matter key, computed only when an error needs it."""

    def line_of(key: str) -> int | None:
        text = raw.decode("utf-8", "replace").removeprefix("\ufeff").replace("\r\n", "\n")
        for number, line in enumerate(text.splitlines(), start=1):
            if line.startswith(key + ":"):
                return number
        return None

    return line_of


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


def _image(data: dict[str, Any], site: SiteConfig, notes: _Notes) -> tuple[str | None, str | None, str | None]:
    """(absolute URL, alt text, path inside the site when the image is a site file) of the post's image.

    Only http and https images leave the reader (a relative one made absolute against the site): any other
    scheme (javascript:, data:, file:...) is dropped with a warning naming it."""
    value = data.get("image")
    alt = notes.text(data, "image_alt", "the image has no alt text of its own")
    if isinstance(value, dict):
        alt = notes.text(value, "alt", "the image has no alt text of its own") if "alt" in value else alt
        value = value.get("path") or value.get("url")
    if not value:
        return None, None, None
    if not isinstance(value, str):
        notes.warn("image", f"image is a {_kind(value)} ({_shown(value)}), not a URL or path; the post has no "
                            "image")
        return None, None, None
    value = value.strip()
    if value.startswith("//"):
        value = "https:" + value
    if scheme := _SCHEME.match(value):
        if scheme.group(1).lower() not in ("http", "https"):
            notes.warn("image", f"image uses the {scheme.group(1).lower()}: scheme, which is never sent (only "
                                "http and https images are); the post has no image")
            return None, None, None
        if not urlsplit(value).netloc:
            notes.warn("image", f"image {_shown(value)} has no host; the post has no image")
            return None, None, None
        return value, alt, None
    # As Jekyll's absolute_url filter: url + baseurl + the path, with a leading slash or not.
    relative = posixpath.normpath("/" + value).lstrip("/")
    return site.absolute_base + "/" + permalink.escape_path(relative), alt, relative


def _author(value: Any, notes: _Notes) -> str | None:
    """A name, a list of names (joined), or a mapping with `name` or `display_name` (or a list of those)."""
    names = value if isinstance(value, list) else [value]
    found = []
    for item in names:
        if isinstance(item, dict):
            item = item.get("name") or item.get("display_name")
        if item is None or item == "":
            continue
        if not isinstance(item, _SCALARS):
            notes.warn("author", f"author has a {_kind(item)} ({_shown(item)}) where a name should be; it is "
                                 "left out")
            continue
        found.append(_ruby_str(item))
    return ", ".join(found) or None


def _excerpt_source(data: dict[str, Any], content: str, site: SiteConfig, notes: _Notes) -> str:
    own = notes.text(data, "excerpt", "the excerpt is taken from the post")
    if own is not None:
        return own
    separator = notes.text(data, "excerpt_separator", "the site's excerpt separator is used")
    separator = (separator or site.excerpt_separator).replace("\r\n", "\n")
    if not separator:
        return content
    head, found, tail = content.partition(separator)
    if not found or not tail:
        return head
    definitions = _LINK_DEFINITION.findall(tail) if "]:" in tail else []
    return head + ("\n\n" + "\n".join(definitions) if definitions else "")


def _slug_title(name_slug: str) -> str:
    words = name_slug.split("-")
    while words and not words[-1]:
        words.pop()
    return " ".join(word.capitalize() for word in words)


def read_post(
    path: str | os.PathLike[str], relative: str, site: SiteConfig, folders: list[str], defaults: dict[str, Any] | None = None
) -> tuple[Post | None, list[PostWarning]]:
    """Read one post file, with the front-matter `defaults` that apply to it beneath its own front matter.

    Returns the post, None when it is not published (a draft or `published: false`), and warnings about fields
    that were left out or replaced; raises PostError when the post cannot be read at all.
    """
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as err:
        raise PostError(f"cannot be read: {err.strerror}") from err
    own, content = split_front_matter(raw)
    data = _with_defaults(defaults or {}, own)
    if data.get("published") is False or (not site.is_jekyll and data.get("draft") is True):
        return None, []
    notes = _Notes(_line_finder(raw))
    name = os.path.basename(path)
    basename, ext = os.path.splitext(name)
    dated = DATED_NAME.match(name)
    name_date, name_slug = (dated.group(1), dated.group(2)) if dated else (None, basename)
    name_slug = name_slug.rstrip(".")
    when = _post_date(data, name_date, site, notes.line_of)
    slug = notes.text(data, "slug", "the file name's slug is used") or name_slug
    title = notes.text(data, "title", "the title is made from the file name")
    categories = _categories(data, folders, notes)
    values = permalink.UrlValues(
        date=when,
        slug=slug,
        basename=basename,
        categories=list(categories),
        output_ext=".html",
        path=relative,
    )
    own_template = notes.text(data, "permalink", "the site's permalink is used")
    template = own_template or permalink.template_for(site.permalink)
    if own_template:
        try:
            permalink.generate(template, values)
        except ValueError as err:
            raise PostError(str(err), notes.line_of("permalink")) from err
    image, image_alt, image_path = _image(data, site, notes)
    post = Post(
        path=relative,
        date=when,
        title=title if title is not None else _slug_title(name_slug),
        slug=slug,
        categories=categories,
        tags=_tags(data, notes),
        author=_author(data.get("author"), notes),
        image=image,
        image_alt=image_alt,
        image_path=image_path,
        excerpt_source=_excerpt_source(data, content, site, notes),
        excerpt_is_html=ext.lower() == ".html",
        data=data,
        url_template=template,
        url_values=values,
        base_url=site.absolute_base,
    )
    return post, notes.warnings


class _Deferred:
    """A field of a post from the post cache that is made when first asked for (its front matter, its URL
    values): a warm read makes 20,000 posts, and most are only dated and sorted. A post made by its dataclass
    constructor has the field in its own `__dict__`, which takes precedence over this (it has no `__set__`)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, post: Post | None, owner: type) -> Any:
        if post is None:
            raise AttributeError(self.name)  # no class-level default: dataclasses and inspect look for one
        make, packed = post.__dict__["_deferred"]
        value = make(post, self.name, packed)
        post.__dict__[self.name] = value
        return value


# Set after the dataclass is made, so that its constructor keeps its own defaults for these fields.
Post.data = _Deferred("data")  # type: ignore[assignment]
Post.url_values = _Deferred("url_values")  # type: ignore[assignment]
