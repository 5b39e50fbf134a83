"""Send benchmark: one issue to M subscribers through a local SendGrid sink and a local SMTP sink.

Generates a site of N posts in 6 categories and M subscribers with realistic preferences (most take every
category, a fifth choose a subset), imports them (not timed), then times whole `newsletter send` processes,
planning, rendering and the ledger included, and reports wall time, messages per second and peak RSS. In the
same run it measures the naive way (render and inline the digest once per subscriber) on a sample, and a bare
smtplib loop sending the same pre-built messages over one connection to the same SMTP sink.

    .venv/bin/python bench/send.py [--subscribers 100000] [--smtp-subscribers 5000] [--posts 60]

Targets (2 cores): 100,000 subscribers through the SendGrid sink in 15 s or less with peak RSS under 300 MB
and flat in the number of subscribers; SMTP within 2 times the bare smtplib loop.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
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
        when = NOW - timedelta(minutes=rng.randrange(60, 6 * 24 * 60))
        text = " ".join(rng.choice(["tide", "harbour", "signal", "market", "ferry", "data"]) for _ in range(40))
        (root / "_posts" / f"{when:%Y-%m-%d}-post-{i}.md").write_text(
            f"---\ntitle: \"Post {i}\"\ndate: {when:%Y-%m-%dT%H:%M:%S}\nauthor: Bench\n"
            f"categories: [{rng.choice(CATEGORIES)}]\nexcerpt: \"{text[:160]}\"\n---\n\n{text}\n")


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


def timed_send(folder: Path, provider: str, database: str) -> tuple[float, float, str]:
    """Run one whole `newsletter send` process; (seconds, peak RSS in MB, its last line of output)."""
    env = {**os.environ, "SENDGRID_API_KEY": KEY, "NEWSLETTER_DATABASE_URL": database, "PYTHONPATH": str(ROOT)}
    # A small launcher starts the send and reports its children's peak RSS: measured from this (large) process,
    # the child's figure would include the memory image it briefly shares with its parent before exec.
    launcher = ("import resource, subprocess, sys, time\n"
                "started = time.perf_counter()\n"
                "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
                "elapsed = time.perf_counter() - started\n"
                "sys.stderr.write(done.stdout + done.stderr)\n"
                "print(done.returncode, elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-m", "newsletter", "--now",
                           NOW.isoformat(), "send", "bench", "--provider", provider], cwd=folder, env=env,
                          capture_output=True, text=True)
    code, elapsed, peak = done.stdout.split()
    if code != "0":
        raise SystemExit(f"send failed:\n{done.stderr}")
    return float(elapsed), int(peak) / 1024, done.stderr.strip().splitlines()[-1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--smtp-subscribers", type=int, default=5_000)
    parser.add_argument("--posts", type=int, default=60)
    parser.add_argument("--naive-sample", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tests = ROOT / "tests"
    sink, sink_url = start([sys.executable, str(tests / "sendgrid_server.py"), "--no-validate", "--api-key", KEY])
    smtp, smtp_port = start([sys.executable, str(tests / "smtp_server.py")])
    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    try:
        print(f"posts: {args.posts}, subscribers: {args.subscribers} (SendGrid), {args.smtp_subscribers} (SMTP)")
        results = []
        for run in range(args.runs):
            for count in (args.subscribers // 4, args.subscribers):
                folder = work / f"sg-{count}-{run}"
                config_path, database = prepare(folder, count, args.posts, sink_url, int(smtp_port), seed=run)
                seconds, rss, _ = timed_send(folder, "sendgrid", database)
                results.append((count, seconds, rss))
                shutil.rmtree(folder)
        for count in (args.subscribers // 4, args.subscribers):
            runs = [(s, r) for c, s, r in results if c == count]
            seconds = statistics.median(s for s, _ in runs)
            rss = statistics.median(r for _, r in runs)
            print(f"sendgrid sink, {count} subscribers: median {seconds:.2f} s, {count / seconds:,.0f} messages/s, "
                  f"peak RSS {rss:.0f} MB  (runs: {', '.join(f'{s:.2f}' for s, _ in runs)})")
        folder = work / "naive"
        config_path, database = prepare(folder, 10, args.posts, sink_url, int(smtp_port), seed=99)
        naive = naive_rate(config_path, database, args.naive_sample)
        full = args.subscribers / statistics.median(s for c, s, _ in results if c == args.subscribers)
        print(f"naive (render and inline per subscriber, {args.naive_sample} sample): {naive:,.0f} messages/s; "
              f"per-variant rendering sends {full / naive:.0f} times as many per second")
        smtp_times, bare_times = [], []
        for run in range(args.runs):
            folder = work / f"smtp-{run}"
            config_path, database = prepare(folder, args.smtp_subscribers, args.posts, sink_url, int(smtp_port),
                                            seed=run)
            seconds, rss, _ = timed_send(folder, "smtp", database)
            smtp_times.append(seconds)
            bare_times.append(bare_smtp(config_path, database, int(smtp_port), args.smtp_subscribers))
            shutil.rmtree(folder)
        ours, bare = statistics.median(smtp_times), statistics.median(bare_times)
        print(f"smtp sink, {args.smtp_subscribers} subscribers: newsletter send median {ours:.2f} s "
              f"({args.smtp_subscribers / ours:,.0f}/s, peak RSS {rss:.0f} MB); bare smtplib loop, same messages, "
              f"one connection: median {bare:.2f} s; ratio {ours / bare:.2f} (target <= 2)")
    finally:
        sink.terminate()
        smtp.terminate()
        sink.wait()
        smtp.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
