"""The scheduler's rules, driven with a controllable clock: Scheduler.tick(now) decides and sends in line, so no
test sleeps. Fire times, one issue per fire, catch-up and coalescing, pause and resume, one-off sends, a schedule
changed while running, daylight saving time, a long outage, a late post, and a send that fails."""

from __future__ import annotations

import dataclasses
import io
import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from newsletter import ledger, schedule
from newsletter.config import load_config
from newsletter.daemon import Scheduler
from newsletter.deliver import make_provider
from newsletter.deliver.run import send_newsletter
from newsletter.plan import period_of
from newsletter.site import read_site
from newsletter.store import open_store
from newsletter.subscribers import import_csv

UTC = timezone.utc
MONDAY = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # Europe/London is on UTC in January


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def write_post(folder: Path, name: str, date: str, title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(f"---\ntitle: \"{title}\"\ndate: {date}\ncategories: [News]\n---\n\n{title}.\n")


@pytest.fixture
def site(tmp_path, request):
    """A folder of posts, one a day from 8 December 2025 to 4 January 2026 at noon, a newsletter.toml with a
    weekly newsletter (Mondays 08:00 London), three subscribers and a database of its own."""
    url = getattr(request, "param", f"sqlite:///{tmp_path}/schedule.db")
    posts = tmp_path / "posts"
    for day in range(28):
        date = datetime(2025, 12, 8, 12, tzinfo=UTC) + timedelta(days=day)
        write_post(posts, f"{date:%Y-%m-%d}-day-{day:02d}.md", date.strftime("%Y-%m-%d %H:%M:%S +00:00"),
                   f"Day {day:02d}")
    (tmp_path / "newsletter.toml").write_text(
        '[site]\nsource = "posts"\ntitle = "Dock"\nurl = "https://dock.example.org"\ntimezone = "Europe/London"\n'
        '[newsletters.weekly]\nschedule = "0 8 * * mon"\nmax_posts = 50\n'
        f'[delivery]\nfrom = "Dock <news@dock.example.org>"\noutbox = "outbox"\n[database]\nurl = "{url}"\n')
    config = load_config(tmp_path / "newsletter.toml")
    config = dataclasses.replace(config, database_url=url)
    store = open_store(url)
    import_csv(store, config, io.StringIO("email,newsletters\na@example.org,weekly\nb@example.org,weekly\n"
                                          "c@example.org,weekly\n"), "t.csv", MONDAY - timedelta(days=30))
    yield Site(tmp_path, config, store)
    store.engine.dispose()


@dataclasses.dataclass
class Site:
    folder: Path
    config: object
    store: object

    def newsletter(self, **changes) -> None:
        """Change the weekly newsletter's settings, as an edit of newsletter.toml would."""
        weekly = dataclasses.replace(self.config.newsletters["weekly"], **changes)
        self.config = dataclasses.replace(self.config, newsletters={**self.config.newsletters, "weekly": weekly})

    def tick(self, now: datetime):
        return Scheduler(self.store, self.config).tick(now)

    def fires(self) -> list[tuple[str, str, str]]:
        return [(f.fire_time.isoformat(), f.status, f.period) for f in reversed(schedule.list_fires(self.store))]

    def issues(self) -> list[tuple[str, str, dict]]:
        return [(i["period"], i["status"], i["counts"]) for i in reversed(ledger.list_issues(self.store))]

    def issue_posts(self, period: str) -> list[str]:
        record = ledger.find_issue(self.store, "weekly", period)
        return [p.title for p in record.posts]

    def copies(self) -> Counter:
        """How many .eml files each address got, over every issue."""
        return Counter(p.name.split("-", 1)[1][:-4] for p in (self.folder / "outbox").rglob("*.eml"))


# --- fire times and daylight saving time ------------------------------------------------------------------


def fires(expression: str, zone: str, start: str, end: str) -> list[str]:
    newsletter = dataclasses.replace(_bare(), schedule=(expression,), timezone=ZoneInfo(zone))
    return [f.astimezone(UTC).strftime("%m-%d %H:%M") for f in schedule.fires_between(newsletter, at(start), at(end))]


def _bare():
    from newsletter.config import NewsletterConfig

    return NewsletterConfig("x", "X", "", (), (), 10, timedelta(days=7), "s", "digest")


@pytest.mark.parametrize("expression, zone, start, end, expected", [
    # London springs forward at 01:00 GMT on 29 March: 01:30 does not exist, so it fires once at 02:00 BST
    ("30 1 * * *", "Europe/London", "2026-03-28T00:00+00:00", "2026-03-31T00:00+00:00",
     ["03-28 01:30", "03-29 01:00", "03-30 00:30"]),
    # London falls back at 02:00 BST on 25 October: 01:30 happens twice and fires once, at the first
    ("30 1 * * *", "Europe/London", "2026-10-24T00:00+00:00", "2026-10-27T00:00+00:00",
     ["10-24 00:30", "10-25 00:30", "10-26 01:30"]),
    # New York springs forward at 02:00 EST on 8 March: 02:30 fires once at 03:00 EDT
    ("30 2 * * *", "America/New_York", "2026-03-07T00:00+00:00", "2026-03-10T00:00+00:00",
     ["03-07 07:30", "03-08 07:00", "03-09 06:30"]),
    # New York falls back at 02:00 EDT on 1 November: 01:00 and 01:30 happen twice and fire once each
    ("0,30 1 * * *", "America/New_York", "2026-10-31T00:00+00:00", "2026-11-03T00:00+00:00",
     ["10-31 05:00", "10-31 05:30", "11-01 05:00", "11-01 05:30", "11-02 06:00", "11-02 06:30"]),
    # an hourly schedule across London's spring change: the missing hour is not made up twice
    ("0 * * * *", "Europe/London", "2026-03-28T23:30+00:00", "2026-03-29T03:30+00:00",
     ["03-29 00:00", "03-29 01:00", "03-29 02:00", "03-29 03:00"]),
])
def test_a_newsletter_fires_at_its_wall_clock_time_across_daylight_saving_changes(expression, zone, start, end,
                                                                                    expected):
    assert fires(expression, zone, start, end) == expected


def test_a_daily_newsletter_sends_once_on_the_night_the_clocks_go_back(site):
    site.newsletter(schedule=("30 1 * * *",), timezone=ZoneInfo("America/New_York"))
    moment = at("2026-11-01T04:00:00+00:00")  # 00:00 EDT
    site.tick(moment)
    while moment < at("2026-11-01T08:00:00+00:00"):  # ticks every 10 minutes through both 01:30s
        moment += timedelta(minutes=10)
        site.tick(moment)
    assert site.fires() == [("2026-11-01T05:30:00+00:00", "sent", "2026-11-01")]
    assert len(site.issues()) == 1


# --- periods: one issue per fire --------------------------------------------------------------------------


def test_a_fire_and_a_manual_send_on_the_same_day_share_one_period(site):
    weekly = site.config.newsletters["weekly"]
    assert schedule.fire_period(weekly, MONDAY) == "2026-01-05"
    assert period_of(at("2026-01-05T06:00+00:00"), site.config, weekly) == "2026-01-05"
    assert period_of(at("2026-01-05T23:59+00:00"), site.config, weekly) == "2026-01-05"


def test_a_day_with_two_fires_has_two_periods_and_a_manual_send_takes_the_latest_fire_before_it(site):
    site.newsletter(schedule=("0 8 * * mon", "0 18 * * mon"))
    weekly = site.config.newsletters["weekly"]
    assert schedule.fire_period(weekly, MONDAY) == "2026-01-05T08:00"
    assert schedule.fire_period(weekly, MONDAY.replace(hour=18)) == "2026-01-05T18:00"
    assert [period_of(at(f"2026-01-05T{hour}+00:00"), site.config, weekly) for hour in ("07:00", "12:00", "19:00")] \
        == ["2026-01-05T08:00", "2026-01-05T08:00", "2026-01-05T18:00"]
    assert period_of(at("2026-01-06T12:00+00:00"), site.config, weekly) == "2026-01-06"


def test_a_manual_send_then_the_fire_the_same_day_send_one_issue_once(site):
    config, weekly = site.config, site.config.newsletters["weekly"]
    before = at("2026-01-05T07:00+00:00")
    send_newsletter(site.store, config, weekly, make_provider(config), read_site(config, before).posts, before)
    site.tick(before)
    site.tick(MONDAY + timedelta(seconds=1))
    assert site.fires() == [("2026-01-05T08:00:00+00:00", "sent", "2026-01-05")]
    assert site.issues() == [("2026-01-05", "done", {"sent": 3})]
    assert site.copies() == {"a@example.org": 1, "b@example.org": 1, "c@example.org": 1}


def test_a_double_tick_and_a_second_scheduler_on_the_database_make_one_issue(site):
    site.tick(MONDAY - timedelta(hours=1))
    other = Scheduler(open_store(site.config.database_url), site.config)
    site.tick(MONDAY)
    other.tick(MONDAY)
    site.tick(MONDAY)
    assert site.fires() == [("2026-01-05T08:00:00+00:00", "sent", "2026-01-05")]
    assert site.issues() == [("2026-01-05", "done", {"sent": 3})]


def test_the_first_start_does_not_send_fires_from_before_it(site):
    site.tick(MONDAY + timedelta(minutes=5))
    assert site.fires() == [] and site.issues() == []
    site.tick(MONDAY + timedelta(days=7))
    assert [f[:2] for f in site.fires()] == [("2026-01-12T08:00:00+00:00", "sent")]


# --- catch-up, missed fires, coalescing ---------------------------------------------------------------------


def test_a_fire_missed_within_catch_up_is_sent_at_start(site):
    site.tick(MONDAY - timedelta(days=1))  # a daemon ran on Sunday, then nothing until Monday 13:59
    site.tick(MONDAY + timedelta(hours=5, minutes=59))
    assert site.fires() == [("2026-01-05T08:00:00+00:00", "sent", "2026-01-05")]
    assert site.issues() == [("2026-01-05", "done", {"sent": 3})]


def test_a_fire_missed_beyond_catch_up_is_recorded_missed_and_shown(site, monkeypatch):
    from click.testing import CliRunner

    from newsletter.cli import cli

    site.tick(MONDAY - timedelta(days=1))
    site.tick(MONDAY + timedelta(hours=6, minutes=1))
    assert site.fires() == [("2026-01-05T08:00:00+00:00", "missed", "2026-01-05")]
    assert site.issues() == []
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", site.config.database_url)
    runner = CliRunner()
    shown = runner.invoke(cli, ["--config", str(site.folder / "newsletter.toml"), "--now", "2026-01-05T15:00:00Z",
                                "schedule"])
    assert shown.exit_code == 0, shown.output
    assert ("  missed 2026-01-05T08:00:00+00:00 (2026-01-05): no daemon was running within catch_up (6h) of it\n"
            in shown.output)
    assert "  next 2026-01-12T08:00:00+00:00 (2026-01-12T08:00:00+00:00)\n" in shown.output
    status = runner.invoke(cli, ["--config", str(site.folder / "newsletter.toml"), "status"])
    assert status.output == "missed fire\tweekly\t2026-01-05T08:00:00+00:00\t2026-01-05\n"


def test_several_missed_fires_within_catch_up_coalesce_into_one_issue(site):
    site.newsletter(schedule=("0 * * * *",), catch_up=timedelta(hours=3))
    site.tick(MONDAY - timedelta(minutes=1))
    site.tick(MONDAY)
    site.tick(MONDAY + timedelta(hours=5, minutes=30))  # 09:00 to 13:00 missed; 11:00 to 13:00 within 3 h
    assert [f[1] for f in site.fires()] == ["sent", "missed", "missed", "coalesced", "coalesced", "sent"]
    assert site.fires()[-1] == ("2026-01-05T13:00:00+00:00", "sent", "2026-01-05T13:00")
    assert [i[0] for i in site.issues()] == ["2026-01-05T08:00", "2026-01-05T13:00"]


# --- pause, resume, one-off sends, a schedule changed while running ------------------------------------------


def test_a_paused_newsletter_records_its_fires_and_does_not_catch_them_up_on_resume(site):
    site.tick(MONDAY - timedelta(days=1))
    assert schedule.set_paused(site.store, site.config, "weekly", True, MONDAY - timedelta(hours=1))
    site.tick(MONDAY + timedelta(minutes=1))
    assert site.fires() == [("2026-01-05T08:00:00+00:00", "paused", "2026-01-05")]
    assert schedule.set_paused(site.store, site.config, "weekly", False, MONDAY + timedelta(minutes=2))
    site.tick(MONDAY + timedelta(minutes=3))
    assert site.issues() == []
    site.tick(MONDAY + timedelta(days=7))
    assert [f[1] for f in site.fires()] == ["paused", "sent"]
    assert [i[0] for i in site.issues()] == ["2026-01-12"]


def test_a_one_off_is_sent_at_its_time_once_and_a_cancelled_one_never(site):
    site.newsletter(schedule=())
    site.tick(at("2026-01-07T09:00:00+00:00"))
    first = schedule.add_one_off(site.store, site.config, "weekly", at("2026-01-07T10:00:03+00:00"),
                                 at("2026-01-07T10:00:00+00:00"))
    second = schedule.add_one_off(site.store, site.config, "weekly", at("2026-01-08T10:00:00+00:00"),
                                  at("2026-01-07T10:00:00+00:00"))
    site.tick(at("2026-01-07T10:00:02+00:00"))
    assert site.issues() == []
    site.tick(at("2026-01-07T10:00:04+00:00"))
    site.tick(at("2026-01-07T10:00:09+00:00"))
    assert schedule.cancel_one_off(site.store, second).newsletter == "weekly"
    site.tick(at("2026-01-08T10:00:01+00:00"))
    assert site.fires() == [("2026-01-07T10:00:03+00:00", "sent", "2026-01-07"),
                            ("2026-01-08T10:00:00+00:00", "cancelled", "2026-01-08")]
    assert site.issues() == [("2026-01-07", "done", {"sent": 3})]
    with pytest.raises(schedule.ScheduleError, match=f"one-off {first} of weekly cannot be cancelled: it is sent"):
        schedule.cancel_one_off(site.store, first)


def test_a_changed_schedule_is_used_from_the_next_tick_on(site):
    site.tick(MONDAY - timedelta(hours=2))
    site.newsletter(schedule=("30 6 * * mon",))  # 06:30, after the last tick: fires on the next one
    site.tick(MONDAY - timedelta(hours=1))
    site.tick(MONDAY + timedelta(hours=1))  # the old 08:00 fire is gone
    assert site.fires() == [("2026-01-05T06:30:00+00:00", "sent", "2026-01-05")]


# --- what an issue carries --------------------------------------------------------------------------------


def test_after_a_three_week_outage_the_next_issue_carries_the_three_weeks_posts(site):
    site.tick(at("2025-12-15T07:00:00+00:00"))
    site.tick(at("2025-12-15T08:00:00+00:00"))  # issue 1: the week to Monday 15 December
    assert site.issue_posts("2025-12-15")[-1] == "Day 00" and len(site.issue_posts("2025-12-15")) == 7
    site.tick(at("2026-01-05T08:00:05+00:00"))  # the daemon was down for three weeks
    assert [f[1] for f in site.fires()] == ["sent", "missed", "missed", "sent"]
    carried = site.issue_posts("2026-01-05")
    assert len(carried) == 21 and carried[0] == "Day 27" and carried[-1] == "Day 07"


def test_over_max_posts_the_newest_are_carried_and_the_digest_says_how_many_more(site):
    site.newsletter(max_posts=5)
    site.tick(at("2026-01-05T07:00:00+00:00"))
    site.tick(MONDAY)
    record = ledger.find_issue(site.store, "weekly", "2026-01-05")
    assert [p.title for p in record.posts] == ["Day 27", "Day 26", "Day 25", "Day 24", "Day 23"]
    assert record.more == 2
    sent = next((site.folder / "outbox").rglob("*.eml")).read_bytes()
    assert b"2 more new posts on Dock:\r\nhttps://dock.example.org/" in sent


def test_a_late_post_with_an_earlier_date_goes_out_in_the_next_issue(site):
    site.tick(at("2026-01-05T07:00:00+00:00"))
    site.tick(MONDAY)
    assert "Late news" not in site.issue_posts("2026-01-05")
    # published on Wednesday, dated the Saturday before the last issue
    write_post(site.folder / "posts", "2026-01-03-late-news.md", "2026-01-03 09:00:00 +00:00", "Late news")
    site.tick(at("2026-01-12T08:00:01+00:00"))
    assert site.issue_posts("2026-01-12") == ["Late news"]


# --- failures ----------------------------------------------------------------------------------------------


def test_a_failed_send_is_logged_and_the_next_fire_resumes_it_first(site, caplog):
    good = site.config.delivery.outbox
    (site.folder / "blocked").write_text("a file where the outbox folder should be")
    site.config = dataclasses.replace(site.config, delivery=dataclasses.replace(
        site.config.delivery, outbox=site.folder / "blocked"))
    site.tick(MONDAY - timedelta(minutes=1))
    site.tick(MONDAY)
    assert site.fires() == [("2026-01-05T08:00:00+00:00", "failed", "2026-01-05")]
    assert site.issues() == [("2026-01-05", "unfinished", {"pending": 3})]
    assert "send failed: outbox: cannot write" in caplog.text
    site.config = dataclasses.replace(site.config, delivery=dataclasses.replace(site.config.delivery, outbox=good))
    site.tick(MONDAY + timedelta(days=7))
    assert [f[1] for f in site.fires()] == ["sent", "sent"]
    assert [(i[0], i[1]) for i in site.issues()] == [("2026-01-05", "done"), ("2026-01-12", "skipped")]
    assert site.copies() == {"a@example.org": 1, "b@example.org": 1, "c@example.org": 1}


def test_one_off_times_in_the_past_and_unknown_ids_are_refused_with_how_to_fix(site):
    with pytest.raises(schedule.ScheduleError, match="more than catch_up \\(6h\\) before now .* send it now with "
                                                     "`newsletter send weekly`"):
        schedule.add_one_off(site.store, site.config, "weekly", MONDAY - timedelta(hours=7), MONDAY)
    with pytest.raises(Exception, match="no one-off send 99; `newsletter schedule` lists them"):
        schedule.cancel_one_off(site.store, 99)
    with sa.create_engine(site.config.database_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schedule_fires")).scalar_one() == 0


# --- the daemon lease ----------------------------------------------------------------------------------------


def test_a_standby_takes_the_lease_only_when_the_heartbeat_stops_for_a_lease_by_its_own_clock(site):
    active = schedule.DaemonLease(site.store, 10, owner="host-a:100|ns|1|aa")
    standby = schedule.DaemonLease(site.store, 10, owner="host-b:200|ns|1|bb")
    assert active.try_acquire(monotonic=0.0)
    assert not standby.try_acquire(monotonic=0.0)
    assert active.renew()
    assert not standby.try_acquire(monotonic=100.0)  # the heartbeat moved: a live daemon, however long ago seen
    assert not standby.try_acquire(monotonic=110.5)  # silent for 10.5 s: not yet a lease and its margin
    assert standby.holder().owner == "host-a:100|ns|1|aa"
    assert standby.try_acquire(monotonic=111.5)
    assert standby.holder().owner == "host-b:200|ns|1|bb"
    assert not active.renew()  # the old holder learns it lost the lease, and stops sending


def test_a_daemon_of_this_host_that_is_gone_is_taken_over_at_once(site):
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = schedule.DaemonLease(site.store, 60, owner=f"{socket.gethostname()}:{gone.pid}|"
                                                      f"{ledger._pid_namespace()}||dead")
    assert dead.try_acquire(monotonic=0.0)
    assert schedule.DaemonLease(site.store, 60).try_acquire(monotonic=0.0)


# --- configuration --------------------------------------------------------------------------------------------


def test_bad_schedule_keys_fail_at_load_with_the_file_key_and_reason(tmp_path):
    from click.testing import CliRunner

    from newsletter.cli import cli

    (tmp_path / "posts").mkdir()
    toml = tmp_path / "newsletter.toml"
    toml.write_text('[site]\nsource = "posts"\n'
                    '[newsletters.a]\nschedule = ["0 8 * * mon", "0 8 * * funday", "0 8 * *"]\n'
                    'timezone = "Europe/Londres"\ncatch_up = "soon"\n'
                    '[newsletters.b]\nschedule = 8\nmax_lookback = "1d"\n')
    result = CliRunner().invoke(cli, ["--config", str(toml), "check"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: the configuration cannot be used:",
        f"  {toml}: newsletters.a.timezone: 'Europe/Londres' is not an IANA time zone name, like Europe/Paris or UTC",
        f"  {toml}: newsletters.a.catch_up: 'soon' is not a duration; write a positive number and a unit, like 7d, "
        "2w or 12h",
        f"  {toml}: newsletters.a.schedule: '0 8 * * funday' is not a cron expression: Invalid weekday name "
        "\"funday\"",
        f"  {toml}: newsletters.a.schedule: '0 8 * *' must have 5 fields: minute hour day month day-of-week, like "
        "\"0 8 * * mon\"",
        f"  {toml}: newsletters.b.max_lookback: must be at least the window (7d)",
        f"  {toml}: newsletters.b.schedule: must be a cron expression like \"0 8 * * mon\", or a list of them, not 8",
    ]


def test_the_operator_commands_write_the_database_and_say_what_they_did(site, monkeypatch):
    from click.testing import CliRunner

    from newsletter.cli import cli

    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", site.config.database_url)

    def run(*args):
        return CliRunner().invoke(cli, ["--config", str(site.folder / "newsletter.toml"), "--now",
                                        "2026-01-05T07:00:00+00:00", *args])

    assert run("schedule", "pause", "weekly").output == "weekly: paused\n"
    assert run("schedule", "pause", "weekly").output == "weekly: already paused\n"
    added = run("schedule", "at", "weekly", "2026-01-05T09:30")
    assert added.stdout == ("one-off 1: weekly at 2026-01-05T09:30:00+00:00; a running `newsletter run` sends it "
                            "then (cancel with `newsletter schedule cancel 1`)\n")
    assert added.stderr == ("warning: weekly is paused: the one-off will be recorded as paused unless you "
                            "`newsletter schedule resume weekly` first\n")
    assert run("schedule", "resume", "weekly").output == "weekly: resumed\n"
    shown = json.loads(run("schedule", "--json").stdout)["newsletters"][0]
    assert (shown["state"], [o["fire_time"] for o in shown["one_offs"]]) == ("active",
                                                                             ["2026-01-05T09:30:00+00:00"])
    assert run("schedule", "cancel", "1").output == "one-off 1 (weekly at 2026-01-05T09:30:00+00:00) cancelled\n"
    again = run("schedule", "cancel", "1")
    assert (again.exit_code, again.output) == (1, "error: one-off 1 of weekly cannot be cancelled: it is cancelled "
                                                  "already\n")
    unknown = run("schedule", "pause", "daily")
    assert unknown.exit_code == 2 and "has no newsletter 'daily' under [newsletters]" in unknown.output
