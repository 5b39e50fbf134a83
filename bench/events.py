"""Event benchmark: one signed SendGrid Event Webhook post of N events, handled on SQLite.

Sets up (not timed) a store with M subscribers who each got one issue, then times `handle_sendgrid_webhook` on a
post of N events shaped like a real day's (mostly delivered, opens and clicks, a few bounces, complaints and
unsubscribes): signature check, JSON, matching every event to its delivery, recording them in one transaction
and applying the rules. Each run starts from a fresh copy of the database, so nothing is a duplicate.

    .venv/bin/python bench/events.py [--events 5000] [--subscribers 5000] [--runs 5]

Target (2 cores): 5,000 events in under a second.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from newsletter.config import load_config  # noqa: E402
from newsletter.store import deliveries, issues, open_store, subscribers, subscriptions  # noqa: E402
from newsletter.webhooks import handle_sendgrid_webhook  # noqa: E402

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=timezone.utc)
MIX = [("delivered", 55), ("open", 20), ("click", 10), ("deferred", 5), ("bounce", 6), ("dropped", 1),
       ("spamreport", 1), ("unsubscribe", 1), ("group_unsubscribe", 1)]


def make_store(path: Path, people: int) -> None:
    store = open_store(f"sqlite:///{path}")
    with store.engine.begin() as conn:
        conn.execute(subscribers.insert(), [{"email": f"r{i}@example.org", "email_key": f"r{i}@example.org",
                                             "status": "active", "created_at": NOW, "updated_at": NOW}
                                            for i in range(1, people + 1)])
        conn.execute(subscriptions.insert(), [{"subscriber_id": i, "newsletter": "weekly", "created_at": NOW}
                                              for i in range(1, people + 1)])
        conn.execute(issues.insert().values(id=1, newsletter="weekly", period="2026-01-05", number=1, status="done",
                                            planned_at=NOW, reference_time=NOW, posts="{}"))
        conn.execute(deliveries.insert(), [{"issue_id": 1, "subscriber_id": i, "status": "sent"}
                                           for i in range(1, people + 1)])
    store.engine.dispose()


def make_post(events: int, people: int, rng: random.Random) -> list[dict]:
    kinds = [k for k, weight in MIX for _ in range(weight)]
    posted = []
    for n in range(events):
        person = rng.randrange(1, people + 1)
        kind = rng.choice(kinds)
        item = {"email": f"r{person}@example.org", "timestamp": int(NOW.timestamp()) - rng.randrange(3600),
                "event": kind, "sg_event_id": f"bench-{n}", "sg_message_id": f"m{person}.filter0001",
                "issue_id": "1", "delivery_id": str(person), "category": ["weekly"]}
        if kind == "bounce":
            item.update(type=rng.choice(["bounce", "blocked"]), status="5.1.1", reason="550 5.1.1 user unknown")
        elif kind == "dropped":
            item["reason"] = "Bounced Address"
        elif kind == "click":
            item["url"] = "https://bench.example.org/2026/01/04/post/"
        posted.append(item)
    return posted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(20260105)
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    config = load_config(ROOT / "newsletter.toml")
    config = dataclasses.replace(config, delivery=dataclasses.replace(config.delivery, sendgrid=dataclasses.replace(
        config.delivery.sendgrid, webhook_public_key=public)))
    body = json.dumps(make_post(args.events, args.subscribers, rng)).encode()
    timestamp = str(int(NOW.timestamp()))
    headers = {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
        key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}
    with tempfile.TemporaryDirectory() as folder:
        pristine = Path(folder) / "pristine.db"
        make_store(pristine, args.subscribers)
        times = []
        for run in range(args.runs):
            target = Path(folder) / f"run{run}.db"
            shutil.copy(pristine, target)
            store = open_store(f"sqlite:///{target}")
            started = time.perf_counter()
            status, message = handle_sendgrid_webhook(store, config, body, headers, clock=lambda: NOW)
            times.append(time.perf_counter() - started)
            store.engine.dispose()
            assert status == 200, message
        print(f"{args.events} events ({len(body) / 1e6:.1f} MB) for {args.subscribers} subscribers: {message}")
        print(f"median {statistics.median(times):.3f} s; runs {', '.join(f'{t:.3f}' for t in times)}")


if __name__ == "__main__":
    main()
