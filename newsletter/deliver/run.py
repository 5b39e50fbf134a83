"""The send loop: plan or resume an issue, then claim, send and mark batches until every delivery is final.

It owns batching, retries and the ledger for every provider. Each batch is claimed and committed before the
provider is called and marked after it answers, so a crash at any point leaves rows that are either untouched
(pending: sent by the next run), finished, or in flight (unknown: never resent without --retry-unknown).

A provider may take several requests at once (`Provider.in_flight`, SendGrid's `requests_in_flight`): then up to
that many batches are posted by worker threads while this thread claims and prepares the next one. Only this
thread touches the ledger; the workers only call `provider.send`. As soon as one request is refused (429, 5xx,
413, a stop), the others in flight are waited for and recorded, and the refused batch goes on one request at a
time exactly as with a single request in flight.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .. import ledger
from ..clock import format_duration
from ..config import Config, NewsletterConfig
from ..digest import Variants, check_newsletters
from ..errors import ConfigError, NewsletterError
from ..plan import next_issue, period_of, plan_or_resume
from ..posts import Post
from ..render import Digest, Recipient, template_environment
from ..store import Store, utcnow
from ..tokens import TEST_SUBSCRIBER, Tokens
from .base import Batch, Envelope, Outcome, Provider, RateLimited, RetryBatch, SplitBatch, StopSend

if TYPE_CHECKING:
    import jinja2

EXIT_UNKNOWN = 3
LINKS_WARNING = ("[web] base_url is not set, so unsubscribe and preferences links point at the blog "
                 "({base}); set it to where `newsletter serve` answers")


class ProviderUnavailable(NewsletterError):
    """The provider kept refusing or could not be reached; what was not sent stays pending."""


@dataclass
class SendReport:
    newsletter: str
    period: str
    issue_id: int | None = None
    number: int | None = None
    mode: str = "send"  # send, dry-run, test
    skipped_issue: bool = False
    posts: int = 0
    variants: int = 0
    counts: Counter = field(default_factory=Counter)
    recovered: int = 0
    retried_unknown: int = 0
    created: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_UNKNOWN if self.counts.get("unknown") else 0


def make_batch(config: Config, newsletter: NewsletterConfig, issue_id: int, label: str, digest: Digest,
               envelopes: tuple[Envelope, ...], now: datetime) -> Batch:
    """A batch with what every message of the configuration shares: From, Reply-To, DKIM, the mailto target."""
    delivery = config.delivery
    return Batch(issue_id, label, newsletter.id, newsletter.title, digest, envelopes, delivery.from_addr,
                 delivery.reply_to, now, delivery.dkim, config.unsubscribe_mailto)


class SendStopped(NewsletterError):
    """The send was asked to stop (SIGTERM, Ctrl-C, a daemon shutting down); what was not sent stays pending."""


class Sender:
    """Works one issue through a provider until every delivery is final, or the send must stop.

    `stop`, when set, ends the send after the request in hand: what is claimed but untried is released as
    pending, the lease is given up, and SendStopped is raised. `sleep` waits between retries (tests pass a fake
    one)."""

    def __init__(self, store: Store, config: Config, newsletter: NewsletterConfig, provider: Provider, *,
                 progress: Callable[[list[ledger.Mark]], None] | None = None,
                 sleep: Callable[[float], None] | None = None, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 checks: Callable[[list[str]], None] | None = None, env: jinja2.Environment | None = None):
        self.store, self.config, self.newsletter, self.provider = store, config, newsletter, provider
        self.env = env  # the templates, loaded and compiled once for the whole send (default: loaded here)
        # told the pre-send warnings (links, what mail clients would show badly) before anything is sent; it may
        # raise to stop the send then (--strict does)
        self.checks = checks or (lambda warnings: None)
        self.progress = progress or (lambda marks: None)
        self.stop = stop
        self.sleep = sleep or (stop.wait if stop is not None else time.sleep)
        self.clock = clock
        self.deadline = float("inf")
        self.owner = ledger.lease_owner()
        self.claimed: set[int] = set()
        self.in_flight: set[int] = set()  # handed to the provider, no answer yet
        self.posted: dict[Future, Batch] = {}  # requests the workers were given, oldest first
        self.workers: ThreadPoolExecutor | None = None
        # True from a claim until the first request after it or any wait: the claim read who may still be
        # sent to, so the first batch made of it needs no second look
        self.fresh = False
        self.heartbeat: ledger.Heartbeat | None = None

    def run(self, record: ledger.IssueRecord, now: datetime, *, retry_unknown: bool = False) -> SendReport:
        report = SendReport(self.newsletter.id, record.period, record.id, record.number, posts=len(record.posts))
        if self.provider.reaches_people and not self.config.web_base_url_set:
            report.warnings.append(LINKS_WARNING.format(base=self.config.web_base_url))
        if record.status == "skipped":
            report.skipped_issue = True
            return report
        ledger.acquire_lease(self.store, record.id, self.owner)
        self.deadline = self.clock() + self.config.delivery.deadline.total_seconds()
        try:
            with ledger.Heartbeat(self.store, record.id, self.owner) as self.heartbeat:
                # Only rows the operator has seen as unknown are retried: those a dead process left in flight
                # are turned unknown after, and reported for the operator to decide.
                if retry_unknown:
                    report.retried_unknown = ledger.retry_unknown(self.store, record.id)
                report.recovered = ledger.recover_in_flight(self.store, record.id)
                variants = Variants(self.store, self.config, self.newsletter, record, self.env)
                report.warnings += self._precheck(record, variants)
                self.checks(report.warnings)
                self._work(record, variants, now)
            ledger.finish(self.store, record.id)
            report.variants = variants.rendered
        finally:
            ledger.release_lease(self.store, record.id, self.owner)
        report.counts = ledger.counts(self.store, record.id)
        return report

    def _precheck(self, record: ledger.IssueRecord, variants: Variants) -> list[str]:
        """Render (or load) every variant still to be sent, before anything goes, and return what the checks
        of the newly rendered ones found."""
        for audience, _count in ledger.pending_audiences(self.store, record.id):
            if audience is not None:
                variants.for_categories(audience)
        return sorted({str(check) for digest in variants.digests for check in digest.checks})

    def _work(self, record: ledger.IssueRecord, variants: Variants, now: datetime) -> None:
        tokens = Tokens(self.store.secret())
        token = secrets.token_hex(8)
        if self.provider.in_flight > 1:
            self.workers = ThreadPoolExecutor(self.provider.in_flight, thread_name_prefix="post")
        try:
            self.provider.open()
            self._loop(record, variants, tokens, token, now)
        except BaseException as err:
            # What the provider was never handed goes back to pending, whatever stopped the send (a refusal,
            # Ctrl-C during a backoff, a stop request, a lost lease). What it was handed and did not answer
            # stays `sending`, which the next run reports as unknown: nobody can say whether it went out.
            try:
                self._abandon(err)
            finally:
                ledger.release(self.store, sorted(self.claimed - self.in_flight))
            if isinstance(err, RetryBatch):
                raise ProviderUnavailable(f"{self.provider.name}: {err}; the rest stays pending, run send "
                                          "again later") from err
            raise
        finally:
            if self.workers is not None:
                self.workers.shutdown(wait=False, cancel_futures=True)
            self.provider.close()

    def _check(self) -> None:
        """Before anything goes to the provider: still ours, and not asked to stop."""
        if self.heartbeat is not None:
            self.heartbeat.check()
        if self.stop is not None and self.stop.is_set():
            raise SendStopped(f"{self.newsletter.id}: the send was stopped; what was not sent stays pending")

    def _loop(self, record: ledger.IssueRecord, variants: Variants, tokens: Tokens, token: str,
              now: datetime) -> None:
        """Claim the subscribers of one digest variant at a time, biggest first, so that each request is full;
        then whatever is left (retries come due, rows planned before audiences were kept)."""
        while True:
            for audiences in self._variant_groups(record, variants):
                while True:
                    self._await_slot()
                    self._check()
                    claimed = ledger.claim(self.store, record.id, self.newsletter.id, self.provider.batch_size,
                                           token, audiences)
                    if not claimed:
                        break
                    self._process(record, claimed, variants, tokens, now)
            self._await_slot()
            self._check()
            claimed = ledger.claim(self.store, record.id, self.newsletter.id, self.provider.batch_size, token)
            if claimed:
                self._process(record, claimed, variants, tokens, now)
                continue
            if self.posted:  # their answers may put rows back to pending
                self._settle_all()
                continue
            due = ledger.next_retry(self.store, record.id)
            if due is None:
                return
            self._wait((due - utcnow()).total_seconds())

    def _variant_groups(self, record: ledger.IssueRecord, variants: Variants) -> list[list[str]]:
        groups: dict[int, tuple[int, list[str]]] = {}
        for audience, count in ledger.pending_audiences(self.store, record.id):
            if audience is None:
                continue
            key = id(variants.for_categories(audience))
            total, members = groups.get(key, (0, []))
            groups[key] = (total + count, members + [audience])
        return [members for _, members in sorted(groups.values(), key=lambda g: -g[0])]

    def _process(self, record: ledger.IssueRecord, claimed: list[ledger.Claimed], variants: Variants,
                 tokens: Tokens, now: datetime) -> None:
        self.claimed.update(row.delivery_id for row in claimed)
        self.fresh = True
        skips, groups = [], {}
        for row in claimed:
            if row.subscriber_status != "active":
                skips.append(ledger.Mark(row.delivery_id, "skipped", f"{row.subscriber_status} after the issue "
                                                                      "was planned"))
                continue
            if row.categories is None:
                skips.append(ledger.Mark(row.delivery_id, "skipped", "no longer subscribed to this newsletter"))
                continue
            digest = variants.for_categories(row.categories)
            if digest is None:
                skips.append(ledger.Mark(row.delivery_id, "skipped", "none of this issue's posts are in the "
                                                                     "subscriber's categories"))
            else:
                unsubscribe, preferences = tokens.urls(self.config.web_base_url, row.subscriber_id,
                                                       self.newsletter.id)
                recipient = Recipient(row.email, row.name, unsubscribe, preferences)
                groups.setdefault(id(digest), (digest, []))[1].append(Envelope(row.delivery_id, recipient))
        self._record(skips)
        for digest, envelopes in groups.values():
            self._hand(self._batch(record, digest, envelopes, now))

    def _batch(self, record: ledger.IssueRecord, digest: Digest, envelopes: list[Envelope],
               now: datetime) -> Batch:
        return make_batch(self.config, self.newsletter, record.id, f"{self.newsletter.id}-{record.period}", digest,
                          tuple(envelopes), now)

    def _still_wanted(self, batch: Batch) -> Batch | None:
        """The batch less anyone who left since it was claimed (recorded as skipped); None when nobody is left.
        The first batch after a claim, with no request or wait between, was checked by the claim itself."""
        if self.fresh:
            self.fresh = False
            return batch
        gone = ledger.unreachable(self.store, self.newsletter.id, [e.delivery_id for e in batch.envelopes])
        if not gone:
            return batch
        self._record([ledger.Mark(delivery_id, "skipped", reason) for delivery_id, reason in gone.items()])
        kept = tuple(e for e in batch.envelopes if e.delivery_id not in gone)
        return dataclasses.replace(batch, envelopes=kept) if kept else None

    def _hand(self, batch: Batch) -> None:
        """Give a batch to a worker to post, once fewer than `in_flight` requests are out; with one request at
        a time (or while the provider's quota is spent), deliver it here and now."""
        if self.workers is None:
            return self._deliver(batch)
        self._await_slot()
        self._check()
        batch = self._still_wanted(batch)  # right before it goes: a worker is free, so it is posted at once
        if batch is None:
            return None
        if self.provider.pause() > 0:
            self._settle_all()
            return self._deliver(batch)
        post = self.provider.prepare(batch)  # built here: the workers only wait on the network
        self.in_flight.update(e.delivery_id for e in batch.envelopes)
        self.posted[self.workers.submit(post)] = batch
        return None

    def _await_slot(self) -> None:
        """Wait until a worker is free (and the rate limit leaves room for one more request), recording the
        answers that come meanwhile."""
        while self.posted and len(self.posted) >= min(self.provider.in_flight, self.provider.room()):
            self.fresh = False
            done, _ = wait_for(self.posted, return_when=FIRST_COMPLETED)
            for future in [f for f in self.posted if f in done]:
                if future in self.posted:  # not settled already while an earlier one was refused
                    self._settle(future)

    def _settle(self, future: Future) -> None:
        """Record a posted batch's answer. A refusal is handled as `_deliver` does, one request at a time,
        after every other request in flight was answered and recorded."""
        batch = self.posted.pop(future)
        try:
            outcomes = future.result()
        except StopSend as err:
            return self._deliver(batch, refused=err)  # records what it says and stops; _abandon does the rest
        except (RetryBatch, SplitBatch) as err:
            self.in_flight.difference_update(e.delivery_id for e in batch.envelopes)  # not taken
            self._settle_all()
            return self._deliver(batch, refused=err)
        self._record_outcomes(batch, outcomes)
        self.in_flight.difference_update(e.delivery_id for e in batch.envelopes)
        return None

    def _settle_all(self) -> None:
        while self.posted:
            self._settle(next(iter(self.posted)))

    def _abandon(self, err: BaseException) -> None:
        """The send stops with requests posted: those no worker started go back to pending; those answered
        are recorded; those still out are waited for, unless the process is being interrupted (Ctrl-C):
        then they stay `sending`, unknown to the next run."""
        for future, batch in list(self.posted.items()):
            ids = {e.delivery_id for e in batch.envelopes}
            if future.cancel() or (not future.done() and not isinstance(err, Exception)):
                if future.cancelled():
                    self.in_flight -= ids
                continue
            try:
                outcomes = future.result()
            except (RetryBatch, SplitBatch):  # not taken
                self.in_flight -= ids
                continue
            except StopSend as stop:
                outcomes = stop.outcomes
            except Exception:  # noqa: BLE001 - no answer that says what happened: they stay in flight
                continue
            self.in_flight -= ids
            if outcomes:
                self._record_outcomes(batch, outcomes)
        self.posted.clear()

    def _deliver(self, batch: Batch, attempt: int = 1, refused: Exception | None = None) -> None:
        """Hand one batch to the provider until it answers for every envelope. A 429 is waited out as the
        provider says without counting as an attempt; other refusals count against max_attempts; every wait
        must end within the send's deadline. `refused`: how a worker's post of this batch was refused."""
        limited = 0
        while True:
            if refused is None:
                self._check()
                batch = self._still_wanted(batch)
                if batch is None:
                    return
                if (pause := self.provider.pause()) > 0:
                    self._wait(self._within_deadline(pause, f"{self.provider.name}: the rate limit's quota is "
                                                            "spent"))
                    continue  # re-check who is still wanted after the wait
            ids = [e.delivery_id for e in batch.envelopes]
            if refused is None:
                self.in_flight.update(ids)
            try:
                if refused is not None:
                    raise refused
                outcomes = self.provider.send(batch)
            except SplitBatch:
                self.in_flight.difference_update(ids)
                for half in batch.split():
                    self._deliver(half, attempt)
                return
            except RateLimited as err:
                refused = None
                self.in_flight.difference_update(ids)
                limited += 1
                wait = err.after if err.after is not None else min(60.0, 2.0 ** limited)
                self._wait(self._within_deadline(wait, f"{self.provider.name}: {err}"))
                continue
            except RetryBatch as err:
                refused = None
                self.in_flight.difference_update(ids)
                if attempt >= self.config.delivery.max_attempts:
                    raise
                wait = err.after if err.after is not None else (
                    self.config.delivery.retry_delay * 2 ** (attempt - 1) * random.uniform(1.0, 1.25))
                self._wait(self._within_deadline(wait, f"{self.provider.name}: {err}"))
                attempt += 1
                continue
            except StopSend as err:
                self.in_flight.difference_update(ids)
                if err.outcomes:
                    self._record_outcomes(batch, err.outcomes)
                raise
            self._record_outcomes(batch, outcomes)
            self.in_flight.difference_update(ids)
            return

    def _within_deadline(self, wait: float, why: str) -> float:
        """`wait`, unless waiting that long would end past the send's deadline: then the send stops."""
        if self.clock() + wait > self.deadline:
            raise ProviderUnavailable(f"{why}; the send's deadline ({format_duration(self.config.delivery.deadline)}"
                                      ") would pass before the provider takes more, so the send stops and the rest "
                                      "stays pending; run send again later")
        return wait

    def _record_outcomes(self, batch: Batch, outcomes: list[Outcome]) -> None:
        marks = []
        for envelope, outcome in zip(batch.envelopes, outcomes, strict=True):
            if outcome.status == "release":
                continue
            status = {"retry": "pending"}.get(outcome.status, outcome.status)
            marks.append(ledger.Mark(envelope.delivery_id, status, outcome.detail, outcome.message_id,
                                     outcome.after))
        self._record(marks)

    def _record(self, marks: list[ledger.Mark]) -> None:
        delivery = self.config.delivery
        recorded = ledger.mark(self.store, marks, max_attempts=delivery.max_attempts,
                               retry_delay=delivery.retry_delay)
        self.claimed.difference_update(m.delivery_id for m in recorded)
        self.progress(recorded)

    def _wait(self, seconds: float) -> None:
        """Wait before a retry. The heartbeat keeps the lease meanwhile; a stop request ends the wait at once
        (the default sleep is then the stop event's own wait), and the check after it stops the send."""
        self._check()
        self.fresh = False
        if seconds > 0:
            self.sleep(seconds)
        self._check()


def send_newsletter(store: Store, config: Config, newsletter: NewsletterConfig, provider: Provider,
                    posts: Sequence[Post], now: datetime, *, period: str | None = None,
                    planned_at: datetime | None = None, retry_unknown: bool = False,
                    starting: Callable[[ledger.IssueRecord, bool], Callable | None] | None = None,
                    finished: Callable[[SendReport], None] | None = None,
                    stop: threading.Event | None = None,
                    checks: Callable[[list[str]], None] | None = None) -> list[SendReport]:
    """Send the newsletter's issue for `period` (a manual send's by default), finishing any unfinished earlier
    issue of it first, so that a send cut short is never orphaned by the next one. A new issue is planned as
    of `planned_at` (default `now`; a scheduler passes its fire's time, so a catch-up carries what the fire
    would have carried). `starting(record, created)`
    is told of each issue before it is worked and may return a progress callback; `finished` gets each report;
    `checks` gets each issue's pre-send warnings before anything of it is sent (see Sender).
    """
    env = template_environment(config.templates)  # shared by the checks and every issue's variants
    problems = check_newsletters(config, posts, now, [newsletter], env)
    if problems:  # nothing is planned that could not be rendered
        raise ConfigError(problems)
    wanted = period or period_of(now, config, newsletter)
    reports: list[SendReport] = []
    worked: set[int] = set()
    while True:
        record, created = plan_or_resume(store, config, newsletter, posts, planned_at or now, wanted)
        if record.id in worked:
            raise NewsletterError(f"{newsletter.id}: issue {record.id} ({record.period}) is still unfinished "
                                  f"after a send; see `newsletter status {record.id}`")
        worked.add(record.id)
        progress = starting(record, created) if starting else None
        report = Sender(store, config, newsletter, provider, progress=progress, stop=stop, checks=checks,
                        env=env).run(record, now, retry_unknown=retry_unknown)
        report.created = created
        reports.append(report)
        if finished:
            finished(report)
        if record.period == wanted:
            return reports


def send_test_copy(store: Store, config: Config, newsletter: NewsletterConfig, posts: Sequence[Post],
                   now: datetime, provider: Provider, address: str) -> SendReport:
    """One copy of the full digest to `address`, with links that unsubscribe nobody; the ledger is untouched."""
    record = next_issue(store, config, newsletter, posts, now)
    report = SendReport(newsletter.id, record.period, mode="test", posts=len(record.posts))
    digest = Variants(None, config, newsletter, record).for_categories("") if record.posts else None
    if digest is None:
        report.skipped_issue = True
        return report
    unsubscribe, preferences = Tokens(store.secret()).urls(config.web_base_url, TEST_SUBSCRIBER, newsletter.id)
    batch = make_batch(config, newsletter, 0, f"{newsletter.id}-{record.period}-test", digest,
                       (Envelope(0, Recipient(address, "", unsubscribe, preferences)),), now)
    with provider:
        outcome = provider.send(batch)[0]
    report.counts[outcome.status] += 1
    if outcome.status != "sent":
        raise NewsletterError(f"the test copy to {address} was not sent: {outcome.detail}")
    return report


def dry_run(store: Store, config: Config, newsletter: NewsletterConfig, posts: Sequence[Post],
            now: datetime) -> SendReport:
    """Plan and render as a send would, and count who would get which variant; nothing is written or sent."""
    record = next_issue(store, config, newsletter, posts, now)
    report = SendReport(newsletter.id, record.period, record.id or None, record.number, mode="dry-run",
                        posts=len(record.posts), skipped_issue=not record.posts)
    if not record.posts:
        return report
    variants = Variants(None, config, newsletter, record)
    for stored, count in ledger.audience(store, newsletter.id):
        report.counts["would send" if variants.for_categories(stored) else "would skip"] += count
    report.variants = variants.rendered
    return report
