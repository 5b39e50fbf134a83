"""The reader: a blog's posts as Jekyll 4 sees them.

Reads every post file under any `_posts/` folder of a Jekyll site (or every Markdown file of a plain folder
with front-matter dates), applies Jekyll's rules for dates, categories, titles, slugs and URLs, and returns
`Post` values, newest first. A post that cannot be read is reported as a `Problem` naming the file and line and
skipped; the others are still returned. Excerpts are rendered lazily, so only the posts a digest selects pay
for Markdown and sanitising.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import frontmatter
import yaml

from . import permalink
from .clock import localize, parse_moment
from .config import SiteConfig
from .markup import render_excerpt

MARKDOWN_EXTS = frozenset({".markdown", ".mkdown", ".mkdn", ".mkd", ".md"})
POST_EXTS = MARKDOWN_EXTS | {".html"}
DATED_NAME = re.compile(r"^(\d{2,4}-\d{1,2}-\d{1,2})-([^/]*)(\.[^.]+)$")
# Jekyll's YAML_FRONT_MATTER_REGEXP: a first line of ---, closed by a line of --- or ...
FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n?)^(?:---|\.\.\.)[ \t]*$\n?", re.DOTALL | re.MULTILINE)
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:.+$", re.MULTILINE)
_YAML = frontmatter.YAMLHandler()


class PostError(Exception):
    """A post that cannot be read; `line` is the line in the file when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


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
            "data": json.loads(json.dumps(self.data, default=str)), "url": self.url, "base_url": self.base_url,
        }  # fmt: skip

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
        data = _YAML.load(match.group(1)) or {}
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


def _values(value: Any, split: bool) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split() if split else [value]
    if isinstance(value, list):
        flat: list[Any] = []
        for item in value:
            flat.extend(_values(item, False) if isinstance(item, list) else [] if item is None else [item])
        return flat
    return [value]


def _categories(data: dict[str, Any], folders: list[str]) -> tuple[str, ...]:
    merged = list(folders)
    for value in _values(data.get("categories"), split=True):
        if value not in merged:
            merged.append(value)
    extra = data.get("category") if data.get("category") is not None else data.get("categories")
    merged += _values(extra, split="category" not in data or data.get("category") is None)
    return tuple(dict.fromkeys(_ruby_str(v) for v in merged))


def _tags(data: dict[str, Any]) -> tuple[str, ...]:
    if data.get("tag") is not None:
        return tuple(_ruby_str(v) for v in _values(data["tag"], split=False))
    return tuple(_ruby_str(v) for v in _values(data.get("tags"), split=True))


def _post_date(data: dict[str, Any], name_date: str | None, site: SiteConfig, line_of: Any) -> datetime:
    value = data.get("date")
    if value:
        if isinstance(value, datetime) and value.tzinfo is None and site.is_jekyll:
            # Jekyll's YAML reader takes an unquoted timestamp without an offset as UTC (seen in Jekyll 4.3),
            # and its post.url uses that instant; links must match, so the reader does the same.
            return value.replace(tzinfo=timezone.utc).astimezone(site.timezone)
        if isinstance(value, (datetime, date)):
            return localize(value, site.timezone)
        if isinstance(value, str):
            try:
                return parse_moment(value, site.timezone)
            except ValueError:
                pass
        raise PostError(f"invalid date {value!r} in front matter; write it like 2025-07-22T12:00:26", line_of("date"))
    if name_date is None:
        raise PostError("no date: add `date:` to the front matter or name the file YYYY-MM-DD-slug.md")
    try:
        year, month, day = (int(part) for part in name_date.split("-"))
        return localize(date(year, month, day), site.timezone)
    except ValueError as err:
        raise PostError(f"invalid date {name_date!r} in the file name: {err}") from err


def _line_finder(raw: bytes) -> Any:
    """A function giving the line of a top-level front-matter key, computed only when an error needs it."""

    def line_of(key: str) -> int | None:
        text = raw.decode("utf-8", "replace").removeprefix("\ufeff").replace("\r\n", "\n")
        for number, line in enumerate(text.splitlines(), start=1):
            if line.startswith(key + ":"):
                return number
        return None

    return line_of


def _image(data: dict[str, Any], site: SiteConfig) -> tuple[str | None, str | None, str | None]:
    """(absolute URL, alt text, path inside the site when the image is a site file) of the post's image."""
    value = data.get("image")
    alt = data.get("image_alt")
    if isinstance(value, dict):
        alt = value.get("alt", alt)
        value = value.get("path") or value.get("url")
    if not value or not isinstance(value, str):
        return None, None, None
    value = value.strip()
    alt_text = _ruby_str(alt) if alt is not None else None
    if value.startswith("//"):
        return "https:" + value, alt_text, None
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", value):
        return value, alt_text, None
    # As Jekyll's absolute_url filter: url + baseurl + the path, with a leading slash or not.
    relative = posixpath.normpath("/" + value).lstrip("/")
    return site.absolute_base + "/" + permalink.escape_path(relative), alt_text, relative


def _author(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name") or value.get("display_name")
    if isinstance(value, list):
        return ", ".join(_ruby_str(v) for v in value if v is not None) or None
    return _ruby_str(value) if value not in (None, "") else None


def _excerpt_source(data: dict[str, Any], content: str, site: SiteConfig) -> str:
    if data.get("excerpt") is not None:
        return _ruby_str(data["excerpt"])
    separator = data.get("excerpt_separator") or site.excerpt_separator
    separator = str(separator).replace("\r\n", "\n")
    head, found, tail = content.partition(separator)
    if not found or not tail:
        return head
    definitions = _LINK_DEFINITION.findall(tail)
    return head + ("\n\n" + "\n".join(definitions) if definitions else "")


def read_post(
    path: Path, relative: str, site: SiteConfig, folders: list[str]
) -> Post | None:
    """Read one post file; None when it is not published (a draft or `published: false`)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PostError(f"cannot be read: {err.strerror}") from err
    data, content = split_front_matter(raw)
    for prefix, values in site.defaults:
        if not prefix or relative == prefix or relative.startswith(prefix + "/"):
            data = {**values, **data}
    if data.get("published") is False or (not site.is_jekyll and data.get("draft") is True):
        return None
    line_of = _line_finder(raw)
    name = path.name
    ext = os.path.splitext(name)[1]
    dated = DATED_NAME.match(name)
    name_date, name_slug = (dated.group(1), dated.group(2)) if dated else (None, os.path.splitext(name)[0])
    name_slug = name_slug.rstrip(".")
    when = _post_date(data, name_date, site, line_of)
    slug = _ruby_str(data["slug"]) if data.get("slug") is not None else name_slug
    if data.get("title") is not None:
        title = _ruby_str(data["title"])
    else:
        words = name_slug.split("-")
        while words and not words[-1]:
            words.pop()
        title = " ".join(word.capitalize() for word in words)
    categories = _categories(data, folders)
    values = permalink.UrlValues(
        date=when,
        slug=slug,
        basename=os.path.splitext(name)[0],
        categories=list(categories),
        output_ext=".html",
        path=relative,
    )
    template = str(data.get("permalink") or permalink.template_for(site.permalink))
    if data.get("permalink"):
        try:
            permalink.generate(template, values)
        except ValueError as err:
            raise PostError(str(err), line_of("permalink")) from err
    image, image_alt, image_path = _image(data, site)
    return Post(
        path=relative,
        date=when,
        title=title,
        slug=slug,
        categories=categories,
        tags=_tags(data),
        author=_author(data.get("author")),
        image=image,
        image_alt=image_alt,
        image_path=image_path,
        excerpt_source=_excerpt_source(data, content, site),
        excerpt_is_html=ext.lower() == ".html",
        data=data,
        url_template=template,
        url_values=values,
        base_url=site.absolute_base,
    )
