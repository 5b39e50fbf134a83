"""The scheduler: when each newsletter fires, which fires are sent, and which process may send them.

The rules, with APScheduler's words for them:
- fire times come from APScheduler's CronTrigger read in the newsletter's zone (no cron or time-zone
  arithmetic here), then two daylight-saving rules are applied to what it returns: a wall time that occurs twice
  (the clocks go back) fires once, at its first occurrence; a wall time that does not exist (the clocks go
  forward) fires once, at the first valid instant after it, the moment of the change;
- a fire is sent once: its issue is keyed by newsletter and period (`fire_period`), so a double fire, a second
  daemon or a manual `send` racing the daemon find the same issue, and the ledger sends nobody a second copy;
- `catch_up` is the misfire grace time: a fire missed while no daemon ran is sent at start if it is no older
  than that, else recorded `missed`; several due fires of one newsletter coalesce into one issue, the latest;
- one send per newsletter at a time (max_instances=1); a paused newsletter's fires are recorded `paused`;
- one active daemon per database, under a lease row with a heartbeat (`DaemonLease`).

The truth about what was sent is the ledger; schedule_fires only records what each fire became.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from . import ledger
from .clock import format_duration
from .config import Config, NewsletterConfig
from .errors import NewsletterError, UnknownNameError
from .store import Store, as_utc, schedule_daemons, schedule_fires, schedule_lease, schedule_state, utcnow

UTC = timezone.utc
#: statuses of a fire: what a scheduled time became
FIRE_STATUSES = ("scheduled", "cancelled", "sending", "sent", "failed", "missed", "coalesced", "paused")
DEFAULT_LEASE = 30
MAX_LEASE = 60
#: a daemon silent for this long (seconds) is no longer listed
STALE_DAEMON = 4 * MAX_LEASE


class ScheduleError(NewsletterError):
    """A scheduler command cannot be carried out (an unknown one-off, a time in the past)."""


# --- when a newsletter fires -------------------------------------------------------------------------------


def trigger_for(newsletter: NewsletterConfig):
    """APScheduler's trigger for the newsletter's schedule (an OrTrigger of several), or None without one."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    triggers = [CronTrigger.from_crontab(e, timezone=newsletter.timezone) for e in newsletter.schedule]
    if not triggers:
        return None
    return triggers[0] if len(triggers) == 1 else OrTrigger(triggers)


def _transition_after(wall: datetime, zone) -> datetime:
    """The first valid instant after a wall time that does not exist in `zone`: the moment the clocks went
    forward. PEP 495 reads the gap both ways (fold 0: the old offset, a later instant; fold 1: the new one, an
    earlier instant); the change lies between the two, found to the second."""
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    after = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0).astimezone(zone)


def _as_fire(raw: datetime, zone) -> datetime | None:
    """What a time from the trigger means on the wall clock: None for the second occurrence of a repeated
    wall time, the moment of the change for a wall time that does not exist, else the same instant."""
    instant = raw.astimezone(UTC)
    local = instant.astimezone(zone)
    if local.replace(tzinfo=None, fold=0) != raw.replace(tzinfo=None, fold=0):
        return _transition_after(raw.replace(tzinfo=None), zone)
    if local.fold == 1 and local.replace(fold=0).astimezone(UTC) != instant:
        return None
    return local


def fires_between(newsletter: NewsletterConfig, after: datetime, until: datetime) -> list[datetime]:
    """The newsletter's fire times in (after, until], in its zone, each once."""
    trigger = trigger_for(newsletter)
    found: list[datetime] = []
    if trigger is None:
        return found
    cursor = after.astimezone(UTC)
    until = until.astimezone(UTC)
    while True:
        raw = trigger.get_next_fire_time(None, (cursor + timedelta(microseconds=1)).astimezone(newsletter.timezone))
        if raw is None:
            return found
        fire = _as_fire(raw, newsletter.timezone)
        cursor = raw.astimezone(UTC)
        if fire is None:
            continue
        if fire.astimezone(UTC) > until:
            return found
        instant = fire.astimezone(UTC)
        # one fire per instant: the moment of a spring-forward change may also be the next fire's
        if instant > after.astimezone(UTC) and (not found or instant != found[-1].astimezone(UTC)):
            found.append(fire)


def next_fires(newsletter: NewsletterConfig, after: datetime, count: int = 3) -> list[datetime]:
    """The next `count` fire times after `after` (none without a schedule)."""
    found: list[datetime] = []
    span = timedelta(days=7)
    cursor = after
    while len(found) < count and trigger_for(newsletter) is not None and span < timedelta(days=3660):
        found += fires_between(newsletter, cursor, cursor + span)
        cursor, span = cursor + span, span * 2
    return found[:count]


def fires_on(newsletter: NewsletterConfig, day: date) -> list[datetime]:
    """The fires whose wall-clock date in the newsletter's zone is `day`."""
    zone = newsletter.timezone
    start = datetime.combine(day, time(), tzinfo=zone) - timedelta(hours=1)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone) + timedelta(hours=1)
    return [f for f in fires_between(newsletter, start, end) if f.date() == day]


def fire_period(newsletter: NewsletterConfig, fire: datetime) -> str:
    """A fire's period: its day in the newsletter's zone (2026-01-05), or, on a day the schedule fires more
    than once, the day and wall time (2026-01-05T08:00)."""
    local = fire.astimezone(newsletter.timezone)
    if len(fires_on(newsletter, local.date())) > 1:
        return local.strftime("%Y-%m-%dT%H:%M")
    return local.date().isoformat()


def manual_period(newsletter: NewsletterConfig, now: datetime) -> str:
    """The period of a send by hand (or a one-off) at `now`: the day, as a fire that day would have; on a day
    the schedule fires more than once, the period of the latest fire at or before `now`, or of the day's first
    fire when none has come yet, so that the send stands for that fire and the fire sends nothing twice."""
    local = now.astimezone(newsletter.timezone)
    today = fires_on(newsletter, local.date()) if newsletter.schedule else []
    if len(today) <= 1:
        return local.date().isoformat()
    passed = [f for f in today if f <= local]
    return (passed[-1] if passed else today[0]).strftime("%Y-%m-%dT%H:%M")


# --- what each fire became -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FireRecord:
    id: int
    newsletter: str
    kind: str  # cron or one-off
    fire_time: datetime
    period: str
    status: str
    issue_id: int | None
    detail: str | None


def _fire(row) -> FireRecord:
    return FireRecord(row.id, row.newsletter, row.kind, as_utc(row.fire_time), row.period, row.status,
                      row.issue_id, row.detail)


def list_fires(store: Store, *, newsletter: str | None = None, statuses: Sequence[str] | None = None,
               limit: int | None = None) -> list[FireRecord]:
    """Fires, newest first."""
    query = sa.select(schedule_fires).order_by(schedule_fires.c.fire_time.desc(), schedule_fires.c.id.desc())
    if newsletter:
        query = query.where(schedule_fires.c.newsletter == newsletter)
    if statuses:
        query = query.where(schedule_fires.c.status.in_(list(statuses)))
    if limit:
        query = query.limit(limit)
    with store.engine.connect() as conn:
        return [_fire(r) for r in conn.execute(query).all()]


def set_fire(store: Store, fire_ids: Sequence[int], status: str, *, issue_id: int | None = None,
             detail: str | None = None, only_from: Sequence[str] | None = None) -> int:
    if not fire_ids:
        return 0
    values = {"status": status, "detail": detail, "updated_at": utcnow()}
    if issue_id is not None:
        values["issue_id"] = issue_id
    where = schedule_fires.c.id.in_(list(fire_ids))
    if only_from:
        where &= schedule_fires.c.status.in_(list(only_from))
    with store.engine.begin() as conn:
        return conn.execute(schedule_fires.update().where(where).values(**values)).rowcount


def settle_fires(store: Store, issue_id: int, counts: dict) -> None:
    """Fires left sending or failed whose issue is now finished are sent."""
    with store.engine.begin() as conn:
        conn.execute(schedule_fires.update().where(
            (schedule_fires.c.issue_id == issue_id) & schedule_fires.c.status.in_(["sending", "failed"])).values(
            status="sent", detail=_tally(counts), updated_at=utcnow()))


def _tally(counts: dict) -> str:
    return ", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "no deliveries"


def add_one_off(store: Store, config: Config, newsletter_id: str, at: datetime, now: datetime) -> int:
    """Record a one-off send of `newsletter_id` at `at`; a running daemon sends it then."""
    newsletter = config.newsletter(newsletter_id)
    if at < now - newsletter.catch_up:
        raise ScheduleError(f"{at.isoformat()} is more than catch_up ({format_duration(newsletter.catch_up)}) before now "
                            f"({now.isoformat()}); give a later time, or send it now with `newsletter send "
                            f"{newsletter_id}`")
    stamp = utcnow()
    try:
        with store.engine.begin() as conn:
            return conn.execute(schedule_fires.insert().values(
                newsletter=newsletter_id, kind="one-off", fire_time=at.astimezone(UTC),
                period=manual_period(newsletter, at), status="scheduled", recorded_at=stamp, updated_at=stamp)
                .returning(schedule_fires.c.id)).scalar_one()
    except IntegrityError as err:
        raise ScheduleError(f"{newsletter_id} already has a one-off at {at.isoformat()}; `newsletter schedule` "
                            "lists them") from err


def cancel_one_off(store: Store, fire_id: int) -> FireRecord:
    """Cancel a one-off that has not fired; ScheduleError when it has, UnknownNameError when there is none."""
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(schedule_fires).where(
            (schedule_fires.c.id == fire_id) & (schedule_fires.c.kind == "one-off"))).first()
        if row is None:
            raise UnknownNameError(f"no one-off send {fire_id}; `newsletter schedule` lists them")
        done = conn.execute(schedule_fires.update().where(
            (schedule_fires.c.id == fire_id) & (schedule_fires.c.status == "scheduled")).values(
            status="cancelled", updated_at=utcnow())).rowcount
    if not done:
        raise ScheduleError(f"one-off {fire_id} of {row.newsletter} cannot be cancelled: it is {row.status} "
                            "already")
    return _fire(row)


# --- per-newsletter state: paused, and how far fires were handled ---------------------------------------------


@dataclass(frozen=True)
class NewsletterState:
    newsletter: str
    paused: bool
    paused_at: datetime | None
    checked_until: datetime | None


def get_state(store: Store, newsletter_id: str) -> NewsletterState | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(schedule_state).where(schedule_state.c.newsletter == newsletter_id)).first()
    if row is None:
        return None
    return NewsletterState(row.newsletter, bool(row.paused), as_utc(row.paused_at), as_utc(row.checked_until))


def _ensure_state(store: Store, newsletter_id: str, checked_until: datetime | None) -> NewsletterState:
    found = get_state(store, newsletter_id)
    if found is not None:
        return found
    try:
        with store.engine.begin() as conn:
            conn.execute(schedule_state.insert().values(newsletter=newsletter_id, paused=False,
                                                        checked_until=checked_until, updated_at=utcnow()))
    except IntegrityError:
        pass  # made by another process a moment ago
    return get_state(store, newsletter_id)


def set_paused(store: Store, config: Config, newsletter_id: str, paused: bool, now: datetime) -> bool:
    """Pause or resume a newsletter's fires; returns whether that changed anything."""
    config.newsletter(newsletter_id)
    _ensure_state(store, newsletter_id, None)
    with store.engine.begin() as conn:
        return bool(conn.execute(schedule_state.update().where(
            (schedule_state.c.newsletter == newsletter_id) & (schedule_state.c.paused == (not paused))).values(
            paused=paused, paused_at=now.astimezone(UTC) if paused else None, updated_at=utcnow())).rowcount)


# --- deciding what is due --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One send the daemon must make: the issue of `newsletter` for `period`, for the fires in `fire_ids`."""

    newsletter: str
    period: str
    fire_time: datetime
    fire_ids: tuple[int, ...]
    reason: str  # "fire", "one-off" or "resume"


def due_jobs(store: Store, config: Config, now: datetime, busy: set[str] = frozenset()) -> list[Job]:
    """Decide what is due at `now` and record it: fires in (checked_until, now] and one-offs at or before
    `now`, per newsletter; those older than catch_up are `missed`, the latest of the rest is sent and any
    earlier ones are `coalesced` into it; a paused newsletter's fires are `paused`. Newsletters in `busy`
    (a send running) wait for the next call. Returns the sends to make, one per newsletter at most."""
    jobs = []
    for newsletter in config.newsletters.values():
        if newsletter.id in busy:
            continue
        job = _decide(store, newsletter, now)
        if job is not None:
            jobs.append(job)
    return jobs


def _decide(store: Store, newsletter: NewsletterConfig, now: datetime) -> Job | None:
    state = _ensure_state(store, newsletter.id, now)
    start = state.checked_until or now
    crons = [(f, None) for f in fires_between(newsletter, start, now)]
    one_offs = [(f.fire_time, f.id) for f in list_fires(store, newsletter=newsletter.id, statuses=["scheduled"])
                if f.fire_time <= now.astimezone(UTC)]
    due = sorted(crons + one_offs, key=lambda pair: (pair[0].astimezone(UTC), pair[1] is not None))
    fresh = [pair for pair in due if now - pair[0] <= newsletter.catch_up and not state.paused]
    chosen = fresh[-1] if fresh else None
    stamp = utcnow()
    chosen_id = None
    same = (schedule_state.c.checked_until.is_(None) if state.checked_until is None
            else schedule_state.c.checked_until == state.checked_until)
    with store.engine.begin() as conn:
        # Fires up to `now` are handled, in the same transaction that records them: a fire is decided once,
        # by one daemon, and never lost between the two.
        moved = conn.execute(schedule_state.update().where((schedule_state.c.newsletter == newsletter.id) & same)
                             .values(checked_until=max(now, start).astimezone(UTC), updated_at=stamp)).rowcount
        if not moved:
            return None  # another daemon decided these fires
        for pair in due:
            fire, one_off = pair
            if state.paused:
                status, detail = "paused", "the newsletter was paused"
            elif pair == chosen:
                status, detail = "sending", None
            elif pair in fresh:
                status, detail = "coalesced", f"coalesced into the fire at {chosen[0].isoformat()}"
            else:
                status, detail = "missed", f"no daemon was running within catch_up ({format_duration(newsletter.catch_up)}) of it"
            if one_off is not None:
                taken = conn.execute(schedule_fires.update().where(
                    (schedule_fires.c.id == one_off) & (schedule_fires.c.status == "scheduled")).values(
                    status=status, detail=detail, updated_at=stamp)).rowcount
                fire_id = one_off if taken else None  # cancelled a moment ago
            else:
                fire_id = conn.execute(schedule_fires.insert().values(
                    newsletter=newsletter.id, kind="cron", fire_time=fire.astimezone(UTC),
                    period=fire_period(newsletter, fire), status=status, detail=detail, recorded_at=stamp,
                    updated_at=stamp).returning(schedule_fires.c.id)).scalar_one()
            if pair == chosen:
                chosen_id = fire_id
    if chosen is None or chosen_id is None:
        return None
    fire, one_off = chosen
    if one_off is not None:
        return Job(newsletter.id, manual_period(newsletter, fire), fire, (chosen_id,), "one-off")
    return Job(newsletter.id, fire_period(newsletter, fire), fire, (chosen_id,), "fire")


def resume_jobs(store: Store, config: Config, busy: set[str] = frozenset(), *,
                statuses: Sequence[str] = ("sending",)) -> list[Job]:
    """Fires whose send did not finish (the daemon stopped, died, or found the issue busy; with
    `statuses` including failed, those too): one job per newsletter, for its oldest such fire."""
    jobs: dict[str, Job] = {}
    for fire in reversed(list_fires(store, statuses=statuses)):
        if fire.newsletter in busy or fire.newsletter not in config.newsletters:
            continue
        if fire.newsletter in jobs:
            continue
        jobs[fire.newsletter] = Job(fire.newsletter, fire.period, fire.fire_time, (fire.id,), "resume")
    return list(jobs.values())


# --- one active daemon per database ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    owner: str
    host: str
    pid: int
    since: datetime
    heartbeat: datetime
    beat: int
    seconds: int

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}, active since {self.since.isoformat(timespec='seconds')}"


class DaemonLease:
    """The active-daemon lease: a row naming its owner, with a heartbeat counter the owner bumps every third of
    the lease. A standby takes it when the row is free, when its holder is a process of this host that is
    gone (as the ledger tells issue leases apart), or when the counter has not moved for a whole lease (and a
    safety margin) as timed by the standby's own monotonic clock, so that neither clock skew between hosts nor
    a change of the wall clock makes it take over from a live daemon."""

    def __init__(self, store: Store, seconds: int = DEFAULT_LEASE, *, owner: str | None = None):
        if not 1 <= seconds <= MAX_LEASE:
            raise ValueError(f"the lease must be between 1 and {MAX_LEASE} seconds, not {seconds}")
        self.store, self.seconds = store, seconds
        self.owner = owner or ledger.lease_owner()
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._seen: tuple[str | None, int] | None = None
        self._seen_at = 0.0

    def holder(self) -> Holder | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(schedule_lease).where(schedule_lease.c.id == 1)).first()
        if row is None or row.owner is None:
            return None
        return Holder(row.owner, row.host, row.pid, as_utc(row.since), as_utc(row.heartbeat), row.beat,
                      row.seconds)

    def try_acquire(self, monotonic: float) -> bool:
        """Take the lease when it is free or its holder stopped beating; True when this daemon holds it."""
        holder = self.holder()
        if holder is not None and holder.owner == self.owner:
            return True
        if holder is not None and not ledger.owner_is_dead(holder.owner):
            seen = (holder.owner, holder.beat)
            if seen != self._seen:
                self._seen, self._seen_at = seen, monotonic
                return False
            if monotonic - self._seen_at < max(self.seconds, holder.seconds) + 1:
                return False
        same = (schedule_lease.c.owner.is_(None) if holder is None
                else (schedule_lease.c.owner == holder.owner) & (schedule_lease.c.beat == holder.beat))
        now = utcnow()
        with self.store.engine.begin() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(schedule_lease)).scalar_one() == 0:
                try:
                    conn.execute(schedule_lease.insert().values(id=1, beat=0))
                except IntegrityError:
                    return False
            taken = conn.execute(schedule_lease.update().where((schedule_lease.c.id == 1) & same).values(
                owner=self.owner, host=self.host, pid=self.pid, since=now, heartbeat=now,
                beat=schedule_lease.c.beat + 1, seconds=self.seconds)).rowcount
        return bool(taken)

    def renew(self) -> bool:
        """Beat; False when another daemon holds the lease now."""
        with self.store.engine.begin() as conn:
            return bool(conn.execute(schedule_lease.update().where(
                (schedule_lease.c.id == 1) & (schedule_lease.c.owner == self.owner)).values(
                heartbeat=utcnow(), beat=schedule_lease.c.beat + 1)).rowcount)

    def release(self) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(schedule_lease.update().where(
                (schedule_lease.c.id == 1) & (schedule_lease.c.owner == self.owner)).values(
                owner=None, host=None, pid=None, since=None, heartbeat=None))

    def register(self, role: str, started: datetime) -> None:
        """Record this daemon (active or standby) for `newsletter schedule`, with a fresh heartbeat; forget
        daemons that stopped beating long ago (killed, or their machine lost)."""
        with self.store.engine.begin() as conn:
            conn.execute(schedule_daemons.delete().where(
                schedule_daemons.c.heartbeat < utcnow() - timedelta(seconds=STALE_DAEMON)))
            done = conn.execute(schedule_daemons.update().where(schedule_daemons.c.owner == self.owner).values(
                role=role, heartbeat=utcnow())).rowcount
            if not done:
                conn.execute(schedule_daemons.insert().values(owner=self.owner, host=self.host, pid=self.pid,
                                                              started_at=started, heartbeat=utcnow(), role=role))

    def unregister(self) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(schedule_daemons.delete().where(schedule_daemons.c.owner == self.owner))


def list_daemons(store: Store) -> list[dict]:
    """Every daemon that registered, active first, with how long ago it last beat."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(schedule_daemons).order_by(schedule_daemons.c.started_at)).all()
        lease = conn.execute(sa.select(schedule_lease.c.owner, schedule_lease.c.seconds)).first()
    active = lease.owner if lease else None
    now = utcnow()
    found = [{"owner": r.owner, "host": r.host, "pid": r.pid, "started_at": as_utc(r.started_at).isoformat(),
              "heartbeat_age": round((now - as_utc(r.heartbeat)).total_seconds(), 1),
              "role": "active" if r.owner == active else "standby"} for r in rows
             if (now - as_utc(r.heartbeat)).total_seconds() < STALE_DAEMON]
    return sorted(found, key=lambda d: d["role"] != "active")
