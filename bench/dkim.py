"""DKIM benchmark: what signing costs a send, through the outbox and through a local SMTP sink.

Renders one digest of the send benchmark's site (60 posts, six categories) and times the providers' own send
loop, `Provider.send` over batches of 100 (the default batch_size), for M recipients with and without [delivery.dkim]
(a 2048-bit RSA key), interleaving the two so that the machine's load hits both alike. The SMTP sink is
tests/smtp_server.py (aiosmtpd) in a process of its own; the outbox writes and fsyncs one file per message.
Rendering is not timed (it happens once per variant, signed or not), so the ratio is that of the send itself.

    .venv/bin/python bench/dkim.py [--messages 2000] [--runs 5]

Target (2 cores): signed within 1.5 times unsigned, for both providers. It also reports the CPU time of
building the messages alone, signed and not, which the load of other processes disturbs less.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from send import NOW, make_newsletter  # noqa: E402

from newsletter.config import DkimConfig, SmtpConfig, load_config  # noqa: E402
from newsletter.deliver.base import Batch, Envelope  # noqa: E402
from newsletter.deliver.outbox import OutboxProvider  # noqa: E402
from newsletter.deliver.smtp import SmtpProvider  # noqa: E402
from newsletter.digest import render_plan  # noqa: E402
from newsletter.plan import plan_issue  # noqa: E402
from newsletter.render import Recipient  # noqa: E402
from newsletter.site import read_posts  # noqa: E402

BATCH = 100


def batches(config, digest, count: int, dkim: DkimConfig | None) -> list[Batch]:
    envelopes = [Envelope(i + 1, Recipient(f"reader{i:06d}@example.org", f"Reader {i}",
                                           f"https://news.bench.example.org/unsubscribe/{i:032x}",
                                           f"https://news.bench.example.org/preferences/{i:032x}"))
                 for i in range(count)]
    return [Batch(1, "bench-2026-01-05", "bench", "Bench Daily", digest, tuple(envelopes[i:i + BATCH]),
                  config.delivery.from_addr, None, NOW, dkim) for i in range(0, count, BATCH)]


def timed(provider, work: list[Batch]) -> float:
    started = time.perf_counter()
    for batch in work:
        outcomes = provider.send(batch)
        assert all(o.status == "sent" for o in outcomes), outcomes[:1]
    return time.perf_counter() - started


def build_cpu(work: list[Batch]) -> float:
    """CPU seconds this process spends building every message of `work` (signing included when set): less
    disturbed than wall time by other processes on the machine."""
    started = time.process_time()
    for batch in work:
        for envelope in batch.envelopes:
            batch.message_bytes(envelope)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="newsletter-dkim-bench-"))
    sink = subprocess.Popen([sys.executable, str(ROOT / "tests" / "smtp_server.py")], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = int(sink.stdout.readline().strip())
        config_path = make_newsletter(work / "site", 60, random.Random(1), "http://127.0.0.1:9", port)
        key = work / "dkim.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        dkim = DkimConfig("bench.example.org", "bench", key)
        config = load_config(config_path)
        posts = read_posts(config.site, NOW).posts
        digest = render_plan(config, plan_issue(config, config.newsletter("bench"), posts, NOW))
        smtp = SmtpProvider(SmtpConfig(host="127.0.0.1", port=port, security="none", connections=2))
        size = len(batches(config, digest, 1, None)[0].message_bytes(Envelope(1, Recipient("a@example.org")))[1])
        print(f"{args.messages} messages of {size / 1024:.0f} KB a run, {args.runs} runs, key 2048-bit RSA")
        times: dict[tuple[str, bool], list[float]] = {}
        with smtp:
            for run in range(args.runs):
                for signed in (False, True) if run % 2 == 0 else (True, False):
                    outbox = OutboxProvider(work / f"outbox-{run}-{signed}")
                    job = batches(config, digest, args.messages, dkim if signed else None)
                    times.setdefault(("outbox", signed), []).append(timed(outbox, job))
                    times.setdefault(("smtp", signed), []).append(timed(smtp, job))
                    shutil.rmtree(work / f"outbox-{run}-{signed}")
        build = {signed: statistics.median(build_cpu(batches(config, digest, args.messages, dkim if signed else None))
                                           for _ in range(args.runs)) for signed in (False, True)}
        print(f"building the messages, CPU: unsigned {build[False] / args.messages * 1e3:.3f} ms a message, signed "
              f"{build[True] / args.messages * 1e3:.3f} ms")
        for name in ("outbox", "smtp"):
            plain, signed = (statistics.median(times[(name, s)]) for s in (False, True))
            print(f"{name}: unsigned median {plain:.2f} s ({args.messages / plain:,.0f}/s), signed median "
                  f"{signed:.2f} s ({args.messages / signed:,.0f}/s); ratio {signed / plain:.2f} (target <= 1.5)"
                  f"  runs: {', '.join(f'{t:.2f}' for t in times[(name, False)])} | "
                  f"{', '.join(f'{t:.2f}' for t in times[(name, True)])}")
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
