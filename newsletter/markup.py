"""Markdown to safe HTML and plain text, for excerpts.

Posts are untrusted input as far as an email client is concerned: their HTML is rendered with markdown-it-py
and then cleaned with nh3 down to a small subset (no script, no style, no forms, no event handlers, only http,
https and mailto links), with relative links made absolute against the post's own URL.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
    "img", "li", "ol", "p", "pre", "s", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "u",
    "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"},
    "td": {"align"},
    "th": {"align"},
}
URL_SCHEMES = {"http", "https", "mailto"}
_LIQUID = re.compile(r"\{%-?.*?-?%\}|\{\{-?.*?-?\}\}", re.DOTALL)
_LIQUID_COMMENT = re.compile(r"\{%-?\s*comment\s*-?%\}.*?\{%-?\s*endcomment\s*-?%\}", re.DOTALL)
_DROPPED_WITH_CONTENT = {"script", "style", "form", "button", "select", "textarea", "iframe", "object", "noscript"}
_TEXT_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "hr"}


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True, "typographer": False}).enable(["table", "strikethrough"])


def strip_liquid(text: str) -> str:
    """Remove Liquid tags and output markup, which only Jekyll can evaluate."""
    return _LIQUID.sub("", _LIQUID_COMMENT.sub("", text))


def sanitize(fragment: str, base_url: str) -> str:
    """Clean an HTML fragment to the safe subset and make its links and images absolute against `base_url`."""

    def absolutize(element: str, attribute: str, value: str) -> str | None:
        if attribute in ("href", "src"):
            joined = urljoin(base_url, value.strip())
            return joined if re.match(r"^(https?:|mailto:)", joined, re.IGNORECASE) else None
        return value

    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        clean_content_tags=_DROPPED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=absolutize,
        url_schemes=URL_SCHEMES,
        link_rel="noopener",
    ).strip()


def html_to_text(fragment: str) -> str:
    """Plain text of a sanitised fragment: blocks separated by blank lines, list items on lines of their own."""
    from lxml import html as lxml_html  # only when a selected post's excerpt is rendered

    if not fragment.strip():
        return ""
    parts: list[str] = []

    def text(value: str | None, keep: bool) -> str:
        return (value or "") if keep else re.sub(r"\s+", " ", value or "")

    def walk(element: Any, keep: bool = False) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        keep = keep or tag == "pre"
        if tag == "br":
            parts.append("\n")
        elif tag == "li":
            parts.append("\n- ")
        elif tag in ("td", "th"):
            parts.append(" ")
        parts.append(text(element.text, keep))
        for child in element:
            walk(child, keep)
            parts.append(text(child.tail, keep))
        if tag in _TEXT_BLOCKS:
            parts.append("\n\n")
        elif tag == "tr":
            parts.append("\n")

    walk(lxml_html.fragment_fromstring(fragment, create_parent="div"))
    lines = [line.strip() for line in "".join(parts).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def render_excerpt(source: str, *, is_html: bool, base_url: str) -> tuple[str, str]:
    """Render an excerpt's source (Markdown, or HTML for .html posts) to (safe HTML, plain text)."""
    source = strip_liquid(source)
    rendered = source if is_html else _markdown().render(source)
    safe = sanitize(rendered, base_url)
    return safe, html_to_text(safe)
