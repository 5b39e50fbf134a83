"""Jekyll 4's post URLs: permalink styles, placeholders, slugify and path escaping.

The rules follow Jekyll's `Jekyll::URL`, `Drops::UrlDrop` and `Utils.slugify`, and are checked against real
Jekyll's `post.url` on the fixture sites under tests/fixtures (see tests/fixtures/jekyll/regenerate.sh).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from urllib.parse import quote

STYLES = {
    "pretty": "/:categories/:year/:month/:day/:title/",
    "none": "/:categories/:title:output_ext",
    "date": "/:categories/:year/:month/:day/:title:output_ext",
    "ordinal": "/:categories/:year/:y_day/:title:output_ext",
    "weekdate": "/:categories/:year/W:week/:short_day/:title:output_ext",
}

# Utils.slugify's character classes: \p{M} marks, \p{L} letters, \p{Nd} decimal digits are kept.
_PRETTY_EXTRA = "._~!$&'()+,;=@"
_PLACEHOLDER = re.compile(r":([a-z_]+)")
_SAFE_PATH = re.compile(r"^[a-zA-Z0-9./-]+$")
_ESCAPE_SAFE = "-._~!$&'()*+,;=:@/"


def _is_kept(char: str, extra: str) -> bool:
    if char in extra:
        return True
    if char.isdecimal() or char.isalpha():
        return True
    return unicodedata.category(char).startswith("M")


_ASCII_RUNS = {
    "default": re.compile(r"[^A-Za-z0-9]+"),
    "pretty": re.compile(r"[^A-Za-z0-9._~!$&'()+,;=@]+"),
}


def slugify(text: str, mode: str = "default", cased: bool = False) -> str:
    """Jekyll's Utils.slugify for the modes posts use: "default" and "pretty"."""
    extra = _PRETTY_EXTRA if mode == "pretty" else ""
    if mode == "raw":
        slug = re.sub(r"\s+", "-", text)
    elif text.isascii():
        slug = _ASCII_RUNS[mode].sub("-", text)
    else:
        out: list[str] = []
        for char in text:
            if _is_kept(char, extra):
                out.append(char)
            elif not out or out[-1] != "\x00":
                out.append("\x00")
        slug = "".join(out).replace("\x00", "-")
    slug = re.sub(r"^-|-$", "", slug)
    return slug if cased else slug.lower()


def escape_path(value: str) -> str:
    """Jekyll::URL.escape_path: percent-encode what is not allowed in a URI path segment."""
    if not value or _SAFE_PATH.match(value):
        return value
    return quote(value, safe=_ESCAPE_SAFE)


def _sanitize(url: str) -> str:
    result = ("/" + url).replace("..", "/")
    while "./" in result:
        result = result.replace("./", "")
    return re.sub("/+", "/", result)


def template_for(style: str) -> str:
    """The URL template of a permalink style name, or the pattern itself."""
    return STYLES.get(style, style)


class UrlValues:
    """The values Jekyll's UrlDrop offers a post's permalink template, computed only when the template uses
    them (most use four or five of the twenty-six). `date` is in the site's time zone."""

    _DATE_FORMATS = {
        "year": "%Y", "month": "%m", "day": "%d", "hour": "%H", "minute": "%M", "second": "%S",
        "short_month": "%b", "long_month": "%B", "short_year": "%y", "y_day": "%j", "short_day": "%a",
        "long_day": "%A",
    }  # fmt: skip

    def __init__(self, *, date: datetime, slug: str, basename: str, categories: list[str], output_ext: str,
                 path: str):
        self.date, self.slug, self.basename = date, slug, basename
        self.categories, self.output_ext, self.path = categories, output_ext, path

    def __contains__(self, name: str) -> bool:
        return name in self._DATE_FORMATS or hasattr(self, "_" + name)

    def __getitem__(self, name: str) -> str:
        if name in self._DATE_FORMATS:
            return self.date.strftime(self._DATE_FORMATS[name])
        return getattr(self, "_" + name)()

    def _collection(self) -> str:
        return "posts"

    def _path(self) -> str:
        return self.path

    def _output_ext(self) -> str:
        return self.output_ext

    def _name(self) -> str:
        return slugify(self.basename)

    def _title(self) -> str:
        return slugify(self.slug or self.basename, mode="pretty", cased=True)

    def _slug(self) -> str:
        return slugify(self.slug or self.basename)

    def _categories(self) -> str:
        return "/".join(dict.fromkeys(str(c).lower() for c in self.categories))

    def _slugified_categories(self) -> str:
        return "/".join(dict.fromkeys(s for s in (slugify(c) for c in self.categories) if s))

    def _i_day(self) -> str:
        return str(self.date.day)

    def _i_month(self) -> str:
        return str(self.date.month)

    def _w_year(self) -> str:
        return str(self.date.isocalendar()[0])

    def _week(self) -> str:
        return f"{self.date.isocalendar()[1]:02d}"

    def _w_day(self) -> str:
        return str(self.date.isocalendar()[2])


def unknown_placeholders(template: str) -> list[str]:
    """The placeholders of a permalink template that Jekyll would reject."""
    probe = UrlValues(date=datetime(2000, 1, 1), slug="", basename="", categories=[], output_ext="", path="")
    names = _PLACEHOLDER.findall(template)
    return [n for n in names if n not in probe and not (n.endswith("_") and n[:-1] in probe)]


def generate(template: str, values: UrlValues | dict[str, str]) -> str:
    """Fill a URL template as Jekyll::URL#generate_url_from_drop does, then sanitise it."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        pool = [name, name[:-1]] if name.endswith("_") else [name]
        winner = next((key for key in pool if key in values), None)
        if winner is None:
            raise ValueError(f"the permalink {template!r} uses :{name}, which Jekyll does not know")
        return match.group(0).replace(":" + winner, escape_path(values[winner]), 1)

    return _sanitize(re.sub("/+", "/", _PLACEHOLDER.sub(fill, template)))
