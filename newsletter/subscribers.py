"""Subscribers: who gets which newsletter, in which categories, and who must never be emailed again.

Addresses are checked for syntax only (email-validator, no DNS), normalised, and unique case-insensitively.
A CSV import is validated whole before anything is written: every bad row is reported with its line and
reason, and by default nothing is imported while any row is bad. Someone who unsubscribed, bounced or
complained is never made active again by an import unless the operator says --resubscribe.

A category must be one the subscriber can receive: one of the newsletter's `categories`, or, for a newsletter
that carries every category, one that a post of the site has (read at the import's `now`), so that nobody is
signed up for a category no issue will ever carry. Names and other fields may hold no control characters,
since names go into the To: header.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from .config import SUBSCRIBER_STATUSES, Config
from .errors import NewsletterError, Problem
from .store import Store, as_utc, subscribers, subscriptions

STATUSES = SUBSCRIBER_STATUSES
COLUMNS = ("email", "name", "newsletters", "categories", "status", "signed_up_at", "signup_ip")
CHUNK = 500
NAME_LENGTH = 200  # the width of subscribers.name
# A spreadsheet runs a cell starting with one of these as a formula; `export_csv(excel_safe=True)` quotes them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ImportRejected(NewsletterError):
    """An import with bad rows and no --skip-invalid: nothing was written."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} invalid row(s); nothing was imported (--skip-invalid imports the rest)")


@dataclass(frozen=True)
class Row:
    """One validated subscriber row: categories are per newsletter, an empty tuple meaning all."""

    line: int
    email: str
    name: str
    status: str
    newsletters: dict[str, tuple[str, ...]]


@dataclass
class Subscriber:
    id: int
    email: str
    name: str
    status: str
    source: str
    created_at: datetime
    updated_at: datetime
    newsletters: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: list[str] = field(default_factory=list)
    invalid: list[Problem] = field(default_factory=list)


def normalise_email(text: str) -> str:
    """The normalised form of an address, or ValueError saying what is wrong with it."""
    if "\r" in text or "\n" in text:
        raise ValueError("contains a line break")
    try:
        return validate_email(text.strip(), check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as err:
        raise ValueError(f"{text.strip()!r} is not a valid address: {err}") from None


def email_key(address: str) -> str:
    return address.casefold()


def encode_categories(categories: Iterable[str]) -> str:
    return ";".join(categories)


def decode_categories(stored: str) -> tuple[str, ...]:
    return tuple(c for c in stored.split(";") if c)


def categories_on_site(config: Config, now: datetime) -> list[str]:
    """The categories of the site's posts at `now`, each spelled as its newest post spells it."""
    from .site import read_site

    spelled: dict[str, str] = {}
    for post in read_site(config, now).posts:
        for category in post.categories:
            spelled.setdefault(category.casefold(), category)
    return sorted(spelled.values(), key=str.casefold)


def _unwanted_character(value: str) -> str | None:
    """Why a field cannot be stored: a line break or another control character, which would end up in a
    header line or a CSV cell that no longer reads back."""
    if "\r" in value or "\n" in value:
        return "a line break"
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"a control character (U+{ord(char):04X})"
    return None


class RowChecker:
    """Validates subscriber rows against the configured newsletters, remembering addresses already seen.

    `site_categories` gives the categories a newsletter carrying every category accepts; it is called at
    most once, when a row first names a category for such a newsletter. None accepts any category there."""

    def __init__(self, config: Config, default_newsletters: tuple[str, ...] = (),
                 site_categories: Callable[[], Iterable[str]] | None = None):
        self.config = config
        self.default_newsletters = default_newsletters
        self.seen: dict[str, int] = {}
        self._site_categories = site_categories
        self._site_spelling: dict[str, str] | None = None

    def check(self, line: int, fields: dict[str, str]) -> Row | str:
        """A valid Row, or the reason the row is invalid."""
        for column, value in fields.items():
            if (unwanted := _unwanted_character(value)) is not None:
                return f"the {column} field contains {unwanted}; remove it"
        name = (fields.get("name") or "").strip()
        if len(name) > NAME_LENGTH:
            return f"the name is {len(name)} characters long; at most {NAME_LENGTH} are kept"
        try:
            address = normalise_email(fields.get("email", ""))
        except ValueError as err:
            return str(err)
        if (first := self.seen.get(email_key(address))) is not None:
            return f"duplicate of line {first} ({address})"
        status = (fields.get("status") or "active").strip().lower()
        if status not in STATUSES:
            return f"status {status!r} must be one of {', '.join(STATUSES)}"
        ids = [n.strip() for n in (fields.get("newsletters") or "").split(";") if n.strip()]
        ids = ids or list(self.default_newsletters)
        if not ids:
            return "no newsletter: fill the newsletters column or pass --newsletter"
        unknown = [n for n in ids if n not in self.config.newsletters]
        if unknown:
            return f"unknown newsletter {unknown[0]!r} (known: {', '.join(sorted(self.config.newsletters))})"
        chosen, why = self._categories(fields.get("categories") or "", ids)
        if why:
            return why
        self.seen[email_key(address)] = line
        return Row(line, address, name, status, chosen)

    def _categories(self, cell: str, ids: list[str]) -> tuple[dict[str, tuple[str, ...]], str | None]:
        chosen: dict[str, list[str]] = {n: [] for n in ids}
        for item in (c.strip() for c in cell.split(";")):
            if not item:
                continue
            newsletter, _, category = item.rpartition(":")
            targets = [newsletter] if newsletter else ids
            if newsletter and newsletter not in chosen:
                return {}, f"category {item!r} names newsletter {newsletter!r}, which this row does not list"
            for target in targets:
                name, why = self._category(target, category)
                if why:
                    return {}, why
                if name.casefold() not in (c.casefold() for c in chosen[target]):
                    chosen[target].append(name)
        return {n: tuple(c) for n, c in chosen.items()}, None

    def _category(self, newsletter: str, category: str) -> tuple[str, str | None]:
        """The category as the newsletter (or, when it carries every category, the site) spells it, or why
        it is not one the newsletter can carry."""
        offered = self.config.newsletters[newsletter].categories
        if offered:
            match = next((c for c in offered if c.casefold() == category.casefold()), None)
            if match is None:
                return "", (f"category {category!r} is not one of newsletter {newsletter!r}'s categories "
                            f"({', '.join(offered)})")
            return match, None
        if self._site_categories is None:
            return category, None
        if self._site_spelling is None:
            self._site_spelling = {c.casefold(): c for c in self._site_categories()}
        match = self._site_spelling.get(category.casefold())
        if match is None:
            known = ", ".join(sorted(self._site_spelling.values(), key=str.casefold)) or "none"
            return "", (f"category {category!r} is not a category of any post on the site (categories: {known}); "
                        f"newsletter {newsletter!r} carries every category, so only those can be chosen")
        return match, None


def read_csv(stream: TextIO, checker: RowChecker, where: str) -> tuple[list[Row], list[Problem]]:
    """Every valid row and every problem of a subscriber CSV; the header names the columns."""
    reader = csv.reader(stream)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return [], [Problem(where, "the file is empty; the first row must name the columns", 1)]
    except csv.Error as err:
        return [], [Problem(where, f"not a CSV file: {err}", 1)]
    problems = [Problem(where, f"unknown column {h!r} (columns: {', '.join(COLUMNS)})", 1)
                for h in header if h not in COLUMNS]
    for index, name in enumerate(header):
        if name in COLUMNS and (first := header.index(name)) < index:
            problems.append(Problem(where, f"column {name!r} is in the header twice (columns {first + 1} and "
                                           f"{index + 1}); keep one", 1))
    if "email" not in header:
        problems.append(Problem(where, "no email column; the first row must name the columns", 1))
    if problems:
        return [], problems
    rows = []
    line = reader.line_num
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            reason = str(err)
            if reason.startswith("field larger than field limit"):
                reason = (f"a field is longer than {csv.field_size_limit()} characters, far more than any "
                          "subscriber field; is this the right file?")
            problems.append(Problem(where, f"cannot be read as CSV: {reason}", line))
            continue
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(Problem(where, f"has {len(values)} fields; the header has {len(header)}", line))
            continue
        result = checker.check(line, dict(zip(header, values)))
        if isinstance(result, str):
            problems.append(Problem(where, result, line))
        else:
            rows.append(result)
    return rows, problems


def import_rows(store: Store, rows: list[Row], now: datetime, *, source: str, resubscribe: bool) -> ImportReport:
    """Upsert validated rows in chunks, in one transaction; idempotent."""
    report = ImportReport()
    with store.engine.begin() as conn:
        for start in range(0, len(rows), CHUNK):
            _import_chunk(conn, rows[start : start + CHUNK], now, source, resubscribe, report)
    return report


def _import_chunk(conn, rows: list[Row], now: datetime, source: str, resubscribe: bool,
                  report: ImportReport) -> None:
    keys = [email_key(r.email) for r in rows]
    existing = {r.email_key: r for r in conn.execute(sa.select(subscribers).where(subscribers.c.email_key.in_(keys)))}
    new = [r for r in rows if email_key(r.email) not in existing]
    if new:
        conn.execute(subscribers.insert(), [
            {"email": r.email, "email_key": email_key(r.email), "name": r.name, "status": r.status,
             "source": source, "created_at": now, "updated_at": now} for r in new])
        report.added += len(new)
    ids = dict(conn.execute(sa.select(subscribers.c.email_key, subscribers.c.id)
                            .where(subscribers.c.email_key.in_(keys))).all())
    held = {(s.subscriber_id, s.newsletter): s.categories for s in conn.execute(
        sa.select(subscriptions).where(subscriptions.c.subscriber_id.in_(ids.values())))}
    from .preferences import close_departures, open_departures

    left, rejoined = open_departures(conn, list(ids.values())), []
    inserts = []
    for row in rows:
        key = email_key(row.email)
        before = existing.get(key)
        if before is not None and before.status != "active" and row.status == "active" and not resubscribe:
            report.kept_unsubscribed.append(row.email)
            continue
        changed = before is not None and (before.status != row.status
                                          or bool(row.name and row.name != before.name))
        if changed:
            conn.execute(subscribers.update().where(subscribers.c.id == before.id).values(
                status=row.status, name=row.name or before.name, updated_at=now))
        for newsletter, categories in row.newsletters.items():
            if (ids[key], newsletter) in left:  # they left this newsletter themselves: never re-added silently
                if not resubscribe:
                    report.kept_unsubscribed.append(f"{row.email} ({newsletter})")
                    continue
                rejoined.append((ids[key], newsletter))
            stored = encode_categories(categories)
            previous = held.get((ids[key], newsletter))
            if previous is None:
                inserts.append({"subscriber_id": ids[key], "newsletter": newsletter, "categories": stored,
                                "created_at": now})
                changed = changed or before is not None
            elif previous != stored:
                conn.execute(subscriptions.update().where(
                    (subscriptions.c.subscriber_id == ids[key]) & (subscriptions.c.newsletter == newsletter)
                ).values(categories=stored))
                changed = True
        if before is not None:
            report.updated += changed
            report.unchanged += not changed
    if inserts:
        conn.execute(subscriptions.insert(), inserts)
    close_departures(conn, rejoined, now)


def import_csv(store: Store, config: Config, stream: TextIO, where: str, now: datetime, *,
               newsletter: str | None = None, skip_invalid: bool = False, resubscribe: bool = False,
               site_categories: Iterable[str] | None = None) -> ImportReport:
    """Validate every row of a subscriber CSV, then add or update them. `site_categories` (default: read
    from the site at `now`, only when a row needs them) are what an every-category newsletter accepts."""
    if newsletter is not None:
        config.newsletter(newsletter)
    known = (lambda: site_categories) if site_categories is not None else (lambda: categories_on_site(config, now))
    checker = RowChecker(config, (newsletter,) if newsletter else (), known)
    rows, problems = read_csv(stream, checker, where)
    if problems and not skip_invalid:
        raise ImportRejected(problems)
    report = import_rows(store, rows, now, source="import", resubscribe=resubscribe)
    report.invalid = problems
    return report


def excel_safe(cell: str) -> str:
    """A cell a spreadsheet shows as text: a leading quote before anything it would run as a formula."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def export_csv(store: Store, out: TextIO, *, excel_safe_names: bool = False) -> int:
    """Write every subscriber with status and subscriptions; categories as newsletter:category, so the file
    imports back into an empty store unchanged. Streams: memory does not grow with the list.

    With `excel_safe_names`, a name a spreadsheet would run as a formula (=, +, -, @ first) gets a leading
    quote: safe to open, but those names no longer import back as they were. Only names are free text a
    subscriber chooses; an address cannot hold a formula's parentheses, and ids and categories are the site's."""
    from .signup import consent

    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    evidence = consent(store)  # a web sign-up's time and client IP, kept as proof of consent
    for subscriber in iter_subscribers(store):
        categories = [f"{n}:{c}" for n, cs in subscriber.newsletters.items() for c in cs]
        held = list(subscriber.newsletters) or _left(store, subscriber.id)  # someone who left every one
        signed_up, ip = evidence.get(email_key(subscriber.email), (None, ""))
        name = excel_safe(subscriber.name) if excel_safe_names else subscriber.name
        writer.writerow([subscriber.email, name, ";".join(held), ";".join(categories), subscriber.status,
                         signed_up.isoformat() if signed_up else "", ip])
        count += 1
    return count


def _left(store: Store, subscriber_id: int) -> list[str]:
    from .preferences import departures

    return sorted({d.newsletter for d in departures(store, subscriber_id) if d.rejoined_at is None})


def _with_subscriptions(conn, rows: list) -> list[Subscriber]:
    """Subscriber values for subscriber rows, with their subscriptions read in one query."""
    held: dict[int, dict[str, tuple[str, ...]]] = {}
    for s in conn.execute(sa.select(subscriptions).where(subscriptions.c.subscriber_id.in_([r.id for r in rows]))
                          .order_by(subscriptions.c.newsletter)):
        held.setdefault(s.subscriber_id, {})[s.newsletter] = decode_categories(s.categories)
    return [Subscriber(r.id, r.email, r.name, r.status, r.source, as_utc(r.created_at), as_utc(r.updated_at),
                       held.get(r.id, {})) for r in rows]


def iter_subscribers(store: Store, *, newsletter: str | None = None, status: str | None = None,
                     category: str | None = None) -> Iterator[Subscriber]:
    """Subscribers in id order, with their subscriptions, read a chunk at a time."""
    last = 0
    while True:
        query = sa.select(subscribers).where(subscribers.c.id > last).order_by(subscribers.c.id).limit(CHUNK)
        if status:
            query = query.where(subscribers.c.status == status)
        if newsletter:
            query = query.where(subscribers.c.id.in_(
                sa.select(subscriptions.c.subscriber_id).where(subscriptions.c.newsletter == newsletter)))
        with store.engine.connect() as conn:
            chunk = conn.execute(query).all()
            if not chunk:
                return
            found = _with_subscriptions(conn, chunk)
        yield from (s for s in found if not category or _takes(s, category, newsletter))
        last = chunk[-1].id


def _takes(subscriber: Subscriber, category: str, newsletter: str | None) -> bool:
    wanted = category.casefold()
    for name, categories in subscriber.newsletters.items():
        if newsletter and name != newsletter:
            continue
        if not categories or wanted in (c.casefold() for c in categories):
            return True
    return False


def find(store: Store, address: str) -> Subscriber | None:
    try:
        key = email_key(normalise_email(address))
    except ValueError:
        key = email_key(address.strip())
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(subscribers).where(subscribers.c.email_key == key)).all()
        return _with_subscriptions(conn, rows)[0] if rows else None


def set_status(store: Store, address: str, status: str, now: datetime) -> Subscriber:
    """Record a status change (remove = unsubscribed); the subscriptions stay on record."""
    found = find(store, address)
    if found is None:
        raise NewsletterError(f"no subscriber {address!r}")
    with store.engine.begin() as conn:
        conn.execute(subscribers.update().where(subscribers.c.id == found.id).values(status=status, updated_at=now))
    found.status = status
    return found


def add(store: Store, config: Config, address: str, name: str, newsletters: tuple[str, ...],
        categories: tuple[str, ...], now: datetime, resubscribe: bool = False) -> ImportReport:
    """Add or update one subscriber, with the same rules as one row of an import."""
    checker = RowChecker(config, site_categories=lambda: categories_on_site(config, now))
    result = checker.check(0, {"email": address, "name": name, "newsletters": ";".join(newsletters),
                               "categories": ";".join(categories)})
    if isinstance(result, str):
        raise NewsletterError(f"cannot add {address!r}: {result}")
    return import_rows(store, [result], now, source="cli", resubscribe=resubscribe)

