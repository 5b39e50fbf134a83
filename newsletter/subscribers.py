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
import ipaddress
import json
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TextIO

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT, EMAIL_MAX_LENGTH

from .config import SUBSCRIBER_STATUSES, Config
from .errors import NewsletterError, Problem
from .store import Store, as_utc, signups, subscribers, subscriptions

STATUSES = SUBSCRIBER_STATUSES
COLUMNS = ("email", "name", "newsletters", "categories", "status", "signed_up_at", "signup_ip")
CHUNK = 500
BULK = 5000  # values in one IN (...) list: far below SQLite's 32,766 and PostgreSQL's 65,535 bound values
NAME_LENGTH = 200  # the width of subscribers.name
# A spreadsheet runs a cell starting with one of these as a formula; `export_csv(excel_safe=True)` quotes them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MAILBOX_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)  # email-validator lower-cases these (postmaster, ...)
# Every character of Unicode's categories Cc, Zl and Zp (tests/test_subscribers.py checks it against unicodedata):
# one search finds a field that needs the slower look, character by character, that says which.
UNWANTED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


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
    consent: tuple[datetime, str] | None = None  # a confirmed sign-up's time (UTC) and client IP, from the file


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
    """The normalised form of an address, or ValueError saying what is wrong with it.

    Exactly `validate_email(...).normalized`, only faster for the common shape (tests/test_email_fast.py
    compares the two on many generated and hostile addresses): a plain ASCII local part before one @, whose
    domain was already checked. email-validator spends nearly all its time on the domain (IDNA, UTS #46), and a
    list of 100,000 addresses holds a few thousand domains. Anything else, and every error, takes the full call."""
    if "\r" in text or "\n" in text:
        raise ValueError("contains a line break")
    text = text.strip()
    local, at, domain = text.partition("@")
    if at and DOT_ATOM_TEXT.match(local) and "@" not in domain and local.lower() not in MAILBOX_NAMES:
        known = _checked_domain(domain)
        if known is not None:
            shown, ascii_domain = known
            longest = max(len(domain.encode()), len(shown.encode()), len(ascii_domain))
            if len(local) + 1 + longest <= EMAIL_MAX_LENGTH:
                return f"{local}@{shown}"
    try:
        return validate_email(text, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as err:
        raise ValueError(f"{text!r} is not a valid address: {err}") from None


_domains: dict[str, tuple[str, str] | None] = {}


def _checked_domain(domain: str) -> tuple[str, str] | None:
    """A domain's normalised and ASCII forms as email-validator gives them, or None when it refuses it; each
    domain is checked once per process. email-validator checks the domain apart from the local part, so a
    one-letter local part asks exactly its question about the domain."""
    if domain not in _domains:
        try:
            checked = validate_email("a@" + domain, check_deliverability=False, allow_smtputf8=False)
            _domains[domain] = (checked.domain, checked.ascii_domain)
        except EmailNotValidError:
            _domains[domain] = None
    return _domains[domain]


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
    if UNWANTED.search(value) is None:
        return None
    if "\r" in value or "\n" in value:
        return "a line break"
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"a control character (U+{ord(char):04X})"
    return None


def read_consent(signed_up_at: str, signup_ip: str, now: datetime | None) -> tuple[datetime, str] | str:
    """The consent evidence of a row (the time in UTC and the client IP, as an export writes them), or why the
    cells cannot be kept. The time needs its offset: without one, nobody knows when consent was given."""
    text, ip = signed_up_at.strip(), signup_ip.strip()
    if not text:
        return f"the signup_ip column holds {ip!r} but signed_up_at is empty; give the time of that sign-up too"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return (f"the signed_up_at column holds {text!r}, which is not an ISO 8601 time such as "
                "2026-01-05T07:00:00+00:00")
    if moment.tzinfo is None:
        return f"the signed_up_at column holds {text!r} without a UTC offset; add one, such as +00:00"
    moment = moment.astimezone(timezone.utc)
    if now is not None and moment > now:
        return f"the signed_up_at column holds {text!r}, later than the import ({now.isoformat()})"
    if ip:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            return f"the signup_ip column holds {ip!r}, which is not an IPv4 or IPv6 address"
    return moment, ip


class RowChecker:
    """Validates subscriber rows against the configured newsletters, remembering addresses already seen.

    `site_categories` gives the categories a newsletter carrying every category accepts; it is called at
    most once, when a row first names a category for such a newsletter. None accepts any category there."""

    def __init__(self, config: Config, default_newsletters: tuple[str, ...] = (),
                 site_categories: Callable[[], Iterable[str]] | None = None, now: datetime | None = None):
        self.config = config
        self.now = now  # consent given after it is refused
        self.default_newsletters = default_newsletters
        self.seen: dict[str, int] = {}
        self._site_categories = site_categories
        self._site_spelling: dict[str, str] | None = None

    def check(self, line: int, fields: dict[str, str]) -> Row | str:
        """A valid Row, or the reason the row is invalid."""
        if UNWANTED.search("".join(fields.values())):
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
        consent = None
        if fields.get("signed_up_at") or fields.get("signup_ip"):
            consent = read_consent(fields.get("signed_up_at") or "", fields.get("signup_ip") or "", self.now)
            if isinstance(consent, str):
                return consent
        self.seen[email_key(address)] = line
        return Row(line, address, name, status, chosen, consent)

    def _categories(self, cell: str, ids: list[str]) -> tuple[dict[str, tuple[str, ...]], str | None]:
        if not cell or cell.isspace():  # four rows in five: every category of every newsletter
            return {n: () for n in ids}, None
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
    """Add or update validated rows in one transaction; idempotent.

    Set-based, whatever the number of rows: the stored state of every address is read first (a few queries),
    then new subscribers, new subscriptions, changes and consent evidence are each written by one executemany."""
    report = ImportReport()
    keys = [email_key(r.email) for r in rows]
    with store.engine.begin() as conn:
        before = _stored(conn, keys)
        new = [(key, row) for key, row in zip(keys, rows) if key not in before]
        ids = {key: state.id for key, state in before.items()}
        if new:
            stamp = {"created_at": now, "updated_at": now, "source": source}
            ids.update(conn.execute(subscribers.insert().returning(subscribers.c.email_key, subscribers.c.id),
                                    [{"email": r.email, "email_key": key, "name": r.name, "status": r.status,
                                      **stamp} for key, r in new]).all())
            report.added += len(new)
        known_ids = [state.id for state in before.values()]
        held = _held(conn, known_ids)
        from .preferences import close_departures, open_departures

        left = set().union(*(open_departures(conn, part) for part in _parts(known_ids)))
        evidence = consent_on_record(conn) if any(r.consent for r in rows) else {}
        writes = _Writes()
        for key, row in zip(keys, rows):
            _import_row(row, key, ids[key], before.get(key), held, left, evidence, resubscribe, now, writes, report)
        writes.apply(conn, now)
        close_departures(conn, writes.rejoined, now)
    return report


@dataclass
class _Writes:
    """What an import changes, gathered row by row and written set by set."""

    subscribers: list[dict] = field(default_factory=list)
    new_subscriptions: list[dict] = field(default_factory=list)
    changed_subscriptions: list[dict] = field(default_factory=list)
    consent: list[dict] = field(default_factory=list)
    rejoined: list[tuple[int, str]] = field(default_factory=list)

    def apply(self, conn, now: datetime) -> None:
        if self.subscribers:
            conn.execute(subscribers.update().where(subscribers.c.id == sa.bindparam("b_id"))
                         .values(status=sa.bindparam("b_status"), name=sa.bindparam("b_name"), updated_at=now),
                         self.subscribers)
        if self.new_subscriptions:
            conn.execute(subscriptions.insert().values(created_at=now), self.new_subscriptions)
        if self.changed_subscriptions:
            conn.execute(subscriptions.update().where((subscriptions.c.subscriber_id == sa.bindparam("b_id"))
                                                      & (subscriptions.c.newsletter == sa.bindparam("b_newsletter")))
                         .values(categories=sa.bindparam("b_categories")), self.changed_subscriptions)
        if self.consent:
            conn.execute(signups.insert(), self.consent)


def _import_row(row: Row, key: str, subscriber_id: int, before, held: dict, left: set, evidence: dict,
                resubscribe: bool, now: datetime, writes: _Writes, report: ImportReport) -> None:
    """One row's changes against what is stored (`before` is None for a subscriber this import adds)."""
    if before is not None and before.status != "active" and row.status == "active" and not resubscribe:
        report.kept_unsubscribed.append(row.email)
        return
    changed = before is not None and (before.status != row.status or bool(row.name and row.name != before.name))
    if changed:
        writes.subscribers.append({"b_id": subscriber_id, "b_status": row.status,
                                   "b_name": row.name or before.name})
    for newsletter, categories in row.newsletters.items():
        if (subscriber_id, newsletter) in left:  # they left this newsletter themselves: never re-added silently
            if not resubscribe:
                report.kept_unsubscribed.append(f"{row.email} ({newsletter})")
                continue
            writes.rejoined.append((subscriber_id, newsletter))
        stored = encode_categories(categories)
        previous = held.get((subscriber_id, newsletter))
        if previous is None:
            writes.new_subscriptions.append({"subscriber_id": subscriber_id, "newsletter": newsletter,
                                             "categories": stored})
            changed = changed or before is not None
        elif previous != stored:
            writes.changed_subscriptions.append({"b_id": subscriber_id, "b_newsletter": newsletter,
                                                 "b_categories": stored})
            changed = True
    if row.consent is not None and evidence.get(key) != row.consent:
        signed_up_at, ip = row.consent
        writes.consent.append({
            "email": row.email, "email_key": key, "name": row.name, "created_at": signed_up_at, "ip": ip,
            "newsletters": json.dumps({n: list(c) for n, c in row.newsletters.items()}),
            "nonce": secrets.token_hex(16), "confirmed_at": signed_up_at, "confirmed_ip": None})
        changed = True
    if before is not None:
        report.updated += changed
        report.unchanged += not changed


def _parts(values: list) -> Iterator[list]:
    for start in range(0, len(values), BULK):
        yield values[start : start + BULK]


def _stored(conn, keys: list[str]) -> dict:
    """The id, status and name stored for each of these addresses (by key) that is already a subscriber."""
    columns = (subscribers.c.email_key, subscribers.c.id, subscribers.c.status, subscribers.c.name)
    if len(keys) > BULK:  # one scan of the table costs less than many IN (...) lists
        wanted = set(keys)
        return {r.email_key: r for r in conn.execute(sa.select(*columns)).all() if r.email_key in wanted}
    found = {}
    for part in _parts(keys):
        found.update({r.email_key: r for r in conn.execute(sa.select(*columns)
                                                           .where(subscribers.c.email_key.in_(part)))})
    return found


def _held(conn, subscriber_ids: list[int]) -> dict[tuple[int, str], str]:
    """The stored categories of each (subscriber, newsletter) these subscribers hold."""
    columns = (subscriptions.c.subscriber_id, subscriptions.c.newsletter, subscriptions.c.categories)
    if len(subscriber_ids) > BULK:
        wanted = set(subscriber_ids)
        return {(r.subscriber_id, r.newsletter): r.categories for r in conn.execute(sa.select(*columns)).all()
                if r.subscriber_id in wanted}
    held = {}
    for part in _parts(subscriber_ids):
        held.update({(r.subscriber_id, r.newsletter): r.categories for r in conn.execute(
            sa.select(*columns).where(subscriptions.c.subscriber_id.in_(part)))})
    return held


def consent_on_record(conn) -> dict[str, tuple[datetime, str]]:
    """For each address, the time and IP of its latest confirmed sign-up, as `export_csv` writes them."""
    rows = conn.execute(sa.select(signups.c.email_key, signups.c.created_at, signups.c.ip)
                        .where(signups.c.confirmed_at.is_not(None)).order_by(signups.c.id))
    return {r.email_key: (as_utc(r.created_at), r.ip) for r in rows}


def import_csv(store: Store, config: Config, stream: TextIO, where: str, now: datetime, *,
               newsletter: str | None = None, skip_invalid: bool = False, resubscribe: bool = False,
               site_categories: Iterable[str] | None = None) -> ImportReport:
    """Validate every row of a subscriber CSV, then add or update them. `site_categories` (default: read
    from the site at `now`, only when a row needs them) are what an every-category newsletter accepts."""
    if newsletter is not None:
        config.newsletter(newsletter)
    known = (lambda: site_categories) if site_categories is not None else (lambda: categories_on_site(config, now))
    checker = RowChecker(config, (newsletter,) if newsletter else (), known, now)
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


def remove(store: Store, address: str, now: datetime) -> Subscriber:
    """Unsubscribe someone from every newsletter on the operator's word. Each subscription ends through
    `preferences.leave`, like every other way a subscription ends, so the departure is on record (how:
    "operator") and no import re-adds them without --resubscribe. An active subscriber becomes unsubscribed
    (even one who held nothing); a bounced or complained one keeps that status, the stronger reason."""
    from .preferences import OPERATOR, leave

    found = find(store, address)
    if found is None:
        raise NewsletterError(f"no subscriber {address!r}")
    with store.engine.begin() as conn:
        for newsletter in found.newsletters:
            leave(conn, found.id, newsletter, OPERATOR, now)
        conn.execute(subscribers.update().where((subscribers.c.id == found.id) & (subscribers.c.status == "active"))
                     .values(status="unsubscribed", updated_at=now))
    return find(store, address)


def add(store: Store, config: Config, address: str, name: str, newsletters: tuple[str, ...],
        categories: tuple[str, ...], now: datetime, resubscribe: bool = False) -> ImportReport:
    """Add or update one subscriber, with the same rules as one row of an import."""
    checker = RowChecker(config, site_categories=lambda: categories_on_site(config, now))
    result = checker.check(0, {"email": address, "name": name, "newsletters": ";".join(newsletters),
                               "categories": ";".join(categories)})
    if isinstance(result, str):
        raise NewsletterError(f"cannot add {address!r}: {result}")
    return import_rows(store, [result], now, source="cli", resubscribe=resubscribe)

