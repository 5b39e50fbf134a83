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


def slugify(text: str, mode: str = "default", cased: bool = False) -> str:
    """Jekyll's Utils.slugify for the modes posts use: "default" and "pretty"."""
    extra = _PRETTY_EXTRA if mode == "pretty" else ""
    if mode == "raw":
        slug = re.sub(r"\s+", "-", text)
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


def placeholders(
    *, date: datetime, slug: str, basename: str, categories: list[str], output_ext: str, path: str
) -> dict[str, str]:
    """The values Jekyll's UrlDrop offers a post's permalink template; `date` is in the site's zone."""
    seen: dict[str, None] = {}
    for category in categories:
        seen.setdefault(str(category).lower(), None)
    title = slugify(slug, mode="pretty", cased=True) if slug else slugify(basename, mode="pretty", cased=True)
    iso_year, iso_week, iso_day = date.isocalendar()
    return {
        "collection": "posts",
        "path": path,
        "name": slugify(basename),
        "title": title,
        "slug": slugify(slug) if slug else slugify(basename),
        "categories": "/".join(seen),
        "slugified_categories": "/".join(dict.fromkeys(slugify(c) for c in categories if slugify(c))),
        "year": date.strftime("%Y"),
        "month": date.strftime("%m"),
        "day": date.strftime("%d"),
        "hour": date.strftime("%H"),
        "minute": date.strftime("%M"),
        "second": date.strftime("%S"),
        "i_day": str(date.day),
        "i_month": str(date.month),
        "short_month": date.strftime("%b"),
        "long_month": date.strftime("%B"),
        "short_year": date.strftime("%y"),
        "y_day": date.strftime("%j"),
        "w_year": str(iso_year),
        "week": f"{iso_week:02d}",
        "w_day": str(iso_day),
        "short_day": date.strftime("%a"),
        "long_day": date.strftime("%A"),
        "output_ext": output_ext,
    }


def generate(template: str, values: dict[str, str]) -> str:
    """Fill a URL template as Jekyll::URL#generate_url_from_drop does, then sanitise it."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        pool = [name, name[:-1]] if name.endswith("_") else [name]
        winner = next((key for key in pool if key in values), None)
        if winner is None:
            raise ValueError(f"the permalink {template!r} uses :{name}, which Jekyll does not know")
        return match.group(0).replace(":" + winner, escape_path(values[winner]), 1)

    return _sanitize(re.sub("/+", "/", _PLACEHOLDER.sub(fill, template)))
