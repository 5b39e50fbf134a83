"""The renderer: Jinja2 templates to an inlined-CSS HTML digest and its plain-text twin.

A digest is rendered and inlined once per distinct variant; the personal fields (the subscriber's name and
address, the unsubscribe and preferences links) are left as markers and filled in afterwards by `personalise`,
escaped for their context, so that premailer never runs once per subscriber.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from lxml import html as lxml_html
from markupsafe import Markup
from premailer import Premailer

from .errors import Problem, RenderError
from .select import Selection

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
GMAIL_CLIP_BYTES = 102 * 1024
STYLE_LIMIT_BYTES = 16 * 1024
PERSONAL_FIELDS = ("name", "email", "unsubscribe_url", "preferences_url")
_MARKER = re.compile(r"XNLFIELD([a-z_]+)XNLEND")


def marker(field: str) -> str:
    """The placeholder a personal field stands as in a rendered variant: letters only, safe in any context."""
    return f"XNLFIELD{field}XNLEND"


@dataclass(frozen=True)
class Recipient:
    """Who one copy is for, and the personal links that copy carries."""

    email: str
    name: str = ""
    unsubscribe_url: str = ""
    preferences_url: str = ""


@dataclass(frozen=True)
class IssueInfo:
    number: int
    date: datetime
    period: str
    view_url: str
    #: how many more posts qualified than the newsletter's max_posts carries
    more: int = 0


@dataclass(frozen=True)
class Digest:
    """One rendered variant of an issue, with markers where the personal fields go."""

    newsletter_id: str
    issue: IssueInfo
    selection: Selection
    subject: str
    html: str
    text: str
    checks: tuple[Problem, ...]


@dataclass(frozen=True)
class Personal:
    subject: str
    html: str
    text: str


def template_environment(templates: Path) -> jinja2.Environment:
    """A Jinja2 environment over the user's templates folder, then the bundled one; HTML is autoescaped."""
    search = [str(templates)] + ([str(BUILTIN_TEMPLATES)] if BUILTIN_TEMPLATES != templates else [])
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=lambda name: name is None or not name.endswith((".txt.j2", ".txt")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["scaled_height"] = scaled_height
    env.filters["wrap_text"] = _wrap_text
    return env


def scaled_height(post: dict[str, Any], width: int) -> int | None:
    """The height an image shown `width` pixels wide needs to keep its proportions, when its file is known."""
    size = post.get("image_size")
    if not size or not size[0]:
        return None
    return max(1, round(width * size[1] / size[0]))


def _wrap_text(text: str, width: int = 72, indent: str = "") -> str:
    import textwrap

    blocks = [textwrap.fill(block, width, initial_indent=indent, subsequent_indent=indent) for block in
              text.split("\n\n")]  # fmt: skip
    return "\n\n".join(blocks)


def _context(newsletter: Any, site: Any, issue: IssueInfo, selection: Selection, sizes: dict) -> dict:
    def post_fields(post: Any) -> dict[str, Any]:
        fields = post.as_json()
        fields.update(
            date=post.date,
            excerpt_html=Markup(post.excerpt_html),
            image_alt=post.image_alt or post.title,
            image_size=sizes.get(post.key),
            data=post.data,
        )
        return fields

    by_key = {post.key: post_fields(post) for post in selection.posts}
    return {
        "newsletter": {
            "id": newsletter.id,
            "title": newsletter.title,
            "description": newsletter.description,
            "categories": list(newsletter.categories),
        },
        "site": {"title": site.title, "url": site.absolute_base},
        "issue": {"number": issue.number, "date": issue.date, "period": issue.period, "view_url": issue.view_url,
                  "more": issue.more},
        "posts": list(by_key.values()),
        "sections": [
            {"category": section.category, "posts": [by_key[p.key] for p in section.posts]}
            for section in selection.sections
        ],
        "subscriber": {"name": marker("name"), "email": marker("email")},
        "unsubscribe_url": marker("unsubscribe_url"),
        "preferences_url": marker("preferences_url"),
    }


def _render(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as err:
        raise RenderError(f"template {err.name!r} not found in {env.loader.searchpath[0]}") from err
    except jinja2.TemplateSyntaxError as err:
        raise RenderError(f"{err.filename or name}:{err.lineno}: template syntax error: {err.message}") from err
    except jinja2.UndefinedError as err:
        raise RenderError(f"{name}: {err.message}; see the README for the names templates can use") from err


def render_subject(template: str, context: dict) -> str:
    try:
        return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(context)
    except jinja2.TemplateError as err:
        raise RenderError(f"the subject template {template!r} failed: {err}") from err


_IMPORT_RULE = re.compile(r"@import\s+[^;]*;?", re.IGNORECASE)


def _without_imports(document: str) -> str:
    """Drop @import rules from <style> blocks: cssutils, which premailer parses CSS with, fetches them over the
    network whatever premailer's allow_network says."""
    tree = lxml_html.document_fromstring(document)
    changed = False
    for style in tree.iter("style"):
        if style.text and "@import" in style.text.lower():
            style.text = _IMPORT_RULE.sub("", style.text)
            changed = True
    if not changed:
        return document
    return lxml_html.tostring(tree, doctype=tree.getroottree().docinfo.doctype, encoding="unicode")


def inline_css(document: str) -> str:
    """Inline the CSS with premailer, set up so it never reaches the network and keeps what email needs."""
    return Premailer(
        _without_imports(document),
        base_url=None,
        disable_link_rewrites=True,
        allow_network=False,
        allow_loading_external_files=False,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        cache_css_parsing=True,
        # Without this premailer rewrites width/height attributes from CSS ("auto"), losing the image size.
        disable_basic_attributes=["width", "height"],
    ).transform()


def render_digest(
    env: jinja2.Environment,
    *,
    newsletter: Any,
    site: Any,
    issue: IssueInfo,
    selection: Selection,
    image_sizes: dict[str, tuple[int, int]],
) -> Digest:
    """Render the HTML and text templates and the subject for one variant, inline its CSS and check it."""
    context = _context(newsletter, site, issue, selection, image_sizes)
    document = inline_css(_render(env, f"{newsletter.template}.html.j2", context))
    text = _render(env, f"{newsletter.template}.txt.j2", context)
    subject = render_subject(newsletter.subject, context)
    checks = check_html(document, where=f"{newsletter.template}.html.j2")
    return Digest(newsletter.id, issue, selection, subject, document, text, tuple(checks))


def check_html(document: str, where: str) -> list[Problem]:
    """What would make the digest look wrong in a mail client: Gmail's clipping, oversized styles, images
    that cannot load or have no alternative text."""
    problems = []
    size = len(document.encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        problems.append(Problem(where, f"the HTML is {size / 1024:.0f} KB; Gmail clips messages over 102 KB "
                                       "(lower max_posts or shorten excerpts)"))  # fmt: skip
    tree = lxml_html.document_fromstring(document)
    style = sum(len((node.text or "").encode("utf-8")) for node in tree.iter("style"))
    if style > STYLE_LIMIT_BYTES:
        problems.append(Problem(where, f"the <style> block is {style / 1024:.0f} KB; Gmail drops it over 16 KB"))
    for image in tree.iter("img"):
        src = image.get("src") or ""
        if not re.match(r"^https?://", src):
            problems.append(Problem(where, f"image {src!r} has no absolute URL; set [site] url"))
        if not (image.get("alt") or "").strip():
            problems.append(Problem(where, f"image {src!r} has no alt text"))
    return problems


def _header_safe(value: str) -> str:
    return " ".join(value.split())


def personalise(digest: Digest, recipient: Recipient) -> Personal:
    """Fill the personal fields into one variant, escaped for HTML, for text, and for the Subject header."""
    values = {field: str(getattr(recipient, field) or "") for field in PERSONAL_FIELDS}

    def fill(escape: Any) -> Any:
        return lambda match: escape(values.get(match.group(1), ""))

    return Personal(
        subject=_header_safe(_MARKER.sub(fill(_header_safe), digest.subject)),
        html=_MARKER.sub(fill(lambda v: html.escape(v, quote=True)), digest.html),
        text=_MARKER.sub(fill(lambda v: v), digest.text),
    )
