"""`newsletter run`: the scheduler daemon, a thin layer over schedule.py, plan.py and the Sender.

- `send_job` makes one send the scheduler decided on, exactly as `newsletter send` would (plan or resume the
  issue, then the Sender), and records what the fire became; a failure is logged and left resumable.
- `Scheduler.tick(now)` is the whole decision at one moment, with the clock as a parameter: tests drive it.
- `Daemon` adds what a process needs: the lease (one active daemon per database, the others stand by), a
  heartbeat thread, a thread per send, signals (first SIGTERM/SIGINT: warm stop; second: cold stop; SIGHUP:
  reload newsletter.toml), and picking up newsletter.toml and operator commands while running.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from . import ledger, schedule
from .config import Config
from .deliver import make_provider
from .deliver.run import SendReport, SendStopped, send_newsletter
from .errors import NewsletterError
from .site import read_site
from .store import Store

log = logging.getLogger("newsletter.run")
UTC = timezone.utc
POLL_SECONDS = 5.0
PROGRESS_SECONDS = 5.0
WARM_STOP_SECONDS = 9.0
_REASONS = {"fire": "fire", "one-off": "one-off send", "resume": "resuming the fire"}


# --- one send ----------------------------------------------------------------------------------------------


class _Progress:
    """A log line per batch at most every PROGRESS_SECONDS, not one per message."""

    def __init__(self, newsletter: str, record: ledger.IssueRecord, every: float):
        self.extra = {"newsletter": newsletter, "issue": record.id}
        self.every, self.last, self.tally = every, time.monotonic(), {}

    def __call__(self, marks) -> None:
        for mark in marks:
            self.tally[mark.status] = self.tally.get(mark.status, 0) + 1
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            log.info("progress: %s", _counts(self.tally), extra=self.extra)


def _counts(counts: dict) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "no deliveries"


def send_job(store: Store, config: Config, job: schedule.Job, now: datetime, *, provider_name: str | None = None,
             stop: threading.Event | None = None, progress_every: float = PROGRESS_SECONDS) -> str:
    """Send the issue of a fire (finishing the newsletter's unfinished earlier issue first), through the
    configured provider; returns what became of it: sent, stopped, busy or failed. The issue is planned with
    the fire's time, so that a catch-up or a resume carries what the fire would have carried."""
    newsletter = config.newsletters[job.newsletter]
    extra = {"newsletter": job.newsletter, "issue": None}

    def starting(record: ledger.IssueRecord, created: bool) -> _Progress:
        extra["issue"] = record.id
        if record.period == job.period:
            schedule.set_fire(store, job.fire_ids, "sending", issue_id=record.id)
        log.info("%s issue %d for %s (%s at %s): %d post(s), through %s",
                 "planned" if created else "resuming", record.number, record.period, _REASONS[job.reason],
                 job.fire_time.isoformat(), len(record.posts), provider.name, extra=dict(extra))
        return _Progress(job.newsletter, record, progress_every)

    def checks(warnings: list[str]) -> None:
        for warning in warnings:
            log.warning("%s", warning, extra=dict(extra))

    def finished(report: SendReport) -> None:
        if report.recovered:
            log.warning("%d delivery(ies) were in flight when an earlier send stopped: now unknown, not sent "
                        "again", report.recovered, extra=dict(extra))
        counts = dict(report.counts)
        schedule.settle_fires(store, report.issue_id, counts)
        if report.skipped_issue:
            log.info("issue for %s skipped: nothing new since the previous issue", report.period, extra=dict(extra))
        else:
            log.info("issue %d for %s finished: %s", report.number, report.period, _counts(counts),
                     extra=dict(extra))
        if counts.get("unknown"):
            log.warning("%d delivery(ies) are unknown: see `newsletter status %d`, then `newsletter send %s "
                        "--retry-unknown` once you know they did not arrive", counts["unknown"], report.issue_id,
                        job.newsletter, extra=dict(extra))

    try:
        read = read_site(config, now)
        for problem in read.problems:
            log.warning("post skipped: %s", problem, extra=dict(extra))
        provider = make_provider(config, provider_name, store)
        send_newsletter(store, config, newsletter, provider, read.posts, now, period=job.period,
                        planned_at=job.fire_time, starting=starting, finished=finished, checks=checks, stop=stop)
        return "sent"
    except SendStopped:
        log.info("send stopped: what was not sent stays pending; the next start resumes it", extra=extra)
        return "stopped"
    except (ledger.SendBusy, ledger.LeaseLost) as err:
        log.info("waiting: %s; trying again shortly", err, extra=extra)
        return "busy"
    except Exception as err:  # noqa: BLE001 - one failed send must not stop the daemon
        log.error("send failed: %s; the issue is left resumable: the next fire or the next start resumes it",
                  err, extra=extra, exc_info=not isinstance(err, NewsletterError))
        schedule.set_fire(store, job.fire_ids, "failed", detail=str(err), only_from=["sending"])
        return "failed"


@dataclass
class Scheduler:
    """The daemon's decisions at a moment `now`, with the sends made in line: what tests drive."""

    store: Store
    config: Config
    provider_name: str | None = None
    stop: threading.Event | None = None

    def start(self) -> list[tuple[schedule.Job, str]]:
        """On becoming the active daemon: resume every fire left sending or failed."""
        return self._run(schedule.resume_jobs(self.store, self.config, statuses=("sending", "failed")),
                         None)

    def tick(self, now: datetime) -> list[tuple[schedule.Job, str]]:
        resumed = schedule.resume_jobs(self.store, self.config)
        due = schedule.due_jobs(self.store, self.config, now, busy={j.newsletter for j in resumed})
        return self._run(resumed + due, now)

    def _run(self, jobs: list[schedule.Job], now: datetime | None) -> list[tuple[schedule.Job, str]]:
        return [(job, send_job(self.store, self.config, job, now or job.fire_time,
                               provider_name=self.provider_name, stop=self.stop)) for job in jobs]


# --- logging -----------------------------------------------------------------------------------------------


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        where = " ".join(p for p in (getattr(record, "newsletter", None) or "",
                                     f"issue {record.issue}" if getattr(record, "issue", None) else "") if p)
        text = f"{stamp} {record.levelname.lower():7} {where + ': ' if where else ''}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "newsletter": getattr(record, "newsletter", None),
                 "issue": getattr(record, "issue", None), "message": record.getMessage()}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(as_json: bool, stream=None) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter() if as_json else _TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


# --- the process -------------------------------------------------------------------------------------------


class Clock:
    """The daemon's now: the real time, or a start time given with --now that then runs at real speed."""

    def __init__(self, start: datetime | None = None):
        self.start, self.began = start, time.monotonic()

    def __call__(self) -> datetime:
        if self.start is None:
            return datetime.now(UTC)
        return (self.start + timedelta(seconds=time.monotonic() - self.began)).astimezone(UTC)


class Daemon:
    def __init__(self, store: Store, load: Callable[[], Config], config_path: Path | None, clock: Clock, *,
                 lease_seconds: int = schedule.DEFAULT_LEASE, poll: float = POLL_SECONDS,
                 provider_name: str | None = None):
        self.store, self.load, self.config_path, self.clock = store, load, config_path, clock
        self.config = load()
        self.config_mtime = self._mtime()
        self.poll, self.provider_name = poll, provider_name
        self.lease = schedule.DaemonLease(store, lease_seconds)
        self.wake = threading.Event()  # a signal, a lost lease: look again now
        self.stopping = False
        self.reload_asked = False
        self.lost = threading.Event()
        self.active = False
        self.send_stop = threading.Event()
        self.sends: dict[str, threading.Thread] = {}
        self.busy_logged: dict[str, float] = {}
        self.signals = 0

    # signals arrive in the main thread, between two statements of the loop
    def _on_stop(self, signum, _frame) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.info("%s: warm stop: finishing the batch in hand, then giving up the lease (signal again for "
                     "a cold stop)", name)
            self.stopping = True
            self.send_stop.set()
            self.wake.set()
            return
        log.warning("%s again: cold stop now; rows in flight become unknown at the next start", name)
        try:
            self.lease.release()
            self.lease.unregister()
        finally:
            os._exit(1)

    def _on_hup(self, _signum, _frame) -> None:
        self.reload_asked = True
        self.wake.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        started = datetime.now(UTC)
        self.lease.register("standby", started)
        beat = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        beat.start()
        log.info("newsletter run started (host %s, pid %d, lease %d s, clock %s); %s", self.lease.host,
                 self.lease.pid, self.lease.seconds, self.clock().isoformat(timespec="seconds"), self._describe())
        shown = None
        try:
            while not self.stopping:
                self.wake.clear()
                try:
                    shown = self._step(shown)
                except sa.exc.SQLAlchemyError as err:  # the database may be away for a moment
                    log.error("database error: %s; trying again in %.0f s", err, self.poll)
                    self.wake.wait(self.poll)
        finally:
            self._shutdown()
        return 0

    def _step(self, shown: str | None) -> str | None:
        """One turn of the loop: stand by, or look at the schedule and start what is due, then wait."""
        if not self.active:
            if self.lease.try_acquire(time.monotonic()):
                self._become_active()
            else:
                holder = self.lease.holder()
                if holder and holder.owner != shown:
                    shown = holder.owner
                    log.info("standing by: the active daemon is %s; taking over if it stops beating for %d s",
                             holder.describe(), max(holder.seconds, self.lease.seconds))
                self.wake.wait(min(self.poll, 1.0))
                return shown
        if self.lost.is_set():
            self._lose_lease()
            return shown
        self._reload_if_changed()
        self._tick()
        self.wake.wait(self._sleep_for())
        return shown

    def _become_active(self) -> None:
        self.active = True
        self.lost.clear()
        self.send_stop = threading.Event()
        self.lease.register("active", datetime.now(UTC))
        log.info("active: this daemon sends for %s", self._describe())
        for job in schedule.resume_jobs(self.store, self.config, statuses=("sending", "failed")):
            self._start(job)

    def _lose_lease(self) -> None:
        log.error("lost the lease (another daemon holds it, or the database was unreachable for a lease): "
                  "stopping sends and standing by")
        self.send_stop.set()
        self._join(WARM_STOP_SECONDS)
        self.active = False
        self.lease.register("standby", datetime.now(UTC))

    def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while True:
            time.sleep(self.lease.seconds / 3)
            try:
                if self.active and not self.lost.is_set():
                    if not self.lease.renew():
                        self.lost.set()
                        self.wake.set()
                self.lease.register("active" if self.active else "standby", datetime.now(UTC))
                last_ok = time.monotonic()
            except Exception as err:  # noqa: BLE001 - the database may come back
                log.warning("heartbeat failed: %s", err)
                if self.active and time.monotonic() - last_ok > self.lease.seconds * 2 / 3:
                    self.lost.set()  # a standby may take over soon: stop sending before it does
                    self.wake.set()

    def _tick(self) -> None:
        now = self.clock()
        self._reap()
        busy = set(self.sends)
        try:
            jobs = [j for j in schedule.resume_jobs(self.store, self.config, busy)
                    if time.monotonic() - self.busy_logged.get(j.newsletter, -1e9) >= self.lease.seconds / 2]
            jobs += schedule.due_jobs(self.store, self.config, now, busy | {j.newsletter for j in jobs})
        except Exception as err:  # noqa: BLE001 - the database may be away for a moment
            log.error("cannot read the schedule: %s; trying again in %.0f s", err, self.poll)
            return
        for job in jobs:
            self._start(job)

    def _start(self, job: schedule.Job) -> None:
        if job.newsletter in self.sends:
            return
        log.info("%s at %s: sending the issue for %s", _REASONS[job.reason], job.fire_time.isoformat(),
                 job.period, extra={"newsletter": job.newsletter, "issue": None})

        def work() -> None:
            outcome = send_job(self.store, self.config, job, self.clock(), provider_name=self.provider_name,
                               stop=self.send_stop)
            if outcome == "busy":
                self.busy_logged[job.newsletter] = time.monotonic()
            self.wake.set()

        thread = threading.Thread(target=work, name=f"send-{job.newsletter}", daemon=True)
        self.sends[job.newsletter] = thread
        thread.start()

    def _reap(self) -> None:
        for name, thread in list(self.sends.items()):
            if not thread.is_alive():
                del self.sends[name]

    def _sleep_for(self) -> float:
        """Until the next poll, or the next fire when it comes sooner."""
        now = self.clock()
        soonest = self.poll
        for newsletter in self.config.newsletters.values():
            for fire in schedule.next_fires(newsletter, now, 1):
                soonest = min(soonest, max(0.05, (fire - now).total_seconds() + 0.01))
        return soonest

    def _mtime(self) -> float | None:
        try:
            return self.config_path.stat().st_mtime if self.config_path else None
        except OSError:
            return None

    def _reload_if_changed(self) -> None:
        mtime = self._mtime()
        if mtime == self.config_mtime and not self.reload_asked:
            return
        why = "SIGHUP" if self.reload_asked else f"{self.config_path} changed"
        self.reload_asked, self.config_mtime = False, mtime
        try:
            config = self.load()
        except Exception as err:  # noqa: BLE001 - keep the schedule that works
            log.error("%s, but it cannot be used, so the running schedule stays: %s", why, err)
            return
        self.config = config
        log.info("%s: schedule reloaded; %s", why, self._describe())

    def _describe(self) -> str:
        parts = []
        for newsletter in self.config.newsletters.values():
            if newsletter.schedule:
                nxt = schedule.next_fires(newsletter, self.clock(), 1)
                parts.append(f"{newsletter.id} ({'; '.join(newsletter.schedule)} {newsletter.timezone.key}, next "
                             f"{nxt[0].isoformat() if nxt else 'never'})")
        return "newsletters " + ", ".join(parts) if parts else "no newsletter has a schedule (one-off sends only)"

    def _join(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for thread in list(self.sends.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._reap()

    def _shutdown(self) -> None:
        self.send_stop.set()
        self._join(WARM_STOP_SECONDS)
        if self.sends:
            log.warning("sends still running after %.0f s: %s; their rows in flight become unknown at the next "
                        "start", WARM_STOP_SECONDS, ", ".join(self.sends))
        try:
            self.lease.release()
            self.lease.unregister()
        except Exception as err:  # noqa: BLE001
            log.warning("could not give up the lease: %s; a standby takes over after it", err)
        log.info("stopped%s", "; the lease is given up" if self.active else "")
