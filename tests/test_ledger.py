"""The ledger's promises where time, interruptions and other processes come in: dates on both databases in
every zone, a send cut short before midnight, unknowns only retried on the operator's word, someone who
leaves during a backoff, the lease under a stalled provider, Ctrl-C during a backoff."""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from newsletter import ledger
from newsletter.cli import cli
from newsletter.deliver import make_provider
from newsletter.deliver.base import Outcome, RetryBatch
from newsletter.deliver.outbox import OutboxProvider
from newsletter.deliver.run import ProviderUnavailable, Sender, send_newsletter
from newsletter.deliver.sendgrid import SendgridProvider
from newsletter.digest import Variants
from newsletter.plan import period_of, plan_issue, plan_or_resume
from newsletter.site import read_posts
from newsletter.store import deliveries, issues, open_store, subscriptions
from newsletter.subscribers import find, import_csv, set_status

from .conftest import ROOT, dead_owner, site_config
from .sendgrid_server import Fault, SendgridServer
from .test_sendgrid import KEY, configure

UTC = timezone.utc


def subscribe(env, count: int = 3, newsletters: str = "weekly") -> list[str]:
    addresses = [f"r{i:03d}@example.org" for i in range(count)]
    import_csv(env.store, env.config, io.StringIO("email,newsletters\n" + "".join(
        f"{a},{newsletters}\n" for a in addresses)), "t.csv", env.now)
    return addresses


def in_zone(config, zone: str):
    """The config with the site and every newsletter in `zone`."""
    tz = ZoneInfo(zone)
    return dataclasses.replace(config, site=dataclasses.replace(config.site, timezone=tz), newsletters={
        k: dataclasses.replace(n, timezone=tz) for k, n in config.newsletters.items()})


class Scripted(OutboxProvider):
    """The outbox, with something of the test's own run before each request."""

    def __init__(self, folder, before, batch_size: int = 100):
        super().__init__(folder, batch_size)
        self.before, self.calls = before, 0

    def send(self, batch):
        self.calls += 1
        outcome = self.before(self.calls, batch)
        return outcome if outcome is not None else super().send(batch)


def statuses(env, issue_id: int) -> dict[str, int]:
    return dict(ledger.counts(env.store, issue_id))


# 1. The issue's date is the day of the reference time in the site's zone, on SQLite as on PostgreSQL.
@pytest.mark.parametrize("zone, moment, day", [
    ("America/Los_Angeles", "2026-01-05T07:00:00-08:00", "5 January 2026"),   # west, winter
    ("America/Los_Angeles", "2026-07-05T07:00:00-07:00", "5 July 2026"),      # west, summer
    ("Pacific/Auckland", "2026-01-05T23:30:00+13:00", "5 January 2026"),      # east, summer
    ("Pacific/Auckland", "2026-07-05T23:30:00+12:00", "5 July 2026"),         # east, winter
])
def test_the_issue_date_survives_the_database_in_every_zone(env, zone, moment, day):
    config = in_zone(env.config, zone)
    now = datetime.fromisoformat(moment)
    subscribe(env, 1, "lab")
    newsletter = config.newsletter("lab")
    posts = [dataclasses.replace(p, date=p.date + (now - env.now)) for p in env.posts]  # the posts move along
    record, created = plan_or_resume(env.store, config, newsletter, posts, now)
    assert created and record.period == now.date().isoformat()
    again = ledger.get_issue(env.store, record.id)
    assert again.reference_time == now and again.reference_time.tzinfo is not None
    digest = Variants(env.store, config, newsletter, again).for_categories("")
    assert digest.subject == f"Harbourlight Lab Notes: {day}"
    assert f"Issue 1 \u00b7 {day}" in digest.html
    joined = find(env.store, "r000@example.org").created_at
    assert joined == env.now  # created_at as imported, not shifted by any zone


def test_the_period_is_the_day_in_the_newsletters_zone_not_in_utc(env):
    config = in_zone(env.config, "America/Los_Angeles")
    evening = datetime(2026, 1, 5, 20, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # 6 January in UTC
    assert period_of(evening, config, config.newsletter("weekly")) == "2026-01-05"


def test_a_12_hour_window_is_12_hours_across_the_spring_change(tmp_path):
    site = tmp_path / "posts"
    site.mkdir()
    for name, date in (("late", "2026-03-28T23:30:00Z"), ("earlier", "2026-03-28T22:30:00Z")):
        (site / f"{name}.md").write_text(f"---\ntitle: {name}\ndate: {date}\n---\nText.\n")
    config = in_zone(site_config(site), "Europe/London")
    now = datetime(2026, 3, 29, 12, 0, tzinfo=ZoneInfo("Europe/London"))  # BST since 01:00 UTC
    newsletter = dataclasses.replace(_bare_newsletter(config), window=timedelta(hours=12))
    plan = plan_issue(config, newsletter, read_posts(config.site, now).posts, now)
    # 12 h before 11:00 UTC is 23:00 UTC: the post at 23:30 is in, the one at 22:30 is out. On wall-clock time
    # the window would start at 00:00 local (00:00 UTC) and leave both out.
    assert [p.title for p in plan.selection.posts] == ["late"]


def _bare_newsletter(config):
    from newsletter.config import NewsletterConfig

    return NewsletterConfig("n", "N", "", (), (), 10, timedelta(days=7), "{{ newsletter.title }}", "digest",
                            config.site.timezone)


# 2. A send cut short before midnight is finished by the next send, before that day's issue is planned.
def test_a_send_cut_short_before_midnight_is_resumed_before_the_next_days_issue(env):
    addresses = subscribe(env, 4)
    newsletter = env.config.newsletter("weekly")
    evening = datetime(2026, 1, 5, 23, 50, tzinfo=UTC)
    with SendgridServer(api_key=KEY) as server:
        config = configure(env, server.url, max_attempts=1)
        server.queue(Fault("status", 500, "down"))
        with pytest.raises(ProviderUnavailable):
            send_newsletter(env.store, config, newsletter, SendgridProvider(config.delivery.sendgrid, api_key=KEY),
                            env.posts, evening)
        [first] = ledger.list_issues(env.store)
        assert (first["period"], first["status"], first["counts"]) == ("2026-01-05", "unfinished", {"pending": 4})
        status = CliRunner().invoke(cli, ["--config", str(ROOT / "newsletter.toml"), "status"],
                                    env={"NEWSLETTER_DATABASE_URL": config.database_url})
        assert f"{first['id']}\tweekly\t2026-01-05\t#1\tunfinished\tpending 4" in status.output

        after_midnight = datetime(2026, 1, 6, 0, 10, tzinfo=UTC)
        reports = send_newsletter(env.store, config, newsletter,
                                  SendgridProvider(config.delivery.sendgrid, api_key=KEY), env.posts, after_midnight)
    assert [(r.period, r.skipped_issue, dict(r.counts)) for r in reports] == [
        ("2026-01-05", False, {"sent": 4}), ("2026-01-06", True, {})]
    assert sorted(server.emails()) == addresses
    assert [(i["period"], i["status"]) for i in ledger.list_issues(env.store)] == [
        ("2026-01-06", "skipped"), ("2026-01-05", "done")]


# 4. --retry-unknown retries what was unknown before it started, nothing else.
def test_retry_unknown_leaves_newly_recovered_rows_and_failed_rows_alone(env):
    subscribe(env, 4)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)
    ids = sorted(r["delivery"] for r in ledger.open_deliveries(env.store, record.id))
    with env.store.engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.id == ids[0]).values(status="unknown"))
        conn.execute(deliveries.update().where(deliveries.c.id == ids[1]).values(status="failed",
                                                                                  last_error="refused"))
    ledger.acquire_lease(env.store, record.id, dead_owner())
    [claimed] = ledger.claim(env.store, record.id, "weekly", 1, "crashed")  # in flight when its process died
    assert claimed.delivery_id == ids[2]
    report = Sender(env.store, env.config, newsletter, make_provider(env.config)).run(record, env.now,
                                                                                     retry_unknown=True)
    assert (report.retried_unknown, report.recovered) == (1, 1)
    rows = {r["delivery"]: r["status"] for r in ledger.open_deliveries(env.store, record.id)}
    assert rows == {ids[1]: "failed", ids[2]: "unknown"}
    assert dict(report.counts) == {"sent": 2, "failed": 1, "unknown": 1}


# 6. Someone who leaves while a batch waits out a backoff is not sent to.
@pytest.mark.parametrize("how", ["unsubscribed", "subscription removed"])
def test_who_leaves_during_a_rate_limit_backoff_is_skipped(env, how):
    addresses = subscribe(env, 3)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)

    def leave(_seconds):
        if how == "unsubscribed":
            set_status(env.store, addresses[1], "unsubscribed", env.now)
        else:
            with env.store.engine.begin() as conn:
                subscriber = find(env.store, addresses[1]).id
                conn.execute(subscriptions.delete().where(subscriptions.c.subscriber_id == subscriber))

    with SendgridServer(api_key=KEY) as server:
        config = configure(env, server.url)
        server.queue(Fault("status", 429, "slow down", {"Retry-After": "90"}))
        report = Sender(env.store, config, newsletter, SendgridProvider(config.delivery.sendgrid, api_key=KEY),
                        sleep=leave).run(record, env.now)
    assert sorted(server.emails()) == [addresses[0], addresses[2]]
    reason = ("unsubscribed after the issue was planned" if how == "unsubscribed"
              else "no longer subscribed to this newsletter")
    assert {r["email"]: (r["status"], r["error"]) for r in ledger.open_deliveries(env.store, record.id)} == {
        addresses[1]: ("skipped", reason)}
    assert dict(report.counts) == {"sent": 2, "skipped": 1}


# 8. Ctrl-C during a backoff gives the batch back untried.
def test_ctrl_c_during_a_backoff_releases_the_batch_untried(env):
    addresses = subscribe(env, 3)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)

    def interrupted(_seconds):
        raise KeyboardInterrupt

    with SendgridServer(api_key=KEY) as server:
        config = configure(env, server.url)
        server.queue(Fault("status", 429, "slow down", {"Retry-After": "60"}))
        provider = SendgridProvider(config.delivery.sendgrid, api_key=KEY)
        with pytest.raises(KeyboardInterrupt):
            Sender(env.store, config, newsletter, provider, sleep=interrupted).run(record, env.now)
        assert statuses(env, record.id) == {"pending": 3}
        with env.store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.max(deliveries.c.attempts))).scalar_one() == 0
        report = Sender(env.store, config, newsletter, provider).run(record, env.now)
    assert (report.recovered, dict(report.counts)) == (0, {"sent": 3})
    assert sorted(server.emails()) == addresses


def test_a_provider_crash_mid_request_leaves_only_that_request_in_flight(env):
    subscribe(env, 4)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)

    def crash_on_second(call, batch):
        if call == 2:
            raise RuntimeError("the connection vanished mid-request")

    provider = Scripted(env.tmp / "outbox", crash_on_second, batch_size=1)
    with pytest.raises(RuntimeError):
        Sender(env.store, env.config, newsletter, provider).run(record, env.now)
    # the first went, the second is in flight (the provider may have it), the rest were never handed over
    assert statuses(env, record.id) == {"sent": 1, "sending": 1, "pending": 2}


# 7. The lease: a holder's liveness, and a stalled provider call that outlasts the lease.
def test_only_a_gone_process_of_this_host_and_pid_namespace_counts_as_dead():
    mine = ledger.lease_owner()
    label, namespace, started, _ = mine.split("|")
    assert ledger._owner_is_dead(dead_owner())
    assert not ledger._owner_is_dead(mine)
    # the same host name and a pid that is not running here, in another container: alive until its lease ends
    assert not ledger._owner_is_dead(f"{label.rsplit(':', 1)[0]}:999999999|pid:[1]|{started}|x")
    # this pid, but a process that started at another time: the pid was reused, its owner is gone
    assert ledger._owner_is_dead(f"{label}|{namespace}|1|x")


def _stalled_sender(url, outbox, config, posts, inside, release):
    """In a process of its own: send the issue through an outbox whose first request stalls until released."""
    store = open_store(url)

    def stall(call, batch):
        if call == 1:
            open(inside, "w").close()
            while not os.path.exists(release):
                time.sleep(0.05)

    newsletter = config.newsletter("weekly")
    record, _ = plan_or_resume(store, config, newsletter, posts, config_now())
    Sender(store, config, newsletter, Scripted(outbox, stall, batch_size=2)).run(record, config_now())


def config_now():
    return datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def test_a_sender_stalled_past_the_lease_keeps_it_and_nothing_becomes_unknown(env, tmp_path, monkeypatch):
    monkeypatch.setattr(ledger, "LEASE_SECONDS", 1.0)  # inherited by the forked sender: heartbeat every 0.25 s
    addresses = subscribe(env, 4)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)
    inside, release = tmp_path / "inside", tmp_path / "release"
    env.store.engine.dispose()
    child = multiprocessing.get_context("fork").Process(
        target=_stalled_sender, args=(env.config.database_url, env.tmp / "outbox", env.config, env.posts, inside,
                                      release))
    child.start()
    try:
        deadline = time.monotonic() + 30
        while not inside.exists():
            assert time.monotonic() < deadline and child.is_alive(), "the sender never reached its first request"
            time.sleep(0.05)
        time.sleep(3.0)  # three lease periods inside one provider call
        with pytest.raises(ledger.SendBusy, match=f"issue {record.id} is being sent by"):
            Sender(env.store, env.config, newsletter, make_provider(env.config)).run(record, env.now)
        assert statuses(env, record.id) == {"sending": 2, "pending": 2}
    finally:
        release.touch()
        child.join(30)
    assert child.exitcode == 0
    assert statuses(env, record.id) == {"sent": 4}
    assert sorted(p.name.split("-", 1)[1][:-4] for p in (env.tmp / "outbox").rglob("*.eml")) == addresses


def test_a_sender_whose_lease_was_taken_stops_before_its_next_request(env, monkeypatch):
    monkeypatch.setattr(ledger, "LEASE_SECONDS", 0.4)
    subscribe(env, 4)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)

    def taken(call, batch):
        if call == 1:
            with env.store.engine.begin() as conn:
                conn.execute(issues.update().values(lease_owner="elsewhere:1|x|1|y"))
            time.sleep(0.5)  # the heartbeat finds the lease gone

    with pytest.raises(ledger.LeaseLost, match=f"issue {record.id}: another process took over the send"):
        Sender(env.store, env.config, newsletter, Scripted(env.tmp / "outbox", taken, batch_size=2)).run(
            record, env.now)
    assert statuses(env, record.id) == {"sent": 2, "pending": 2}


# Retries: a per-delivery wait is honoured, and the sender waits for a due retry before finishing.
def test_a_retry_waits_as_long_as_the_provider_said_and_then_goes_out(env):
    subscribe(env, 2)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)
    waits = []

    def first_is_deferred(call, batch):
        if call == 1:
            return [Outcome.retry("greylisted", after=120)] + [Outcome.sent("m")] * (len(batch.envelopes) - 1)

    def time_passes(seconds):
        waits.append(seconds)
        with env.store.engine.begin() as conn:
            conn.execute(deliveries.update().values(next_attempt_at=datetime.now(UTC)))

    report = Sender(env.store, env.config, newsletter, Scripted(env.tmp / "outbox", first_is_deferred),
                    sleep=time_passes).run(record, env.now)
    assert dict(report.counts) == {"sent": 2}
    assert len(waits) == 1 and 110 <= waits[0] <= 120


def test_mark_takes_the_providers_wait_without_jitter_and_doubles_its_own(env):
    subscribe(env, 2)
    record, _ = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now)
    first, second = ledger.claim(env.store, record.id, "weekly", 2, "t")
    before = datetime.now(UTC)
    ledger.mark(env.store, [ledger.Mark(first.delivery_id, "pending", "later", retry_after=300),
                            ledger.Mark(second.delivery_id, "pending", "later")], max_attempts=5, retry_delay=10)
    after = datetime.now(UTC)
    with env.store.engine.connect() as conn:
        due = dict(conn.execute(sa.select(deliveries.c.id, deliveries.c.next_attempt_at)).all())
    assert before + timedelta(seconds=300) <= due[first.delivery_id] <= after + timedelta(seconds=300)
    assert before + timedelta(seconds=10) <= due[second.delivery_id] <= after + timedelta(seconds=12.5)


# Claims: the status guard, on SQLite, where the claim's SELECT runs before its transaction takes the lock.
def test_a_row_another_claimer_took_between_select_and_update_is_not_claimed_twice(tmp_path, env):
    if env.store.dialect != "sqlite":
        pytest.skip("PostgreSQL locks the chosen rows FOR UPDATE SKIP LOCKED; nobody can get in between")
    subscribe(env, 3)
    record, _ = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now)
    other = open_store(env.config.database_url)
    fired = []

    def someone_else_first(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE DELIVERIES") and not fired:
            fired.append(True)
            with other.engine.begin() as their:
                their.execute(sa.text("UPDATE deliveries SET status = 'sending', claim = 'theirs' "
                                      "WHERE id = (SELECT min(id) FROM deliveries)"))

    sa.event.listen(env.store.engine, "before_cursor_execute", someone_else_first)
    try:
        mine = ledger.claim(env.store, record.id, "weekly", 3, "mine")
    finally:
        sa.event.remove(env.store.engine, "before_cursor_execute", someone_else_first)
    assert fired and len(mine) == 2
    with env.store.engine.connect() as conn:
        claims = sorted(conn.execute(sa.select(deliveries.c.claim)).scalars().all())
    assert claims == ["mine", "mine", "theirs"]
    other.engine.dispose()


# Variants: one stored at the same moment by another process is the frozen one.
def test_a_variant_another_process_stored_first_is_the_one_used(env, monkeypatch):
    newsletter = env.config.newsletter("weekly")
    subscribe(env, 1)
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)
    ours = Variants(env.store, env.config, newsletter, record).for_categories("")
    with env.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE variants SET subject = 'stored by the other process'"))
    real_load = ledger.load_variant
    calls = []

    def raced(store, issue_id, key):  # the first look finds nothing: the other process stores it just after
        calls.append(key)
        return None if len(calls) == 1 else real_load(store, issue_id, key)

    monkeypatch.setattr(ledger, "load_variant", raced)
    digest = Variants(env.store, env.config, newsletter, record).for_categories("")
    assert ours.subject != "stored by the other process"
    assert digest.subject == "stored by the other process" and len(calls) == 2


# Several processes at once.
def _plan_in_process(url, config, posts, barrier, results):
    """Plan in a process of its own; both processes meet after finding no issue and before recording one."""
    from newsletter import plan

    store = open_store(url)
    choose = plan.planned_posts

    def after_looking(*args):
        barrier.wait(30)
        return choose(*args)

    plan.planned_posts = after_looking
    record, created = plan_or_resume(store, config, config.newsletter("weekly"), posts, config_now())
    results.put((record.id, created))


def test_two_processes_planning_the_same_issue_at_once_make_one_issue(env):
    subscribe(env, 5)
    env.store.engine.dispose()
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_plan_in_process, args=(env.config.database_url, env.config, env.posts,
                                                              barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    found = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert [created for _, created in found] == [False, True]
    assert found[0][0] == found[1][0]
    with env.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(issues)).scalar_one() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one() == 5


def _send_in_process(url, config, posts, barrier, results):
    store = open_store(url)
    barrier.wait()
    try:
        reports = send_newsletter(store, config, config.newsletter("weekly"), make_provider(config), posts,
                                  config_now())
        results.put(("done", sum(r.counts.get("sent", 0) for r in reports)))
    except ledger.SendBusy:
        results.put(("busy", 0))


def test_two_senders_on_one_issue_send_each_copy_once(env):
    addresses = subscribe(env, 300)
    config = dataclasses.replace(env.config, delivery=dataclasses.replace(env.config.delivery, batch_size=10))
    env.store.engine.dispose()
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_send_in_process, args=(config.database_url, config, env.posts, barrier,
                                                              results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    # whichever way they met (one busy, or one after the other), every copy went once
    assert sorted(state for state, _ in outcomes) in (["busy", "done"], ["done", "done"])
    files = sorted(p.name.split("-", 1)[1][:-4] for p in (env.tmp / "outbox").rglob("*.eml"))
    assert files == addresses
    with env.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.max(deliveries.c.attempts))).scalar_one() == 1


def test_retry_batch_past_max_attempts_stops_with_everything_pending(env):
    subscribe(env, 2)
    newsletter = env.config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, env.config, newsletter, env.posts, env.now)

    def unavailable(call, batch):
        raise RetryBatch("unavailable")

    with pytest.raises(ProviderUnavailable, match="the rest stays pending"):
        Sender(env.store, env.config, newsletter, Scripted(env.tmp / "outbox", unavailable),
               sleep=lambda s: None).run(record, env.now)
    assert statuses(env, record.id) == {"pending": 2}
