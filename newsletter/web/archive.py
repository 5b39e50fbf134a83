"""Past issues in the browser and as Atom: the same pages served by `newsletter serve` and written as files by
`newsletter archive`, with links made by a `Links` object (paths under the app, or relative files).

An issue is shown as it was sent: its stored full variant (or the variant a signed key names), with the personal
fields left blank, so no archived page can unsubscribe anyone. Skipped issues are not listed. A newsletter
with `archive = false` has no public archive; its issues open only with a signed variant key.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import sqlalchemy as sa
from itsdangerous import BadSignature

from .. import ledger
from ..config import Config, NewsletterConfig
from ..digest import Variants, view_url
from ..render import Digest, Recipient, personalise
from ..store import Store, issues
from ..tokens import _view_signer, variant_token  # noqa: F401  (variant_token: the web app's name for it)

ATOM = "http://www.w3.org/2005/Atom"
CSS_NAME = "web.css"


@dataclass(frozen=True)
class Entry:
    """One past issue as the archive lists it."""

    period: str
    number: int
    date: datetime
    subject: str
    posts: tuple[dict, ...]
    digest: Digest


class Links:
    """Where the archive's pages are, as the web app serves them (paths under its prefix)."""

    def __init__(self, prefix: str):
        self.prefix = prefix.rstrip("/")

    def css(self) -> str:
        return f"{self.prefix}/assets/{CSS_NAME}"

    def archive(self, newsletter: str) -> str:
        return f"{self.prefix}/archive/{newsletter}/"

    def issue(self, newsletter: str, period: str) -> str:
        return f"{self.prefix}/archive/{newsletter}/{period}/"

    def feed(self, newsletter: str) -> str:
        return f"{self.prefix}/archive/{newsletter}/feed.atom"


class RelativeLinks(Links):
    """Links between files of a static archive: `<newsletter>/index.html`, `<newsletter>/<period>/index.html`,
    `<newsletter>/feed.atom` and `web.css`, relative to a page `depth` folders below the archive's root."""

    def __init__(self, depth: int):
        super().__init__("")
        self.up = "../" * depth

    def css(self) -> str:
        return f"{self.up}{CSS_NAME}"

    def archive(self, newsletter: str) -> str:
        return f"{self.up}{newsletter}/index.html"

    def issue(self, newsletter: str, period: str) -> str:
        return f"{self.up}{newsletter}/{period}/index.html"

    def feed(self, newsletter: str) -> str:
        return f"{self.up}{newsletter}/feed.atom"


def entries(store: Store, config: Config, newsletter: NewsletterConfig, env: jinja2.Environment) -> list[Entry]:
    """The newsletter's issues that went out (not skipped ones), newest first, each with its full variant."""
    with store.engine.connect() as conn:
        periods = conn.execute(sa.select(issues.c.period).where(
            (issues.c.newsletter == newsletter.id) & (issues.c.status != "skipped"))
            .order_by(issues.c.reference_time.desc(), issues.c.id.desc())).scalars().all()
    found = []
    for period in periods:
        entry = entry_for(store, config, newsletter, period, env)
        if entry is not None:
            found.append(entry)
    return found


def entry_for(store: Store, config: Config, newsletter: NewsletterConfig, period: str,
              env: jinja2.Environment) -> Entry | None:
    record = ledger.find_issue(store, newsletter.id, period)
    if record is None or record.status == "skipped" or not record.posts:
        return None
    digest = Variants(store, config, newsletter, record, env).for_categories("")
    if digest is None:
        return None
    posts = tuple({"title": p.title, "link": p.link, "date": p.date, "categories": list(p.categories)}
                  for p in record.posts)
    return Entry(period, record.number, record.reference_time.astimezone(config.site.timezone), digest.subject,
                 posts, digest)


def variant_html(store: Store, secret: str, newsletter: str, period: str, token: str) -> str | None:
    """The stored variant a signed key names, with personal fields blank; None for a bad or foreign key."""
    try:
        issue_id, _, key = _view_signer(secret).unsign(token).decode("ascii").partition(".")
    except (BadSignature, UnicodeError):
        return None
    record = ledger.find_issue(store, newsletter, period)
    if record is None or str(record.id) != issue_id:
        return None
    row = ledger.load_variant(store, record.id, key)
    if row is None:
        return None
    return personalise(Digest(newsletter, None, None, row.subject, row.html, row.text, ()), Recipient("")).html


def issue_html(entry: Entry) -> str:
    """The issue's page: the full digest as sent, personal fields blank."""
    return personalise(entry.digest, Recipient("")).html


def archive_page(env: jinja2.Environment, config: Config, newsletter: NewsletterConfig, found: list[Entry],
                 links: Links) -> str:
    return env.get_template("web/archive.html.j2").render(
        site={"title": config.site.title, "url": config.site.absolute_base},
        newsletter={"id": newsletter.id, "title": newsletter.title, "description": newsletter.description},
        entries=found, links=links, page_title=f"{newsletter.title}: past issues")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def atom_feed(config: Config, newsletter: NewsletterConfig, found: list[Entry], links: Links,
              self_href: str) -> bytes:
    """A valid Atom 1.0 feed (RFC 4287) of the past issues; ids are the issues' view URLs, stable wherever the
    feed is published, and `updated` is the newest issue's time, so an unchanged archive gives the same bytes."""
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "title", newsletter.title)
    if newsletter.description:
        sub(feed, "subtitle", newsletter.description)
    sub(feed, "id", f"{config.web_base_url}/archive/{newsletter.id}/")
    sub(feed, "link", rel="self", type="application/atom+xml", href=self_href)
    sub(feed, "link", rel="alternate", type="text/html", href=links.archive(newsletter.id))
    newest = max((e.date for e in found), default=datetime(1970, 1, 1, tzinfo=timezone.utc))
    sub(feed, "updated", _stamp(newest))
    author = sub(feed, "author")
    sub(author, "name", config.site.title)
    for entry in found:
        item = sub(feed, "entry")
        sub(item, "title", entry.subject)
        sub(item, "id", view_url(config, newsletter.id, entry.period))
        sub(item, "link", rel="alternate", type="text/html", href=links.issue(newsletter.id, entry.period))
        sub(item, "updated", _stamp(entry.date))
        sub(item, "published", _stamp(entry.date))
        items = "".join(f'<li><a href="{_attr(p["link"])}">{_text(p["title"])}</a></li>' for p in entry.posts)
        sub(item, "content", f"<ul>{items}</ul>", type="html")
    ET.indent(feed)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="utf-8") + b"\n"


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return _text(value).replace('"', "&quot;")


def css() -> bytes:
    return (Path(__file__).resolve().parent.parent.parent / "templates" / "web" / CSS_NAME).read_bytes()


def stylesheet(config: Config) -> bytes:
    """The pages' stylesheet: the templates folder's `web/web.css` when it has one, else the bundled one."""
    mine = config.templates / "web" / CSS_NAME
    return mine.read_bytes() if mine.is_file() else css()


@dataclass
class WriteReport:
    written: list[Path]
    unchanged: int


def write_static(store: Store, config: Config, newsletters: list[NewsletterConfig], out: Path,
                 env: jinja2.Environment) -> WriteReport:
    """Write each public newsletter's archive page, issue pages and feed under `out`, with relative links;
    a file whose bytes are already there is left alone, so a re-run writes only what changed."""
    report = WriteReport([], 0)

    def put(path: Path, data: bytes) -> None:
        if path.is_file() and path.read_bytes() == data:
            report.unchanged += 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)
        report.written.append(path)

    put(out / CSS_NAME, stylesheet(config))
    for newsletter in newsletters:
        found = entries(store, config, newsletter, env)
        put(out / newsletter.id / "index.html",
            archive_page(env, config, newsletter, found, RelativeLinks(1)).encode("utf-8"))
        put(out / newsletter.id / "feed.atom", atom_feed(config, newsletter, found, RelativeLinks(1), "feed.atom"))
        for entry in found:
            put(out / newsletter.id / entry.period / "index.html", issue_html(entry).encode("utf-8"))
    return report
