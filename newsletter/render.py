"""The renderer: Jinja2 templates to an inlined-CSS HTML digest and its plain-text twin.

A digest is rendered and inlined once per distinct variant; the personal fields (the subscriber's name and
address, the unsubscribe and preferences links) are left as markers and filled in afterwards by `personalise`,
escaped for their context, so that premailer never runs once per subscriber.

Content never becomes a personal field. The templates see each personal field as a placeholder made with a
random word for this one rendering, which no post can guess; once the output is complete, any marker-like text
in it (which can only have come from content: a title, an excerpt, the front matter, the configuration) is
neutralised with an invisible WORD JOINER, and only then do the placeholders become the markers `personalise`
fills in. Templates and the subject run in Jinja's sandbox: they can read the names the README lists, never
Python's internals, the environment or the shell.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
from lxml import html as lxml_html
from markupsafe import Markup
from premailer import Premailer

from .errors import Problem, RenderError
from .select import Selection

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
GMAIL_CLIP_BYTES = 102 * 1024
STYLE_LIMIT_BYTES = 16 * 1024
PERSONAL_FIELDS = ("name", "email", "unsubscribe_url", "preferences_url")
_MARKER = re.compile(r"XNLFIELD(" + "|".join(PERSONAL_FIELDS) + r")XNLEND")
#: What a provider fills in per recipient: our markers, and the substitution tags of sendgrid.py (%nl_...%).
#: Found in rendered output before the placeholders are turned into markers, they came from content.
_MARKER_LIKE = re.compile(r"XNLFIELD|%nl_", re.IGNORECASE)
WORD_JOINER = "\u2060"


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
    """A sandboxed Jinja2 environment over the user's templates folder, then the bundled one; HTML is
    autoescaped."""
    search = [str(templates)] + ([str(BUILTIN_TEMPLATES)] if BUILTIN_TEMPLATES != templates else [])
    env = jinja2.sandbox.SandboxedEnvironment(
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
    }


def _placeholder(nonce: str, field: str) -> str:
    return f"XNLRAW{nonce}{field}XNLEND"


def _with_placeholders(context: dict, nonce: str) -> dict:
    return {
        **context,
        "subscriber": {"name": _placeholder(nonce, "name"), "email": _placeholder(nonce, "email")},
        "unsubscribe_url": _placeholder(nonce, "unsubscribe_url"),
        "preferences_url": _placeholder(nonce, "preferences_url"),
    }


def _seal(output: str, nonce: str, where: str) -> str:
    """Neutralise marker-like text (it came from content), then turn this rendering's placeholders into the
    markers `personalise` fills in."""
    output = _MARKER_LIKE.sub(lambda m: m.group(0)[:1] + WORD_JOINER + m.group(0)[1:], output)
    output = re.sub(f"XNLRAW{nonce}(" + "|".join(PERSONAL_FIELDS) + ")XNLEND", lambda m: marker(m.group(1)),
                    output)
    if nonce.lower() in output.lower():
        raise RenderError(f"{where}: a personal field (subscriber.name, subscriber.email, unsubscribe_url, "
                          "preferences_url) went through a filter or test; use it as it is, like "
                          "{{ subscriber.email }}: it is filled in after rendering")
    return output


def _template_line(err: BaseException) -> tuple[str | None, int | None]:
    """The template file and line an exception was raised at, from the frames Jinja puts in the traceback
    for template code (the deepest one, so an included template is named rather than its includer)."""
    found: tuple[str | None, int | None] = (None, None)
    tb = err.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.endswith(".py"):
            found = (None if filename == "<template>" else filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _template_error(err: Exception, name: str, searchpath: str | None = None) -> RenderError:
    """A RenderError naming the template, its line when known, and how to fix what went wrong."""
    if isinstance(err, jinja2.TemplateNotFound):
        return RenderError(f"template {err.name!r} not found in {searchpath}")
    if isinstance(err, jinja2.TemplateSyntaxError):
        return RenderError(f"{err.filename or name}:{err.lineno}: template syntax error: {err.message}")
    filename, line = _template_line(err)
    where = f"{filename or name}:{line}" if line else name
    if isinstance(err, jinja2.sandbox.SecurityError):
        return RenderError(f"{where}: unsafe, refused by the template sandbox: {str(err).rstrip('.')}; templates "
                           "may only use the names listed in the README")
    if isinstance(err, jinja2.UndefinedError):
        return RenderError(f"{where}: {err.message}; see the README for the names templates can use")
    return RenderError(f"{where}: {type(err).__name__}: {err}")


def _render(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except Exception as err:
        raise _template_error(err, name, env.loader.searchpath[0]) from err


_SUBJECT_ENV = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)


def render_subject(template: str, context: dict, name: str = "subject") -> str:
    """Render a `subject` template in the sandbox; `name` says where it comes from, for errors."""
    try:
        return _SUBJECT_ENV.from_string(template).render(context)
    except Exception as err:
        raise _template_error(err, name) from err


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


def subject_where(newsletter: Any) -> str:
    """How errors name a newsletter's subject template: by its config key."""
    return f"newsletters.{newsletter.id}.subject"


def compile_templates(env: jinja2.Environment, newsletter: Any) -> list[RenderError]:
    """Load and compile a newsletter's templates and subject without rendering them: an error for each one
    with a syntax error or missing."""
    errors = []
    for name in (f"{newsletter.template}.html.j2", f"{newsletter.template}.txt.j2", None):
        try:
            if name is None:
                _SUBJECT_ENV.from_string(newsletter.subject)
            else:
                env.get_template(name)
        except Exception as err:
            error = _template_error(err, name or subject_where(newsletter), env.loader.searchpath[0])
            error.__cause__ = err
            errors.append(error)
    return errors


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
    nonce = secrets.token_hex(8)
    context = _with_placeholders(_context(newsletter, site, issue, selection, image_sizes), nonce)
    html_name, text_name = f"{newsletter.template}.html.j2", f"{newsletter.template}.txt.j2"
    subject_name = subject_where(newsletter)
    document = _seal(inline_css(_render(env, html_name, context)), nonce, html_name)
    text = _seal(_render(env, text_name, context), nonce, text_name)
    subject = _seal(render_subject(newsletter.subject, context, subject_name), nonce, subject_name)
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
        return lambda match: escape(values[match.group(1)])

    return Personal(
        subject=_header_safe(_MARKER.sub(fill(_header_safe), digest.subject)),
        html=_MARKER.sub(fill(lambda v: html.escape(v, quote=True)), digest.html),
        text=_MARKER.sub(fill(lambda v: v), digest.text),
    )
