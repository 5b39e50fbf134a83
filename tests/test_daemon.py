"""`newsletter run` as real processes: a one-off sent on time, two daemons on one database, kill -9 of the
active one mid-send, a restart mid-send, SIGTERM mid-send, a second signal, newsletter.toml edited while it
runs. Each daemon's clock starts at a fixed --now and runs at real speed, so no test depends on the date."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from newsletter.config import load_config
from newsletter.store import open_store
from newsletter.subscribers import import_csv

from .conftest import FIXED_NOW, ROOT
from .smtp_server import SmtpServer, SmtpSink

START = "2026-01-05T07:00:00+00:00"


class SlowSink(SmtpSink):
    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


class Daemons:
    """A newsletter folder on one database, and the `newsletter` processes started on it."""

    def __init__(self, tmp_path: Path, db_url: str, delivery: str = ""):
        self.folder = tmp_path / "newsletter"
        self.folder.mkdir()
        self.db_url = db_url
        text = (ROOT / "newsletter.toml").read_text().replace('source = "site"', f'source = "{ROOT / "site"}"')
        self.toml = self.folder / "newsletter.toml"
        self.toml.write_text(text.replace("[delivery]\n", f"[delivery]\n{delivery}\n")
                             + f'\n[render]\ntemplates = "{ROOT / "templates"}"\n')
        self.env = {**os.environ, "NEWSLETTER_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
        self.store = open_store(db_url)
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def subscribe(self, count: int) -> list[str]:
        addresses = [f"reader{i:04d}@example.org" for i in range(count)]
        import_csv(self.store, load_config(self.toml), io.StringIO(
            "email,newsletters\n" + "".join(f"{a},weekly\n" for a in addresses)), "t.csv", FIXED_NOW)
        return addresses

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "newsletter", "--now", START, *args], cwd=self.folder,
                              env=self.env, capture_output=True, text=True, timeout=60)

    def start(self, *args: str, now: str = START) -> subprocess.Popen:
        log = self.folder / f"daemon-{len(self.processes)}.log"
        process = subprocess.Popen([sys.executable, "-m", "newsletter", "--now", now, "run", *args],
                                   cwd=self.folder, env=self.env, stdout=subprocess.DEVNULL,
                                   stderr=open(log, "w"))  # noqa: SIM115 - closed with the process
        self.processes.append((process, log))
        return process

    def log(self, process: subprocess.Popen) -> str:
        return next(log for p, log in self.processes if p is process).read_text()

    def counts(self) -> Counter:
        with self.store.engine.connect() as conn:
            return Counter(dict(conn.execute(sa.text("SELECT status, count(*) FROM deliveries GROUP BY status"))
                                .all()))

    def statuses(self) -> dict[str, str]:
        with self.store.engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT s.email, d.status FROM deliveries d JOIN subscribers s "
                                             "ON s.id = d.subscriber_id")).all())

    def issues(self) -> list[tuple]:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.text("SELECT period, status FROM issues ORDER BY id")).all()

    def active_pid(self) -> int | None:
        with self.store.engine.connect() as conn:
            return conn.execute(sa.text("SELECT pid FROM schedule_lease WHERE owner IS NOT NULL")).scalar()

    def close(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self.store.engine.dispose()


@pytest.fixture
def daemons(tmp_path, db_url):
    made = []

    def make(delivery: str = "") -> Daemons:
        made.append(Daemons(tmp_path, db_url, delivery))
        return made[-1]

    yield make
    for d in made:
        d.close()


@pytest.fixture
def sqlite_daemons(tmp_path):
    made = Daemons(tmp_path, f"sqlite:///{tmp_path}/run.db")
    yield made
    made.close()


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"waited {seconds} s for {what}")


def slow_smtp(port: int) -> str:
    return (f'provider = "smtp"\nbatch_size = 10\nsmtp = {{ host = "127.0.0.1", port = {port}, security = "none", '
            'connections = 1 }')


def test_a_one_off_a_few_seconds_ahead_is_sent_once_by_a_running_daemon(sqlite_daemons):
    d = sqlite_daemons
    d.cli("subscribers", "import", str(ROOT / "subscribers" / "sample.csv"))
    daemon = d.start("--log-json")
    wait_for(d.active_pid, 15, "the daemon to become active")
    scheduled = d.cli("schedule", "at", "weekly", "2026-01-05T07:00:05+00:00")
    assert scheduled.returncode == 0, scheduled.stderr
    assert scheduled.stdout.startswith("one-off 1: weekly at 2026-01-05T07:00:05+00:00;")
    wait_for(lambda: d.issues() == [("2026-01-05", "done")], 25, "the one-off to be sent (its time, then a poll)")
    files = sorted(p.name for p in (d.folder / "outbox" / "weekly-2026-01-05").glob("*.eml"))
    assert len(files) == d.counts()["sent"] == 8
    shown = json.loads(d.cli("schedule", "--json").stdout)
    assert shown["newsletters"][0]["recent"][0]["status"] == "sent"
    assert [(x["role"], x["pid"]) for x in shown["daemons"]] == [("active", daemon.pid)]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    lines = [json.loads(line) for line in d.log(daemon).splitlines()]
    assert {"time", "level", "newsletter", "issue", "message"} <= set(lines[0])
    assert any(x["newsletter"] == "weekly" and x["issue"] == 1 and x["message"].startswith("issue 1 for 2026-01-05 "
                                                                                            "finished: sent 8")
               for x in lines)
    assert lines[-1]["message"] == "stopped; the lease is given up"
    assert d.active_pid() is None


def test_two_daemons_send_once_and_the_standby_finishes_after_kill_9_of_the_active_one_mid_send(daemons):
    with SmtpServer(SlowSink()) as server:
        d = daemons(slow_smtp(server.port))
        addresses = d.subscribe(200)
        d.cli("schedule", "at", "weekly", "2026-01-05T07:00:02+00:00")
        first = d.start("--lease", "2", "--poll", "0.5")
        wait_for(lambda: d.active_pid() == first.pid, 15, "the first daemon to become active")
        second = d.start("--lease", "2", "--poll", "0.5")
        wait_for(lambda: f"standing by: the active daemon is {os.uname().nodename} pid {first.pid}" in d.log(second),
                 15, "the second daemon to stand by")
        wait_for(lambda: d.counts()["sent"] >= 40, 30, "the send to be well under way")
        first.send_signal(signal.SIGKILL)
        first.wait()
        at_kill = d.counts()
        assert at_kill["sent"] >= 40 and at_kill["pending"] > 0, at_kill  # the kill landed mid-send
        killed_at = time.monotonic()
        wait_for(lambda: d.active_pid() == second.pid, 10, "the standby to take over")
        assert time.monotonic() - killed_at < 2 * 2 + 1.5  # two lease periods, and a poll
        wait_for(lambda: d.issues() == [("2026-01-05", "done")], 60, "the standby to finish the issue")
        received = Counter(a for a, _ in server.sink.received)
        state = d.statuses()
    assert max(received.values()) == 1, "somebody received two copies"
    for address in addresses:
        assert state[address] in ("sent", "unknown"), (address, state[address])
        assert received[address] == (1 if state[address] == "sent" else received[address])
    assert sum(1 for s in state.values() if s == "unknown") <= 10  # at most the batch in flight at the kill
    assert "resuming issue 1 for 2026-01-05" in d.log(second)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=10) == 0


def test_a_daemon_killed_mid_send_and_restarted_finishes_with_no_duplicate(tmp_path):
    with SmtpServer(SlowSink()) as server:
        d = Daemons(tmp_path, f"sqlite:///{tmp_path}/run.db", slow_smtp(server.port))
        try:
            addresses = d.subscribe(200)
            d.cli("schedule", "at", "weekly", "2026-01-05T07:00:01+00:00")
            first = d.start("--poll", "0.5")
            wait_for(lambda: d.counts()["sent"] >= 30, 30, "the send to be under way")
            first.send_signal(signal.SIGKILL)
            first.wait()
            assert d.counts()["pending"] > 0
            restarted = time.monotonic()
            again = d.start("--poll", "0.5", now="2026-01-05T07:00:30+00:00")
            wait_for(lambda: d.active_pid() == again.pid, 10, "the restarted daemon to become active")
            assert time.monotonic() - restarted < 20  # not the 30 s lease: a dead daemon of this host is not waited out
            wait_for(lambda: d.issues() == [("2026-01-05", "done")], 60, "the restarted daemon to finish")
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=10) == 0
            received = Counter(a for a, _ in server.sink.received)
            state = d.statuses()
        finally:
            d.close()
    assert max(received.values()) == 1
    assert {a for a in addresses if state[a] == "sent"} == {a for a in addresses if received[a] == 1} - {
        a for a in addresses if state[a] == "unknown"}
    assert all(state[a] in ("sent", "unknown") for a in addresses)


def test_sigterm_mid_send_stops_within_10_s_and_the_next_start_resumes_with_nothing_unknown(tmp_path):
    with SmtpServer(SlowSink()) as server:
        d = Daemons(tmp_path, f"sqlite:///{tmp_path}/run.db", slow_smtp(server.port))
        try:
            addresses = d.subscribe(200)
            d.cli("schedule", "at", "weekly", "2026-01-05T07:00:01+00:00")
            first = d.start("--poll", "0.5")
            wait_for(lambda: d.counts()["sent"] >= 30, 30, "the send to be under way")
            asked = time.monotonic()
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=10) == 0
            assert time.monotonic() - asked < 10
            stopped = d.counts()
            assert stopped["sent"] >= 30 and stopped["pending"] > 0, stopped
            assert set(stopped) == {"sent", "pending"}  # nothing in flight, nothing unknown
            assert d.active_pid() is None
            log = d.log(first)
            assert "SIGTERM: warm stop: finishing the batch in hand" in log
            assert "send stopped: what was not sent stays pending; the next start resumes it" in log
            again = d.start("--poll", "0.5", now="2026-01-05T07:01:00+00:00")
            wait_for(lambda: d.issues() == [("2026-01-05", "done")], 60, "the next start to finish the issue")
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=10) == 0
            received = Counter(a for a, _ in server.sink.received)
        finally:
            d.close()
    assert received == Counter({a: 1 for a in addresses})
    assert set(d.statuses().values()) == {"sent"}


def test_a_second_signal_stops_at_once_leaving_the_batch_in_flight_for_the_next_start(tmp_path):
    class VerySlowSink(SmtpSink):
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            await asyncio.sleep(0.5)
            return await super().handle_DATA(server, session, envelope)

    with SmtpServer(VerySlowSink()) as server:
        d = Daemons(tmp_path, f"sqlite:///{tmp_path}/run.db", slow_smtp(server.port))
        try:
            d.subscribe(30)
            d.cli("schedule", "at", "weekly", "2026-01-05T07:00:01+00:00")
            daemon = d.start("--poll", "0.5")
            wait_for(lambda: d.counts()["sending"] == 10, 30, "a batch to be in flight")
            asked = time.monotonic()
            daemon.send_signal(signal.SIGINT)
            time.sleep(0.3)
            daemon.send_signal(signal.SIGINT)
            assert daemon.wait(timeout=5) == 1
            assert time.monotonic() - asked < 3  # a warm stop would have waited for the 5 s batch
            log = d.log(daemon)
            assert "SIGINT: warm stop" in log and "SIGINT again: cold stop now" in log
            assert d.counts()["sending"] == 10 and d.active_pid() is None
        finally:
            d.close()


def test_a_schedule_edited_in_newsletter_toml_is_picked_up_by_the_running_daemon(sqlite_daemons):
    d = sqlite_daemons
    d.cli("subscribers", "import", str(ROOT / "subscribers" / "sample.csv"))
    daemon = d.start(now="2026-01-05T07:00:54+00:00")  # the default poll of 5 s
    wait_for(lambda: "active: this daemon sends for newsletters weekly (0 8 * * mon" in d.log(daemon), 15,
             "the daemon to start")
    d.toml.write_text(d.toml.read_text().replace('schedule = "0 8 * * mon"', 'schedule = "1 7 * * mon"'))
    edited = time.monotonic()
    wait_for(lambda: "changed: schedule reloaded; newsletters weekly (1 7 * * mon" in d.log(daemon), 15,
             "the daemon to reload newsletter.toml")
    assert time.monotonic() - edited < 15
    wait_for(lambda: d.issues() == [("2026-01-05", "done")], 30, "the new 07:01 fire to be sent")
    daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: schedule reloaded" in d.log(daemon), 5, "SIGHUP to reload newsletter.toml at once")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    assert "fire at 2026-01-05T07:01:00+00:00: sending the issue for 2026-01-05" in d.log(daemon)


def test_sends_of_different_newsletters_run_at_the_same_time(tmp_path):
    with SmtpServer(SlowSink()) as server:
        d = Daemons(tmp_path, f"sqlite:///{tmp_path}/run.db", slow_smtp(server.port))
        try:
            addresses = [f"reader{i:04d}@example.org" for i in range(80)]
            import_csv(d.store, load_config(d.toml), io.StringIO(
                "email,newsletters\n" + "".join(f"{a},weekly;lab\n" for a in addresses)), "t.csv", FIXED_NOW)
            d.cli("schedule", "at", "weekly", "2026-01-05T07:00:01+00:00")
            d.cli("schedule", "at", "lab", "2026-01-05T07:00:01+00:00")
            daemon = d.start("--poll", "0.5")
            wait_for(lambda: [s for _, s in d.issues()] == ["done", "done"], 60, "both issues to be sent")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
            order = [b"<lab." in message for _, message in server.sink.received]
        finally:
            d.close()
    assert len(order) == 160
    # one newsletter's messages are interleaved with the other's, not all of one then all of the other
    first_lab, last_weekly = order.index(True), len(order) - 1 - order[::-1].index(False)
    first_weekly, last_lab = order.index(False), len(order) - 1 - order[::-1].index(True)
    assert first_lab < last_weekly and first_weekly < last_lab
