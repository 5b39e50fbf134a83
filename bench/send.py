"""Send benchmark: one issue to M subscribers through a local SendGrid stand-in and a local SMTP sink.

Generates a site of N posts spread over 6 categories and M subscribers with realistic preferences (four in five
take every category, one in five chooses one to three), so that an issue has about 42 digest variants (the
count is printed), imports them once (not timed), then times whole `newsletter send` processes on a fresh copy
of that database each run: start-up, planning, rendering every variant, tokens, the ledger on SQLite and every
request answered. The SendGrid stand-in (tests/sendgrid_server.py) is a separate Python process on the same
machine that validates one request in 25 against SendGrid's OpenAPI schema, as an honest server spends time on
each request. Reported: median wall time, peak RSS of the send process, and the time from the send process's
start to the first request's arrival at the server. In the same run, side by side: a bare prototype
(bench/bare_send.py: sqlite3, 1,000 personalizations a request, one request at a time, same server), the naive
way (render and inline per subscriber) on a sample, and a bare smtplib loop against `newsletter send` on SMTP.

    .venv/bin/python bench/send.py [--subscribers 100000] [--smtp-subscribers 5000] [--posts 60] [--runs 3]

Targets (2 cores): 100,000 subscribers through the SendGrid stand-in in 5 s or less end to end, peak RSS at
most 100 MB and flat in the number of subscribers, the first request out within 1 s of the send's start; SMTP
within 2 times the bare smtplib loop.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import load_config  # noqa: E402
from newsletter.store import open_store  # noqa: E402
from newsletter.subscribers import Row, import_rows  # noqa: E402

CATEGORIES = ["Technology", "Science", "Culture", "Travel", "Food", "Sport"]
NOW = datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc)
KEY = "SG.bench-key"


def make_site(root: Path, posts: int, rng: random.Random) -> None:
    (root / "_posts").mkdir(parents=True)
    (root / "_config.yml").write_text("title: Bench Daily\nurl: https://bench.example.org\ntimezone: UTC\n")
    for i in range(posts):
        when = NOW - timedelta(minutes=60 + 90 * i)  # the newest twelve cover every category twice
        text = " ".join(rng.choice(["tide", "harbour", "signal", "market", "ferry", "data"]) for _ in range(40))
        (root / "_posts" / f"{when:%Y-%m-%d}-post-{i}.md").write_text(
            f"---\ntitle: \"Post {i}\"\ndate: {when:%Y-%m-%dT%H:%M:%S}\nauthor: Bench\n"
            f"categories: [{CATEGORIES[i % len(CATEGORIES)]}]\nexcerpt: \"{text[:160]}\"\n---\n\n{text}\n")


def make_newsletter(folder: Path, posts: int, rng: random.Random, sendgrid_url: str, smtp_port: int) -> Path:
    make_site(folder / "site", posts, rng)
    config = folder / "newsletter.toml"
    config.write_text(f"""
[site]
source = "site"
[render]
templates = "{ROOT / 'templates'}"
[newsletters.bench]
title = "Bench Daily"
categories = {CATEGORIES!r}
max_posts = 12
window = "7d"
[delivery]
from = "Bench <news@bench.example.org>"
provider = "sendgrid"
batch_size = 200
sendgrid = {{ api_host = "{sendgrid_url}", batch_size = 1000 }}
smtp = {{ host = "127.0.0.1", port = {smtp_port}, security = "none", connections = 2 }}
[web]
base_url = "https://news.bench.example.org"
""".replace("'", '"'))
    return config


def subscribers(count: int, rng: random.Random, offset: int = 0) -> list[Row]:
    rows = []
    for i in range(count):
        chosen = () if rng.random() < 0.8 else tuple(rng.sample(CATEGORIES, rng.randint(1, 3)))
        rows.append(Row(i + 2, f"reader{offset + i:07d}@example.org", f"Reader {offset + i}", "active",
                        {"bench": chosen}))
    return rows


def start(command: list[str]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


# A small launcher starts the command and reports its start (wall clock), its children's peak RSS and the wall
# time: measured from this (large) process, the child's figure would include the memory image it briefly
# shares with its parent before exec.
LAUNCHER = ("import resource, subprocess, sys, time\n"
            "wall, started = time.time(), time.perf_counter()\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "elapsed = time.perf_counter() - started\n"
            "sys.stderr.write(done.stdout + done.stderr)\n"
            "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "print(done.returncode, elapsed, usage.ru_maxrss, wall, usage.ru_utime + usage.ru_stime)\n")


@dataclass
class Run:
    seconds: float
    rss: float  # MB
    first: float | None  # seconds from the process's start to the first request's arrival
    output: str
    cpu: float = 0.0  # seconds of CPU (user and system) the process used: less noisy than wall time under load


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_bench/stats", timeout=10) as answer:
        return json.load(answer)


def launch(command: list[str], folder: Path, env: dict, sink_url: str | None = None) -> Run:
    if sink_url:
        server_stats(sink_url)  # resets the first arrival
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=folder, env=env, capture_output=True,
                          text=True)
    code, elapsed, peak, wall, cpu = done.stdout.split()
    if code != "0":
        raise SystemExit(f"{command} failed:\n{done.stderr}")
    first = None
    if sink_url:
        arrival = server_stats(sink_url)["first_arrival"]
        first = arrival - float(wall) if arrival else None
    return Run(float(elapsed), int(peak) / 1024, first, done.stderr.strip(), float(cpu))


def timed_send(folder: Path, provider: str, database: str, sink_url: str | None = None) -> Run:
    """Run one whole `newsletter send` process."""
    env = {**os.environ, "SENDGRID_API_KEY": KEY, "NEWSLETTER_DATABASE_URL": database, "PYTHONPATH": str(ROOT)}
    return launch([sys.executable, "-m", "newsletter", "--now", NOW.isoformat(), "send", "bench", "--provider",
                   provider], folder, env, sink_url)


def bare_send(folder: Path, database_file: Path, sink_url: str, variant: Path) -> Run:
    return launch([sys.executable, str(ROOT / "bench" / "bare_send.py"), str(database_file), sink_url, KEY,
                   str(variant)], folder, dict(os.environ), sink_url)


def restore(pristine: Path, database_file: Path) -> None:
    """Put the pristine database back as a new file, without the write-ahead log and shared-memory index a
    previous run may have left beside it: SQLite would replay that log into the fresh copy."""
    for leftover in (database_file, Path(f"{database_file}-wal"), Path(f"{database_file}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copy(pristine, database_file)


def variant_count(database_file: Path) -> int:
    with sqlite3.connect(database_file) as db:
        return db.execute("SELECT count(*) FROM variants").fetchone()[0]


def save_biggest_variant(database_file: Path, path: Path) -> None:
    with sqlite3.connect(database_file) as db:
        subject, html, text = db.execute("SELECT subject, html, text FROM variants ORDER BY length(html) DESC "
                                         "LIMIT 1").fetchone()
    path.write_text(json.dumps({"subject": subject, "html": html, "text": text}))


def naive_rate(config_path: Path, database: str, sample: int) -> float:
    """Messages per second when the digest is rendered and inlined once per subscriber."""
    from newsletter.plan import next_issue
    from newsletter.render import Recipient, personalise, render_digest, template_environment
    from newsletter.select import Selection, group_sections
    from newsletter.site import read_posts

    config = load_config(config_path)
    newsletter = config.newsletter("bench")
    store = open_store(database)
    record = next_issue(store, config, newsletter, read_posts(config.site, NOW).posts, NOW)
    env = template_environment(config.templates)
    posts = list(record.posts)
    started = time.perf_counter()
    for i in range(sample):
        selection = Selection(tuple(posts), group_sections(posts, newsletter.categories), NOW, NOW)
        digest = render_digest(env, newsletter=newsletter, site=config.site, issue=_issue(record, config),
                               selection=selection, image_sizes={})
        personalise(digest, Recipient(f"r{i}@example.org", f"R {i}", f"https://u/{i}", f"https://p/{i}"))
    return sample / (time.perf_counter() - started)


def _issue(record, config):
    from newsletter.digest import view_url
    from newsletter.render import IssueInfo

    return IssueInfo(record.number, NOW, record.period, view_url(config, "bench", record.period))


def bare_smtp(config_path: Path, database: str, port: int, count: int) -> float:
    """Seconds for a bare smtplib loop to send `count` pre-built messages over one connection."""
    from newsletter.deliver.base import Batch, Envelope
    from newsletter.digest import Variants
    from newsletter.plan import next_issue
    from newsletter.render import Recipient
    from newsletter.site import read_posts

    config = load_config(config_path)
    newsletter = config.newsletter("bench")
    record = next_issue(open_store(database), config, newsletter, read_posts(config.site, NOW).posts, NOW)
    digest = Variants(None, config, newsletter, record).for_categories("")
    envelopes = tuple(Envelope(i, Recipient(f"bare{i:06d}@example.org", f"Bare {i}", f"https://u/{i}",
                                            f"https://p/{i}")) for i in range(count))
    batch = Batch(1, "bench", "bench", "Bench Daily", digest, envelopes, config.delivery.from_addr, None, NOW)
    messages = [(e.recipient.email, batch.message_bytes(e)[1]) for e in envelopes]
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as connection:
        for address, data in messages:
            connection.sendmail("news@bench.example.org", [address], data)
    return time.perf_counter() - started


def prepare(folder: Path, count: int, posts: int, sendgrid_url: str, smtp_port: int, seed: int) -> tuple[Path, str]:
    rng = random.Random(seed)
    folder.mkdir()
    config_path = make_newsletter(folder, posts, rng, sendgrid_url, smtp_port)
    database = f"sqlite:///{folder}/bench.db"
    store = open_store(database)
    import_rows(store, subscribers(count, rng), NOW, source="bench", resubscribe=False)
    store.engine.dispose()
    return config_path, database


def _row(what: str, runs: list[Run], count: int, variants: str = "") -> str:
    seconds = statistics.median(r.seconds for r in runs)
    rss = statistics.median(r.rss for r in runs)
    firsts = [r.first for r in runs if r.first is not None]
    first = f"{statistics.median(firsts):.2f} s" if firsts else ""
    cpu = statistics.median(r.cpu for r in runs)
    return (f"| {what} | {variants} | {seconds:.2f} s | {', '.join(f'{r.seconds:.2f}' for r in runs)} | "
            f"{count / seconds:,.0f} | {rss:.0f} MB | {first} | {cpu:.1f} s |")


def sendgrid_table(args, work: Path, sink_url: str, smtp_port: int) -> float:
    print("| what | variants | median | runs (s) | messages/s | peak RSS | first request after | CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    median_full = 0.0
    for count in (args.subscribers // 4, args.subscribers):
        folder = work / f"sg-{count}"
        config_path, database = prepare(folder, count, args.posts, sink_url, smtp_port, seed=1)
        pristine = folder / "pristine.db"
        shutil.copy(folder / "bench.db", pristine)
        ours, bare, variants = [], [], set()
        for _ in range(args.runs):
            restore(pristine, folder / "bench.db")
            ours.append(timed_send(folder, "sendgrid", database, sink_url))
            variants.add(variant_count(folder / "bench.db"))
            stats = server_stats(sink_url)
            if stats["violations"]:
                raise SystemExit(f"the server found {stats['violations']} schema violation(s)")
            if count == args.subscribers:
                variant = folder / "variant.json"
                save_biggest_variant(folder / "bench.db", variant)
                restore(pristine, folder / "bare.db")
                bare.append(bare_send(folder, folder / "bare.db", sink_url, variant))
        print(_row(f"`newsletter send`, {count:,} subscribers", ours, count, "/".join(map(str, sorted(variants)))),
              flush=True)
        if bare:
            print(_row(f"bare prototype (bench/bare_send.py), {count:,}", bare, count, "1"), flush=True)
            median_full = statistics.median(r.seconds for r in ours)
        shutil.rmtree(folder)
    stats = server_stats(sink_url)
    print(f"\nserver: {stats['requests']:,} requests, {stats['personalizations']:,} personalizations, "
          f"{stats['validated']} validated against the schema, {stats['violations']} violation(s)")
    return median_full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--smtp-subscribers", type=int, default=5_000, help="0 skips the SMTP comparison")
    parser.add_argument("--posts", type=int, default=60)
    parser.add_argument("--naive-sample", type=int, default=300, help="0 skips the naive comparison")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--validate-every", type=int, default=25)
    args = parser.parse_args()
    tests = ROOT / "tests"
    sink, sink_url = start([sys.executable, str(tests / "sendgrid_server.py"), "--validate-every",
                            str(args.validate_every), "--api-key", KEY])
    smtp, smtp_port = start([sys.executable, str(tests / "smtp_server.py")])
    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    try:
        load = os.getloadavg()[0]
        print(f"posts: {args.posts}, subscribers: {args.subscribers:,} (SendGrid, the server validating one request "
              f"in {args.validate_every}), {args.smtp_subscribers:,} (SMTP); {os.cpu_count()} cores, load average "
              f"{load:.2f} at the start\n")
        full = sendgrid_table(args, work, sink_url, int(smtp_port))
        if args.naive_sample:
            folder = work / "naive"
            config_path, database = prepare(folder, 10, args.posts, sink_url, int(smtp_port), seed=99)
            naive = naive_rate(config_path, database, args.naive_sample)
            print(f"naive (render and inline per subscriber, {args.naive_sample} sample): {naive:,.0f} messages/s; "
                  f"per-variant rendering sends {args.subscribers / full / naive:.0f} times as many per second")
        if args.smtp_subscribers:
            smtp_times, bare_times = [], []
            for run in range(args.runs):
                folder = work / f"smtp-{run}"
                config_path, database = prepare(folder, args.smtp_subscribers, args.posts, sink_url,
                                                int(smtp_port), seed=run)
                result = timed_send(folder, "smtp", database)
                smtp_times.append(result.seconds)
                bare_times.append(bare_smtp(config_path, database, int(smtp_port), args.smtp_subscribers))
                shutil.rmtree(folder)
            ours, bare = statistics.median(smtp_times), statistics.median(bare_times)
            print(f"smtp sink, {args.smtp_subscribers} subscribers: newsletter send median {ours:.2f} s "
                  f"({args.smtp_subscribers / ours:,.0f}/s, peak RSS {result.rss:.0f} MB); bare smtplib loop, same "
                  f"messages, one connection: median {bare:.2f} s; ratio {ours / bare:.2f} (target <= 2)")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        sink.terminate()
        smtp.terminate()
        sink.wait()
        smtp.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
