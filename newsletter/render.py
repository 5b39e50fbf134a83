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

import functools
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
# A rendering's placeholders, whatever its nonce (16 hex digits); _seal keeps only those of its own nonce. One
# pattern compiled once: a pattern with the nonce in it was compiled anew for every template of every variant.
_PLACEHOLDER = re.compile("XNLRAW([0-9a-f]{16})(" + "|".join(PERSONAL_FIELDS) + ")XNLEND")
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
            image_description=post.image_alt or "",
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
        "fit_images": fit_images,
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
    output = _PLACEHOLDER.sub(lambda m: marker(m.group(2)) if m.group(1) == nonce else m.group(0), output)
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


@functools.lru_cache(maxsize=64)
def _subject_template(template: str) -> jinja2.Template:
    """The compiled subject: every variant of an issue renders the same one, and compiling it was a tenth of a
    variant's rendering. A template that does not compile raises each time (errors are not cached)."""
    return _SUBJECT_ENV.from_string(template)


def render_subject(template: str, context: dict, name: str = "subject") -> str:
    """Render a `subject` template in the sandbox; `name` says where it comes from, for errors."""
    try:
        return _subject_template(template).render(context)
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


class _Inliner(Premailer):
    """Premailer, remembering what it made of each stylesheet: every variant of an issue carries the same one,
    and parsing it and writing back the rules it cannot inline was most of the cost of rendering a variant.
    The remembered rules are tuples and never changed; the leftover rules are only read."""

    _rules: dict[tuple, tuple[list, list]] = {}
    _leftover_text: dict[int, tuple[list, str]] = {}

    def _parse_style_rules(self, css_body, ruleset_index):
        key = (css_body, ruleset_index, self.strip_important, self.disable_validation)
        if key not in self._rules:
            if len(self._rules) >= 64:  # a daemon's templates may change; keep the memory bounded
                self._rules.clear()
                self._leftover_text.clear()
            self._rules[key] = super()._parse_style_rules(css_body, ruleset_index)
        return self._rules[key]

    def _css_rules_to_string(self, rules):
        found = self._leftover_text.get(id(rules))
        if found is None or found[0] is not rules:
            found = (rules, super()._css_rules_to_string(rules))
            if any(rules is leftover for _, leftover in self._rules.values()):
                self._leftover_text[id(rules)] = found
        return found[1]


def inline_css(document: str) -> str:
    """Inline the CSS with premailer, set up so it never reaches the network and keeps what email needs."""
    return _Inliner(
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
                _subject_template(newsletter.subject)
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
    checks = check_html(document, where=f"{newsletter.template}.html.j2",
                        image_sizes={post.image: image_sizes[post.key] for post in selection.posts
                                     if post.image and post.key in image_sizes})
    return Digest(newsletter.id, issue, selection, subject, document, text, tuple(checks))


def check_html(document: str, where: str,
               image_sizes: dict[str, tuple[int, int]] | None = None) -> list[Problem]:
    """What would make the digest look wrong in a mail client: Gmail's clipping, oversized styles, images
    that cannot load, have no alternative text, would push Outlook's fixed column wider or look soft on
    high-density screens, and tables too wide for the column. `image_sizes` maps image URLs to their files'
    pixel sizes, where known."""
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
        if image.get("alt") is None:  # alt="" is right for a decorative image
            problems.append(Problem(where, f"image {src!r} has no alt text"))
        problems += [Problem(where, message) for message in _image_width_problems(image, src, image_sizes or {})]
    for table in tree.iter("table"):
        if table.get("role") != "presentation":
            problems += [Problem(where, message) for message in _table_width_problems(table)]
    return problems


#: The width every desktop client, and Outlook's fixed table, gives the digest.
MESSAGE_WIDTH = 600
#: A rough width of one character of body text, to tell a table that can be wrapped into the column from one
#: that cannot.
CHARACTER_PIXELS = 8
_PIXELS = re.compile(r"^\s*(\d+)(?:px)?\s*$")
_PADDING = re.compile(r"(?:^|;)\s*padding(-left|-right)?\s*:\s*([^;]+)", re.IGNORECASE)


def _pixels(value: str | None) -> int | None:
    match = _PIXELS.match(value or "")
    return int(match.group(1)) if match else None


def _horizontal_padding(style: str) -> int:
    """Left plus right padding of an inline style, from `padding` (1 to 4 values) or `padding-left/right`."""
    sides = {"left": 0, "right": 0}
    for side, value in _PADDING.findall(style or ""):
        values = [_pixels(v) or 0 for v in value.split()]
        if side:
            sides[side[1:]] = values[0] if values else 0
        elif values:
            right = values[1] if len(values) > 1 else values[0]
            sides.update(right=right, left=values[3] if len(values) > 3 else right)
    return sides["left"] + sides["right"]


def _room(element: Any) -> int:
    """The pixels an element has in a 600-pixel message once its ancestors' paddings are taken off."""
    return MESSAGE_WIDTH - sum(_horizontal_padding(a.get("style") or "") for a in element.iterancestors())


def _story(element: Any) -> str:
    """ in "<title>" for an element inside a story card, so that a warning names the post to fix."""
    for ancestor in element.iterancestors():
        if "card" in (ancestor.get("class") or "").split():
            heading = ancestor.find_class("card-title")
            return f" in \u201c{heading[0].text_content().strip()}\u201d" if heading else ""
    return ""


def _image_width_problems(image: Any, src: str, sizes: dict[str, tuple[int, int]]) -> list[str]:
    width, room = _pixels(image.get("width")), _room(image)
    if width is None:
        return [f"image {src!r}{_story(image)} has no width attribute: Outlook shows it at its file's own "
                f"size, which can be wider than the {room}-pixel column; give it width=\"{room}\" or less"]
    if width > room:
        return [f"image {src!r}{_story(image)} is {width} pixels wide: Outlook does not shrink it, so it "
                f"overflows the {room}-pixel column; give it width=\"{room}\" or less"]
    natural = (sizes.get(src) or (0, 0))[0]
    if natural and natural < 2 * width:
        return [f"image {src!r}{_story(image)} is {natural} pixels wide and shown {width} wide: soft on "
                f"high-density screens; use a file at least {2 * width} pixels wide"]
    return []


def _table_width_problems(table: Any) -> list[str]:
    """A table whose rows cannot be wrapped into the column, even one word to a line, overflows it."""
    room = _room(table)
    narrowest = 0
    for row in table.iter("tr"):
        cells = [c for c in row if c.tag in ("td", "th")]
        words = [max((len(w) for w in c.text_content().split()), default=0) for c in cells]
        narrowest = max(narrowest, sum(CHARACTER_PIXELS * n + 8 for n in words))
    if narrowest <= room:
        return []
    return [f"a table{_story(table)} needs about {narrowest} pixels even with every word on a line of its own, "
            f"more than the {room}-pixel column: Outlook widens the email for it and phones squeeze it; "
            "shorten it, or leave it out of the excerpt and link to it"]


def fit_images(fragment: str, column: int) -> Markup:
    """An excerpt's HTML with every image given a width attribute no wider than `column` (its height kept in
    proportion), and tables the column's width: Outlook for Windows ignores max-width and shows an image at
    its width attribute, or at its file's size when it has none. An image whose width is not known is shown
    at the column's width."""
    if "<img" not in fragment and "<table" not in fragment:
        return Markup(fragment)
    root = lxml_html.fragment_fromstring(fragment, create_parent="div")
    for image in root.iter("img"):
        width, height = _pixels(image.get("width")), _pixels(image.get("height"))
        if width is not None and width <= column:
            continue
        if width and height:
            image.set("height", str(max(1, round(height * column / width))))
        else:
            image.attrib.pop("height", None)
        image.set("width", str(column))
    for table in root.iter("table"):
        table.set("width", "100%")
    inner = html.escape(root.text or "", quote=False)
    return Markup(inner + "".join(lxml_html.tostring(child, encoding="unicode") for child in root))


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
