"""The delivery ledger: an issue is planned once per newsletter and period, with one delivery row per subscriber.

The rules that make sends exactly-once and resumable live here:
- an issue is unique per (newsletter, period); planning it again finds the one already planned;
- its posts are frozen when it is planned, and its delivery rows are written in the same transaction;
- a batch is claimed (status `sending`) and committed before the provider is called, and marked after;
- one process at a time works an issue, holding a lease; a process that takes over from a dead one turns that
  one's in-flight rows into `unknown`, which are never resent unless the operator asks (`--retry-unknown`).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .errors import NewsletterError
from .posts import Post
from .store import (
    Store,
    as_utc,
    deliveries,
    issue_posts,
    issues,
    subscribers,
    subscriptions,
    utcnow,
    variants,
)

DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "unknown", "skipped")
FINAL = ("sent", "failed", "skipped")
#: How long a lease lasts unless renewed; its holder renews it every quarter of that while it works.
LEASE_SECONDS = 60


class SendBusy(NewsletterError):
    """Another live process is sending this issue."""


class LeaseLost(NewsletterError):
    """The lease on an issue passed to another process (this one stalled past its expiry)."""


@dataclass(frozen=True)
class IssueRecord:
    id: int
    newsletter: str
    period: str
    number: int
    status: str
    reference_time: datetime
    posts: tuple[Post, ...]
    image_sizes: dict[str, tuple[int, int]]
    #: how many more posts qualified than the issue carries
    more: int = 0


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    subscriber_status: str
    categories: str | None  # None: no longer subscribed to this newsletter


@dataclass(frozen=True)
class Mark:
    """What happened to one delivery: a final status, `pending` to try again, or `unknown`."""

    delivery_id: int
    status: str
    error: str | None = None
    message_id: str | None = None
    retry_after: float | None = None


def _record(row: sa.Row) -> IssueRecord:
    frozen = json.loads(row.posts)
    return IssueRecord(
        id=row.id, newsletter=row.newsletter, period=row.period, number=row.number, status=row.status,
        reference_time=as_utc(row.reference_time), posts=tuple(Post.thaw(p) for p in frozen["posts"]),
        image_sizes={k: tuple(v) for k, v in frozen["image_sizes"].items()}, more=frozen.get("more", 0),
    )  # fmt: skip


def find_issue(store: Store, newsletter: str, period: str) -> IssueRecord | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(issues).where((issues.c.newsletter == newsletter) & (issues.c.period == period)))
        found = row.first()
    return _record(found) if found else None


def get_issue(store: Store, issue_id: int) -> IssueRecord | None:
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(issues).where(issues.c.id == issue_id)).first()
    return _record(found) if found else None


def unfinished_issue(store: Store, newsletter: str) -> IssueRecord | None:
    """The oldest issue of `newsletter` whose send was cut short (deliveries still pending or in flight)."""
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(issues).where((issues.c.newsletter == newsletter)
                                                     & (issues.c.status == "sending"))
                             .order_by(issues.c.reference_time, issues.c.id).limit(1)).first()
    return _record(found) if found else None


def previous_issue_time(store: Store, newsletter: str, now: datetime) -> datetime | None:
    """The reference time of the newsletter's latest issue at or before `now` (skipped ones count: they
    looked, and found nothing new)."""
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(sa.func.max(issues.c.reference_time)).where(
            (issues.c.newsletter == newsletter) & (issues.c.reference_time <= now))).scalar()
    return as_utc(found)


def carried_posts(store: Store, newsletter: str) -> tuple[set[str], int]:
    """The posts earlier issues of `newsletter` carried, and how many issues were not skipped."""
    with store.engine.connect() as conn:
        keys = conn.execute(sa.select(issue_posts.c.post_key).join(issues, issues.c.id == issue_posts.c.issue_id)
                            .where(issues.c.newsletter == newsletter)).scalars().all()
        sent = conn.execute(sa.select(sa.func.count()).select_from(issues).where(
            (issues.c.newsletter == newsletter) & (issues.c.status != "skipped"))).scalar_one()
    return set(keys), sent


def record_issue(store: Store, *, newsletter: str, period: str, number: int, posts: tuple[Post, ...],
                 image_sizes: dict[str, tuple[int, int]], reference_time: datetime,
                 more: int = 0) -> tuple[IssueRecord, bool]:
    """Create the issue with its frozen posts and its delivery rows, all in one transaction; when another
    process created it first, return that one. Returns (issue, created)."""
    frozen = json.dumps({"posts": [p.freeze() for p in posts], "image_sizes": image_sizes, "more": more},
                        ensure_ascii=False)
    status = "sending" if posts else "skipped"
    try:
        with store.engine.begin() as conn:
            issue_id = conn.execute(issues.insert().values(
                newsletter=newsletter, period=period, number=number, status=status, planned_at=utcnow(),
                reference_time=reference_time, posts=frozen).returning(issues.c.id)).scalar_one()
            if posts:
                conn.execute(issue_posts.insert(), [{"issue_id": issue_id, "post_key": p.key, "position": i}
                                                    for i, p in enumerate(posts)])
                audience = (
                    sa.select(sa.literal(issue_id), subscriptions.c.subscriber_id, sa.literal("pending"),
                              sa.literal(0), subscriptions.c.categories)
                    .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
                    .where((subscriptions.c.newsletter == newsletter) & (subscribers.c.status == "active"))
                    .order_by(subscriptions.c.subscriber_id)
                )
                conn.execute(deliveries.insert().from_select(
                    ["issue_id", "subscriber_id", "status", "attempts", "audience"], audience))
    except IntegrityError:
        existing = find_issue(store, newsletter, period)
        if existing is None:
            raise
        return existing, False
    return find_issue(store, newsletter, period), True


def _start_time(pid: int | str) -> str:
    """When a process started (clock ticks since boot), so that a reused pid is not mistaken for its owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def lease_owner() -> str:
    """This process's name on a lease: `host:pid`, then what tells it apart from a process with the same host
    name and pid in another container (the pid namespace and start time), then a random part."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}|{_pid_namespace()}|{_start_time(pid)}|{secrets.token_hex(4)}"


def owner_label(owner: str) -> str:
    """The `host:pid` part of a lease owner, for messages."""
    return owner.split("|", 1)[0]


def owner_is_dead(owner: str) -> bool:
    """Whether the owner is certainly gone: only decided for a process of this host and pid namespace whose
    pid no longer runs (or now belongs to a process that started later). Anything else counts as alive until
    its lease expires, since its heartbeat keeps the lease while it lives."""
    label, _, rest = owner.partition("|")
    namespace, _, rest = rest.partition("|")
    started = rest.partition("|")[0]
    host, _, pid = label.rpartition(":")
    if host != socket.gethostname() or not namespace or namespace != _pid_namespace() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return bool(started) and _start_time(pid) not in ("", started)


def acquire_lease(store: Store, issue_id: int, owner: str) -> None:
    """Take the issue for this process; SendBusy when a live process holds it."""
    for _ in range(5):
        now = utcnow()
        with store.engine.begin() as conn:
            row = conn.execute(sa.select(issues.c.lease_owner, issues.c.lease_expires)
                               .where(issues.c.id == issue_id)).one()
            held, expires = row.lease_owner, row.lease_expires
            if held and expires and expires > now and not owner_is_dead(held):
                left = int((expires - now).total_seconds())
                raise SendBusy(f"issue {issue_id} is being sent by {owner_label(held)} (host:pid); if that process "
                               f"has died, its lease ends within {left} s")
            same = issues.c.lease_owner.is_(None) if held is None else issues.c.lease_owner == held
            taken = conn.execute(issues.update().where((issues.c.id == issue_id) & same).values(
                lease_owner=owner, lease_expires=now + timedelta(seconds=LEASE_SECONDS))).rowcount
            if taken:
                return
    raise SendBusy(f"issue {issue_id}: could not take the lease; another process keeps taking it")


def renew_lease(store: Store, issue_id: int, owner: str) -> None:
    with store.engine.begin() as conn:
        kept = conn.execute(issues.update().where((issues.c.id == issue_id) & (issues.c.lease_owner == owner))
                            .values(lease_expires=utcnow() + timedelta(seconds=LEASE_SECONDS))).rowcount
    if not kept:
        raise LeaseLost(f"issue {issue_id}: another process took over the send; this one stops")


def release_lease(store: Store, issue_id: int, owner: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(issues.update().where((issues.c.id == issue_id) & (issues.c.lease_owner == owner))
                     .values(lease_owner=None, lease_expires=None))


class Heartbeat:
    """Renews a lease from a background thread while its owner works, so that a long provider call or backoff
    never lets the lease lapse; `check()` raises LeaseLost once another process has taken it."""

    def __init__(self, store: Store, issue_id: int, owner: str, every: float | None = None):
        self.store, self.issue_id, self.owner = store, issue_id, owner
        self.every = every if every is not None else LEASE_SECONDS / 4
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{issue_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                renew_lease(self.store, self.issue_id, self.owner)
            except LeaseLost as err:
                self.lost = err
                return
            except sa.exc.SQLAlchemyError:
                continue  # the database is busy or away for a moment; the lease still has time to run

    def check(self) -> None:
        if self.lost is not None:
            raise self.lost


def recover_in_flight(store: Store, issue_id: int) -> int:
    """Rows left `sending` by a process that died mid-batch: the provider may have taken them, so they become
    `unknown` and are never resent on our own. Only called while holding the lease."""
    with store.engine.begin() as conn:
        return conn.execute(deliveries.update().where(
            (deliveries.c.issue_id == issue_id) & (deliveries.c.status == "sending")).values(
            status="unknown", claim=None, updated_at=utcnow(),
            last_error="in flight when an earlier send stopped; the provider may or may not have it")).rowcount


def retry_unknown(store: Store, issue_id: int) -> int:
    """On the operator's word: make `unknown` deliveries pending again. A finished issue is opened again
    (`sending`), so that the next send of its newsletter, by hand or by the daemon, resumes it first rather
    than leaving the rows pending under an issue nothing looks at."""
    with store.engine.begin() as conn:
        changed = conn.execute(deliveries.update().where(
            (deliveries.c.issue_id == issue_id) & (deliveries.c.status == "unknown")).values(
            status="pending", next_attempt_at=None, updated_at=utcnow())).rowcount
        if changed:
            conn.execute(issues.update().where((issues.c.id == issue_id) & (issues.c.status == "done"))
                         .values(status="sending"))
    return changed


def pending_audiences(store: Store, issue_id: int) -> list[tuple[str | None, int]]:
    """How many deliveries are pending for each set of categories their subscribers had at planning."""
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(deliveries.c.audience, sa.func.count())
            .where((deliveries.c.issue_id == issue_id) & (deliveries.c.status == "pending"))
            .group_by(deliveries.c.audience)).all()]


def _among(store: Store, column: sa.Column, ids: list[int]) -> sa.ColumnElement[bool]:
    """`column IN ids` as one bound value (a JSON array on SQLite, an array on PostgreSQL): a batch names up
    to 1,000 rows, and binding each as a parameter of its own cost more than running the statement."""
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY  # loaded only for PostgreSQL: a SQLite send skips it

        return column == sa.any_(sa.bindparam(None, list(ids), type_=ARRAY(sa.Integer)))
    listed = sa.select(sa.literal_column("value", sa.Integer)).select_from(
        sa.func.json_each(sa.bindparam(None, json.dumps(list(ids)), type_=sa.String)))
    return column.in_(listed.scalar_subquery())


def claim(store: Store, issue_id: int, newsletter: str, limit: int, token: str,
          audiences: list[str] | None = None) -> list[Claimed]:
    """Mark up to `limit` due pending deliveries `sending` for this batch and commit, before any provider
    call; returns them with their subscriber's current status and categories. With `audiences`, only
    deliveries planned for those category sets (one digest variant, so one full request)."""
    now = utcnow()
    due = (sa.select(deliveries.c.id, deliveries.c.subscriber_id, subscribers.c.email, subscribers.c.name,
                     subscribers.c.status, subscriptions.c.categories)
           .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
           .outerjoin(subscriptions, (subscriptions.c.subscriber_id == deliveries.c.subscriber_id)
                      & (subscriptions.c.newsletter == newsletter))
           .where((deliveries.c.issue_id == issue_id) & (deliveries.c.status == "pending")
                  & (deliveries.c.next_attempt_at.is_(None) | (deliveries.c.next_attempt_at <= now)))
           .order_by(deliveries.c.id).limit(limit))  # fmt: skip
    if audiences is not None:
        due = due.where(deliveries.c.audience.in_(audiences))
    if store.dialect == "postgresql":
        due = due.with_for_update(skip_locked=True, of=deliveries)
    with store.engine.begin() as conn:
        # Two statements, not UPDATE ... IN (subquery): PostgreSQL may run a SKIP LOCKED subquery more than
        # once, each time skipping the rows it just locked, and so claim more than `limit` rows. The first
        # reads the subscribers' status and subscription with the rows, in the same transaction: that read
        # is the check of who may still be sent to for a batch that goes at once (see Sender._still_wanted).
        rows = conn.execute(due).all()
        if not rows:
            return []
        ids = set(conn.execute(deliveries.update().where(
            _among(store, deliveries.c.id, [r[0] for r in rows]) & (deliveries.c.status == "pending")).values(
            status="sending", claim=token, attempts=deliveries.c.attempts + 1, updated_at=now)
            .returning(deliveries.c.id)).scalars().all())
    return [Claimed(*row) for row in rows if row[0] in ids]


def unreachable(store: Store, newsletter: str, delivery_ids: list[int]) -> dict[int, str]:
    """Of these deliveries, those whose subscriber may no longer be sent to, with the reason: read right before
    each provider call, so that someone who left while a batch waited (a backoff can last minutes) is skipped."""
    if not delivery_ids:
        return {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(deliveries.c.id, subscribers.c.status, subscriptions.c.subscriber_id)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .outerjoin(subscriptions, (subscriptions.c.subscriber_id == deliveries.c.subscriber_id)
                       & (subscriptions.c.newsletter == newsletter))
            .where(_among(store, deliveries.c.id, delivery_ids))).all()
    gone = {}
    for delivery_id, status, subscribed in rows:
        if status != "active":
            gone[delivery_id] = f"{status} after the issue was planned"
        elif subscribed is None:
            gone[delivery_id] = "no longer subscribed to this newsletter"
    return gone


def mark(store: Store, marks: list[Mark], *, max_attempts: int, retry_delay: float) -> list[Mark]:
    """Record what the provider said. A retry past `max_attempts` becomes `failed`; returns the marks as
    recorded. Rows are written in bulk: one statement per distinct outcome."""
    if not marks:
        return []
    now = utcnow()
    with store.engine.begin() as conn:
        retried = [m.delivery_id for m in marks if m.status == "pending"]
        attempts = dict(conn.execute(sa.select(deliveries.c.id, deliveries.c.attempts).where(
            _among(store, deliveries.c.id, retried))).all()) if retried else {}
        final = []
        for m in marks:
            if m.status == "pending" and attempts.get(m.delivery_id, 0) >= max_attempts:
                m = Mark(m.delivery_id, "failed", f"gave up after {max_attempts} attempts: {m.error}")
            final.append(m)
        groups: dict[tuple, list[int]] = {}
        retries = []
        for m in final:
            if m.status == "pending":
                tried = attempts.get(m.delivery_id, 1)
                delay = m.retry_after if m.retry_after is not None else retry_delay * 2 ** (tried - 1)
                delay *= random.uniform(1.0, 1.25) if m.retry_after is None else 1.0
                retries.append({"b_id": m.delivery_id, "b_error": m.error,
                                "b_next": now + timedelta(seconds=delay)})
            else:
                groups.setdefault((m.status, m.error, m.message_id), []).append(m.delivery_id)
        for (status, error, message_id), ids in groups.items():
            conn.execute(deliveries.update().where(_among(store, deliveries.c.id, ids)).values(
                status=status, last_error=error, message_id=message_id, claim=None, updated_at=now))
        if retries:
            conn.execute(deliveries.update().where(deliveries.c.id == sa.bindparam("b_id")).values(
                status="pending", last_error=sa.bindparam("b_error"), next_attempt_at=sa.bindparam("b_next"),
                claim=None, updated_at=now), retries)
    return final


def release(store: Store, delivery_ids: list[int]) -> None:
    """Give claimed rows back untried (the send stopped before the provider took them)."""
    if not delivery_ids:
        return
    with store.engine.begin() as conn:
        conn.execute(deliveries.update().where(_among(store, deliveries.c.id, delivery_ids)
                                               & (deliveries.c.status == "sending"))
                     .values(status="pending", claim=None, attempts=deliveries.c.attempts - 1,
                             updated_at=utcnow()))


def next_retry(store: Store, issue_id: int) -> datetime | None:
    """When the earliest pending delivery is due, or None when nothing is pending."""
    with store.engine.connect() as conn:
        return as_utc(conn.execute(sa.select(sa.func.min(sa.func.coalesce(deliveries.c.next_attempt_at, utcnow())))
                                   .where((deliveries.c.issue_id == issue_id)
                                          & (deliveries.c.status == "pending"))).scalar())


def finish(store: Store, issue_id: int) -> None:
    """Mark the issue done once nothing is left to try (unknowns stay listed for the operator)."""
    with store.engine.begin() as conn:
        open_rows = conn.execute(sa.select(sa.func.count()).select_from(deliveries).where(
            (deliveries.c.issue_id == issue_id) & deliveries.c.status.in_(["pending", "sending"]))).scalar_one()
        conn.execute(issues.update().where(issues.c.id == issue_id).values(
            status="sending" if open_rows else "done"))


def counts(store: Store, issue_id: int) -> Counter:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(deliveries.c.status, sa.func.count()).where(deliveries.c.issue_id == issue_id)
                            .group_by(deliveries.c.status)).all()
    return Counter(dict(rows))


def list_issues(store: Store) -> list[dict]:
    """Every issue with its counts per delivery status, newest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(issues.c.id, issues.c.newsletter, issues.c.period, issues.c.number,
                                      issues.c.status, issues.c.lease_owner, issues.c.lease_expires)
                            .order_by(issues.c.id.desc())).all()
        tallies = conn.execute(sa.select(deliveries.c.issue_id, deliveries.c.status, sa.func.count())
                               .group_by(deliveries.c.issue_id, deliveries.c.status)).all()
    by_issue: dict[int, dict[str, int]] = {}
    for issue_id, status, n in tallies:
        by_issue.setdefault(issue_id, {})[status] = n
    now = utcnow()
    return [{"id": r.id, "newsletter": r.newsletter, "period": r.period, "number": r.number,
             "status": _issue_state(r.status, r.lease_owner, r.lease_expires, now), "counts": by_issue.get(r.id, {})}
            for r in rows]


def _issue_state(status: str, owner: str | None, expires: datetime | None, now: datetime) -> str:
    """What `status` shows: `sending` only while a process holds the lease; an issue whose send was cut short
    is `unfinished` (the next send of that newsletter resumes it first)."""
    if status == "sending" and not (owner and expires and expires > now):
        return "unfinished"
    return status


def open_deliveries(store: Store, issue_id: int) -> list[dict]:
    """Every delivery of the issue not in status sent, with the subscriber's address and the last error."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(deliveries.c.id, subscribers.c.email, deliveries.c.status,
                                      deliveries.c.last_error, deliveries.c.attempts)
                            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                            .where((deliveries.c.issue_id == issue_id) & (deliveries.c.status != "sent"))
                            .order_by(deliveries.c.id)).all()
    return [{"delivery": r.id, "email": r.email, "status": r.status, "error": r.last_error,
             "attempts": r.attempts} for r in rows]


def audience(store: Store, newsletter: str) -> list[tuple[str, int]]:
    """How many active subscribers of `newsletter` chose each set of categories (stored form)."""
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(subscriptions.c.categories, sa.func.count())
            .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
            .where((subscriptions.c.newsletter == newsletter) & (subscribers.c.status == "active"))
            .group_by(subscriptions.c.categories)).all()]


def save_variant(store: Store, issue_id: int, key: str, post_keys: list[str], subject: str, html: str,
                 text: str) -> bool:
    """Keep a rendered variant with its issue; False when another process stored it first (theirs is then
    the frozen one, and the caller must use it)."""
    try:
        with store.engine.begin() as conn:
            conn.execute(variants.insert().values(issue_id=issue_id, key=key, post_keys=json.dumps(post_keys),
                                                  subject=subject, html=html, text=text))
    except IntegrityError:
        return False
    return True


def load_variant(store: Store, issue_id: int, key: str) -> sa.Row | None:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(variants).where((variants.c.issue_id == issue_id) & (variants.c.key == key))
                            ).first()
