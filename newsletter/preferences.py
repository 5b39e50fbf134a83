"""Leaving, rejoining and choosing categories: the state behind the unsubscribe and preferences pages.

Unsubscribing is per newsletter: it deletes that one subscription row, in its own committed transaction, so
that the send loop, which reads the subscription when it claims a batch, skips the reader from the next batch
on, including the rest of an issue being sent right now. Each departure is recorded (when, and how: one-click,
page, preferences, provider, operator) and stays open until the person comes back through their own signed link
or a confirmed sign-up, so that no import or sign-up re-adds them silently. Someone whose address bounced or who
complained cannot be made active again from the web: only the operator can.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .errors import NewsletterError
from .store import Store, as_utc, subscribers, subscriptions, unsubscribes
from .subscribers import Subscriber, _with_subscriptions, decode_categories, encode_categories

OPERATOR = "operator"  # `newsletter subscribers remove`
HOWS = ("one-click", "page", "preferences", "cli", "provider", OPERATOR)
BLOCKED = ("bounced", "complained")


class Refused(NewsletterError):
    """A change the web may not make: the address bounced or its owner reported a message as spam."""


@dataclass(frozen=True)
class Departure:
    """One unsubscribe: from which newsletter, when, how, and when (if ever) they came back."""

    newsletter: str
    at: datetime
    how: str
    rejoined_at: datetime | None


def by_id(store: Store, subscriber_id: int) -> Subscriber | None:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(subscribers).where(subscribers.c.id == subscriber_id)).all()
        return _with_subscriptions(conn, rows)[0] if rows else None


def refusal(status: str) -> str:
    if status == "bounced":
        return ("mail to this address bounced, so it cannot be subscribed again from here; write to the editors "
                "if the address works again")
    return ("this address reported one of our messages as spam, so it cannot be subscribed again from here; "
            "write to the editors if that was a mistake")


def unsubscribe(store: Store, subscriber_id: int, newsletter: str, how: str, now: datetime) -> bool:
    """Leave one newsletter; True when a subscription was removed, False when there was none (idempotent).
    Someone who holds no subscription afterwards becomes `unsubscribed`."""
    with store.engine.begin() as conn:
        return leave(conn, subscriber_id, newsletter, how, now)


def leave(conn, subscriber_id: int, newsletter: str, how: str, now: datetime) -> bool:
    """`unsubscribe` inside the caller's transaction: the one place a subscription ends, with its record (when
    and how), whoever ends it (a link, the preferences page, a provider's unsubscribe event)."""
    held = (subscriptions.c.subscriber_id == subscriber_id) & (subscriptions.c.newsletter == newsletter)
    categories = conn.execute(sa.select(subscriptions.c.categories).where(held)).scalar()
    removed = conn.execute(subscriptions.delete().where(held)).rowcount
    if removed:
        conn.execute(unsubscribes.insert().values(subscriber_id=subscriber_id, newsletter=newsletter, at=now,
                                                  how=how, categories=categories))
        _unsubscribed_when_none_left(conn, subscriber_id, now)
    return bool(removed)


def held_before(store: Store, subscriber_id: int, newsletter: str) -> tuple[str, ...]:
    """The categories the subscription held when they last left `newsletter`: () (every category) when they
    never left, held every category, or left before departures kept them."""
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(unsubscribes.c.categories).where(
            (unsubscribes.c.subscriber_id == subscriber_id) & (unsubscribes.c.newsletter == newsletter))
            .order_by(unsubscribes.c.at.desc(), unsubscribes.c.id.desc()).limit(1)).scalar()
    return decode_categories(stored or "")


def rejoin(store: Store, subscriber_id: int, newsletter: str, offered: tuple[str, ...], now: datetime) -> tuple[str, ...]:
    """Come back to `newsletter` with the categories held when leaving, as far as it still offers them (matched
    without regard to case; a newsletter that lists none offers the site's); every category when none of them is
    offered any more. Returns what was restored."""
    before = held_before(store, subscriber_id, newsletter)
    spelled = {c.casefold(): c for c in offered} if offered else {c.casefold(): c for c in before}
    kept = tuple(dict.fromkeys(spelled[c.casefold()] for c in before if c.casefold() in spelled))
    subscribe(store, subscriber_id, newsletter, kept, now)
    return kept


def leave_all(store: Store, subscriber_id: int, how: str, now: datetime) -> list[str]:
    """Leave every newsletter; returns those left."""
    with store.engine.connect() as conn:
        held = conn.execute(sa.select(subscriptions.c.newsletter)
                            .where(subscriptions.c.subscriber_id == subscriber_id)).scalars().all()
    return [n for n in sorted(held) if unsubscribe(store, subscriber_id, n, how, now)]


def _unsubscribed_when_none_left(conn, subscriber_id: int, now: datetime) -> None:
    left = conn.execute(sa.select(sa.func.count()).select_from(subscriptions)
                        .where(subscriptions.c.subscriber_id == subscriber_id)).scalar_one()
    if not left:
        conn.execute(subscribers.update().where((subscribers.c.id == subscriber_id)
                                                & (subscribers.c.status == "active"))
                     .values(status="unsubscribed", updated_at=now))


def subscribe(store: Store, subscriber_id: int, newsletter: str, categories: tuple[str, ...], now: datetime) -> None:
    """Join, rejoin, or change the categories of one newsletter, on the person's own signed link (or a confirmed
    sign-up). Closes any open unsubscribe; Refused when the address bounced or complained."""
    stored = encode_categories(categories)
    for _ in range(3):
        try:
            with store.engine.begin() as conn:
                status = conn.execute(sa.select(subscribers.c.status)
                                      .where(subscribers.c.id == subscriber_id)).scalar()
                if status is None:
                    raise NewsletterError(f"subscriber {subscriber_id} no longer exists")
                if status in BLOCKED:
                    raise Refused(refusal(status))
                changed = conn.execute(subscriptions.update().where(
                    (subscriptions.c.subscriber_id == subscriber_id) & (subscriptions.c.newsletter == newsletter))
                    .values(categories=stored)).rowcount
                if not changed:
                    conn.execute(subscriptions.insert().values(subscriber_id=subscriber_id, newsletter=newsletter,
                                                               categories=stored, created_at=now))
                conn.execute(unsubscribes.update().where(
                    (unsubscribes.c.subscriber_id == subscriber_id) & (unsubscribes.c.newsletter == newsletter)
                    & unsubscribes.c.rejoined_at.is_(None)).values(rejoined_at=now))
                if status != "active":
                    conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id)
                                 .values(status="active", updated_at=now))
            return
        except IntegrityError:
            continue  # another request inserted the same subscription first: update it instead
    raise NewsletterError(f"subscriber {subscriber_id}: could not save {newsletter}; try again")


def open_departures(conn, subscriber_ids: list[int]) -> set[tuple[int, str]]:
    """(subscriber, newsletter) pairs someone left and has not come back to."""
    if not subscriber_ids:
        return set()
    return {(r.subscriber_id, r.newsletter) for r in conn.execute(
        sa.select(unsubscribes.c.subscriber_id, unsubscribes.c.newsletter)
        .where(unsubscribes.c.subscriber_id.in_(subscriber_ids) & unsubscribes.c.rejoined_at.is_(None)))}


def close_departures(conn, pairs: list[tuple[int, str]], now: datetime) -> None:
    for subscriber_id, newsletter in pairs:
        conn.execute(unsubscribes.update().where(
            (unsubscribes.c.subscriber_id == subscriber_id) & (unsubscribes.c.newsletter == newsletter)
            & unsubscribes.c.rejoined_at.is_(None)).values(rejoined_at=now))


def departures(store: Store, subscriber_id: int) -> list[Departure]:
    """Every unsubscribe of one subscriber, oldest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(unsubscribes).where(unsubscribes.c.subscriber_id == subscriber_id)
                            .order_by(unsubscribes.c.at, unsubscribes.c.id)).all()
    return [Departure(r.newsletter, as_utc(r.at), r.how, as_utc(r.rejoined_at)) for r in rows]


def recent_departures(store: Store, limit: int = 10) -> tuple[int, list[tuple[str, Departure]]]:
    """How many unsubscribes are on record, and the latest `limit` with their addresses, newest first."""
    with store.engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(unsubscribes)).scalar_one()
        rows = conn.execute(sa.select(subscribers.c.email, unsubscribes)
                            .join(subscribers, subscribers.c.id == unsubscribes.c.subscriber_id)
                            .order_by(unsubscribes.c.at.desc(), unsubscribes.c.id.desc()).limit(limit)).all()
    return total, [(r.email, Departure(r.newsletter, as_utc(r.at), r.how, as_utc(r.rejoined_at))) for r in rows]
