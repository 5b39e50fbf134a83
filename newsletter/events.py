"""What providers report back about each delivery, and the rules that keep the list clean.

SendGrid's Event Webhook (webhooks.py) and the bounce mailbox (bounces.py) both turn what they read into
`Event` values and hand a whole batch to `record_events`, which records them in one transaction, each once
(an event is known by its key: SendGrid's sg_event_id, a bounce's Message-ID), and applies the rules:

- a hard bounce, or SendGrid dropping a message for an invalid or bounced address, marks the subscriber
  `bounced`; a spam complaint (or SendGrid dropping a message for a complaining address) marks them
  `complained`;
- an unsubscribe event ends their subscription to that issue's newsletter (`leave_newsletter`);
- soft bounces are counted per delivery: when a subscriber's last `soft_bounce_limit` deliveries with an
  outcome all ended in a soft bounce, they are marked `bounced`.

A status is only ever raised (active, unsubscribed, bounced, complained, in that order), never lowered. The
send reads status and subscription again right before every request, so a change takes effect for every
delivery not yet sent, of every newsletter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .store import Store, as_utc, deliveries, delivery_events, issues, subscribers

KINDS = ("delivered", "bounce", "dropped", "deferred", "spamreport", "unsubscribe", "group_unsubscribe", "open",
         "click")
#: what a bounce or dropped event means for the address: hard, soft, complaint, unsubscribe (or None)
CLASSIFICATIONS = ("hard", "soft", "complaint", "unsubscribe")
STATUS_RANK = {"active": 0, "unsubscribed": 1, "bounced": 2, "complained": 3}
#: events that say how a delivery ended, for counting soft bounces in a row
OUTCOME_KINDS = ("delivered", "bounce", "dropped")
CHUNK = 500
#: above these, `send` warns about the newsletter's last issue (Gmail and Yahoo want complaints under 0.3%)
COMPLAINT_RATE_LIMIT = 0.001
HARD_BOUNCE_RATE_LIMIT = 0.02


@dataclass(frozen=True)
class Event:
    """One thing a provider reported about one delivery. `issue_id` and `email`, when given, must agree with
    the delivery's, or the event is not ours (another database, a test copy) and is left unmatched."""

    key: str
    source: str
    delivery_id: int
    kind: str
    occurred_at: datetime
    classification: str | None = None
    detail: str | None = None
    issue_id: int | None = None
    email: str | None = None


@dataclass
class EventReport:
    recorded: int = 0
    duplicates: int = 0
    #: why each event that matched no delivery was left out
    unmatched: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    bounced: list[str] = field(default_factory=list)
    complained: list[str] = field(default_factory=list)
    #: (address, newsletter) whose subscription an unsubscribe event ended
    unsubscribed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"recorded {self.recorded}, duplicates {self.duplicates}, unmatched {len(self.unmatched)}; "
                f"bounced {len(self.bounced)}, complained {len(self.complained)}, "
                f"unsubscribed {len(self.unsubscribed)}")


def _chunks(values: list, size: int = CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def record_events(store: Store, events: list[Event], now: datetime, *, soft_bounce_limit: int = 3) -> EventReport:
    """Record a batch of events in one transaction, each once, and apply the rules to the subscribers."""
    try:
        return _record(store, events, now, soft_bounce_limit)
    except IntegrityError:
        # Another process recorded some of the same events between our check and our insert; everything
        # here was rolled back, and a second pass sees theirs as duplicates.
        return _record(store, events, now, soft_bounce_limit)


def _record(store: Store, events: list[Event], now: datetime, soft_bounce_limit: int) -> EventReport:
    report = EventReport()
    unique: dict[str, Event] = {}
    for event in events:
        if event.key in unique:
            report.duplicates += 1
        else:
            unique[event.key] = event
    with store.engine.begin() as conn:
        targets = _deliveries(conn, sorted({e.delivery_id for e in unique.values()}))
        seen = set()
        for keys in _chunks(list(unique)):
            seen.update(conn.execute(sa.select(delivery_events.c.event_key)
                                     .where(delivery_events.c.event_key.in_(keys))).scalars())
        rows, fresh = [], []
        for event in unique.values():
            target = targets.get(event.delivery_id)
            why = _mismatch(event, target)
            if why:
                report.unmatched.append(f"{event.source} event {event.kind} for delivery {event.delivery_id}: {why}")
            elif event.key in seen:
                report.duplicates += 1
            else:
                fresh.append((event, target))
                rows.append({"event_key": event.key, "source": event.source, "delivery_id": event.delivery_id,
                             "issue_id": target.issue_id, "subscriber_id": target.subscriber_id, "kind": event.kind,
                             "classification": event.classification, "detail": event.detail,
                             "occurred_at": event.occurred_at, "received_at": now})
        if rows:
            conn.execute(delivery_events.insert(), rows)
        report.recorded = len(rows)
        report.kinds.update(event.kind for event, _ in fresh)
        _apply_rules(conn, fresh, now, soft_bounce_limit, report)
    return report


@dataclass(frozen=True)
class _Target:
    issue_id: int
    subscriber_id: int
    email: str
    status: str
    newsletter: str


def _deliveries(conn, ids: list[int]) -> dict[int, _Target]:
    found = {}
    for chunk in _chunks(ids):
        for row in conn.execute(
                sa.select(deliveries.c.id, deliveries.c.issue_id, deliveries.c.subscriber_id, subscribers.c.email,
                          subscribers.c.status, issues.c.newsletter)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .join(issues, issues.c.id == deliveries.c.issue_id)
                .where(deliveries.c.id.in_(chunk))):
            found[row.id] = _Target(row.issue_id, row.subscriber_id, row.email, row.status, row.newsletter)
    return found


def _mismatch(event: Event, target: _Target | None) -> str | None:
    if event.kind not in KINDS:
        return f"unknown kind {event.kind!r}"
    if target is None:
        return "no such delivery in this database"
    if event.issue_id is not None and event.issue_id != target.issue_id:
        return f"the delivery belongs to issue {target.issue_id}, not {event.issue_id}"
    if event.email is not None and event.email.casefold() != target.email.casefold():
        return "the delivery went to another address"
    return None


def _apply_rules(conn, fresh: list[tuple[Event, _Target]], now: datetime, soft_bounce_limit: int,
                 report: EventReport) -> None:
    raise_to: dict[int, str] = {}
    who: dict[int, _Target] = {}
    leaving: set[tuple[int, str]] = set()
    soft: set[int] = set()
    for event, target in fresh:
        who[target.subscriber_id] = target
        wanted = None
        if event.kind == "spamreport" or (event.kind == "dropped" and event.classification == "complaint"):
            wanted = "complained"
        elif event.kind in ("bounce", "dropped") and event.classification == "hard":
            wanted = "bounced"
        elif event.kind in ("unsubscribe", "group_unsubscribe") or (
                event.kind == "dropped" and event.classification == "unsubscribe"):
            leaving.add((target.subscriber_id, target.newsletter))
        elif event.kind == "bounce" and event.classification == "soft":
            soft.add(target.subscriber_id)
        if wanted and STATUS_RANK[wanted] > STATUS_RANK[raise_to.get(target.subscriber_id, "active")]:
            raise_to[target.subscriber_id] = wanted
    for subscriber_id in _soft_bounce_runs(conn, sorted(soft - set(raise_to)), soft_bounce_limit):
        raise_to[subscriber_id] = "bounced"
    for status in ("bounced", "complained"):
        ids = sorted(s for s, wanted in raise_to.items() if wanted == status)
        lower = [name for name, rank in STATUS_RANK.items() if rank < STATUS_RANK[status]]
        for chunk in _chunks(ids):
            changed = conn.execute(subscribers.update().where(subscribers.c.id.in_(chunk)
                                                              & subscribers.c.status.in_(lower))
                                   .values(status=status, updated_at=now).returning(subscribers.c.id)).scalars()
            getattr(report, status).extend(sorted(who[i].email for i in changed))
    for subscriber_id, newsletter in sorted(leaving):
        if leave_newsletter(conn, subscriber_id, newsletter, now):
            report.unsubscribed.append((who[subscriber_id].email, newsletter))


def leave_newsletter(conn, subscriber_id: int, newsletter: str, now: datetime) -> bool:
    """End one subscriber's subscription to one newsletter, inside the caller's transaction; False when they
    had none. This is the one place an unsubscribe event removes a subscription, so that a record of who left
    which newsletter (and when) is kept, as for a link's unsubscribe. The send skips them from the next request
    on."""
    from .preferences import leave

    return leave(conn, subscriber_id, newsletter, "provider", now)


def _soft_bounce_runs(conn, subscriber_ids: list[int], limit: int) -> list[int]:
    """Of these subscribers, those whose last `limit` deliveries with an outcome each ended in a soft bounce.
    A delivery's outcome is its latest delivered, bounce or dropped event; a delivered one ends the run."""
    over = []
    for chunk in _chunks(subscriber_ids):
        latest: dict[int, dict[int, tuple]] = {}
        for row in conn.execute(
                sa.select(delivery_events.c.subscriber_id, delivery_events.c.delivery_id, delivery_events.c.kind,
                          delivery_events.c.classification, delivery_events.c.occurred_at, delivery_events.c.id)
                .where(delivery_events.c.subscriber_id.in_(chunk) & delivery_events.c.kind.in_(OUTCOME_KINDS))):
            outcome = (as_utc(row.occurred_at), row.id, row.kind == "bounce" and row.classification == "soft")
            per = latest.setdefault(row.subscriber_id, {})
            if row.delivery_id not in per or outcome[:2] > per[row.delivery_id][:2]:
                per[row.delivery_id] = outcome
        for subscriber_id, per in latest.items():
            run = 0
            for delivery_id in sorted(per, reverse=True):
                if not per[delivery_id][2]:
                    break
                run += 1
            if run >= limit:
                over.append(subscriber_id)
    return over


# --- Reading them back: for `newsletter events`, `status` and the warnings before a send.

def issue_events(store: Store, issue_id: int) -> list[dict]:
    """Every event recorded for an issue's deliveries, in the order they happened."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(delivery_events, subscribers.c.email)
            .join(subscribers, subscribers.c.id == delivery_events.c.subscriber_id)
            .where(delivery_events.c.issue_id == issue_id)
            .order_by(delivery_events.c.occurred_at, delivery_events.c.id)).all()
    return [{"occurred_at": as_utc(r.occurred_at).isoformat(), "delivery": r.delivery_id, "email": r.email,
             "event": r.kind, "classification": r.classification, "source": r.source, "detail": r.detail}
            for r in rows]


def event_counts(store: Store, issue_id: int) -> dict[str, int]:
    """How many deliveries of the issue had each kind of event (a delivery opened five times counts once);
    bounces are split into `bounce_hard` and `bounce_soft`."""
    label = sa.case((delivery_events.c.kind == "bounce",
                     sa.literal("bounce_") + sa.func.coalesce(delivery_events.c.classification, "hard")),
                    else_=delivery_events.c.kind)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(label, sa.func.count(sa.distinct(delivery_events.c.delivery_id)))
                            .where(delivery_events.c.issue_id == issue_id).group_by(label)).all()
    return dict(sorted((str(kind), n) for kind, n in rows))


@dataclass(frozen=True)
class IssueHealth:
    """What providers said about an issue, as the send's warnings and `status` show it."""

    issue_id: int
    sent: int
    complained: int
    hard_bounced: int
    #: how many of the issue's recipients are now bounced or complained (for whatever reason, from any issue)
    now_bounced: int = 0
    now_complained: int = 0

    @property
    def complaint_rate(self) -> float | None:
        return self.complained / self.sent if self.sent else None

    @property
    def hard_bounce_rate(self) -> float | None:
        return self.hard_bounced / self.sent if self.sent else None

    def as_json(self) -> dict:
        return {"sent": self.sent, "complained": self.complained, "hard_bounced": self.hard_bounced,
                "complaint_rate": self.complaint_rate, "hard_bounce_rate": self.hard_bounce_rate,
                "now_bounced": self.now_bounced, "now_complained": self.now_complained}

    def warnings(self) -> list[str]:
        found = []
        if self.complaint_rate is not None and self.complaint_rate > COMPLAINT_RATE_LIMIT:
            found.append(f"{self.complained} of {self.sent} recipients of issue {self.issue_id} reported it as "
                         f"spam ({self.complaint_rate:.2%}, above {COMPLAINT_RATE_LIMIT:.1%}); mailbox providers "
                         "throttle or block senders over 0.3%: check that everyone on the list asked for it")
        if self.hard_bounce_rate is not None and self.hard_bounce_rate > HARD_BOUNCE_RATE_LIMIT:
            found.append(f"{self.hard_bounced} of {self.sent} messages of issue {self.issue_id} bounced hard "
                         f"({self.hard_bounce_rate:.2%}, above {HARD_BOUNCE_RATE_LIMIT:.0%}); those addresses are "
                         "now suppressed, but a high rate suggests an old or bought list")
        return found


def issue_health(store: Store, issue_id: int) -> IssueHealth:
    """Complaint and hard-bounce counts of an issue, over the deliveries sent."""
    hard = ((delivery_events.c.kind.in_(["bounce", "dropped"])) & (delivery_events.c.classification == "hard"))
    complaint = (delivery_events.c.kind == "spamreport") | (
        (delivery_events.c.kind == "dropped") & (delivery_events.c.classification == "complaint"))
    with store.engine.connect() as conn:
        sent = conn.execute(sa.select(sa.func.count()).select_from(deliveries).where(
            (deliveries.c.issue_id == issue_id) & (deliveries.c.status == "sent"))).scalar_one()

        def distinct(condition) -> int:
            return conn.execute(sa.select(sa.func.count(sa.distinct(delivery_events.c.delivery_id)))
                                .where((delivery_events.c.issue_id == issue_id) & condition)).scalar_one()

        now = dict(conn.execute(sa.select(subscribers.c.status, sa.func.count())
                                .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
                                .where((deliveries.c.issue_id == issue_id)
                                       & subscribers.c.status.in_(["bounced", "complained"]))
                                .group_by(subscribers.c.status)).all())
        return IssueHealth(issue_id, sent, distinct(complaint), distinct(hard), now.get("bounced", 0),
                           now.get("complained", 0))


def outcome_line(health: IssueHealth) -> str:
    """`subscribers now bounced 4, complained 1; complaint rate 0.10%, hard bounce rate 2.00% of 1000 sent`."""
    now = f"subscribers now bounced {health.now_bounced}, complained {health.now_complained}"
    if not health.sent:
        return f"{now}; nothing sent yet"
    return (f"{now}; complaint rate {health.complaint_rate:.2%}, hard bounce rate {health.hard_bounce_rate:.2%} "
            f"of {health.sent} sent")


def last_issue_warnings(store: Store, newsletter: str) -> list[str]:
    """What `send` says before it sends, about the newsletter's latest issue that sent anything."""
    with store.engine.connect() as conn:
        latest = conn.execute(
            sa.select(issues.c.id).where((issues.c.newsletter == newsletter) & (issues.c.status != "skipped")
                                         & sa.exists().where((deliveries.c.issue_id == issues.c.id)
                                                             & (deliveries.c.status == "sent")))
            .order_by(issues.c.reference_time.desc(), issues.c.id.desc()).limit(1)).scalar()
    return issue_health(store, latest).warnings() if latest is not None else []
