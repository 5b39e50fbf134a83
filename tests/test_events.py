"""What providers report back: SendGrid's signed Event Webhook, recorded once per event, and the rules that
suppress bounced and complaining addresses and end subscriptions on an unsubscribe event."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter import events as ev
from newsletter.deliver import make_provider
from newsletter.deliver.run import Sender
from newsletter.plan import plan_or_resume
from newsletter.store import delivery_events, subscribers, subscriptions
from newsletter.subscribers import find, import_csv
from newsletter.webhooks import handle_sendgrid_webhook

# A key pair made for these tests: SendGrid keeps the private half and shows the public one.
PRIVATE = ec.derive_private_key(0x5EED_1234_ABCD, ec.SECP256R1())
PUBLIC_B64 = base64.b64encode(PRIVATE.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def sign(body: bytes, timestamp: str, key=PRIVATE) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def configured(env, **sendgrid):
    return dataclasses.replace(env.config, delivery=dataclasses.replace(
        env.config.delivery, sendgrid=dataclasses.replace(env.config.delivery.sendgrid,
                                                          webhook_public_key=PUBLIC_B64, **sendgrid)))


def sent_issue(env, addresses: list[str], newsletter: str = "weekly", now=None, subscribe: bool = True):
    """Subscribe `addresses` and send them an issue through the outbox; returns (issue id, {address: delivery})."""
    if subscribe:
        import_csv(env.store, env.config, io.StringIO(
            "email,newsletters\n" + "".join(f"{a},weekly;lab\n" for a in addresses)), "t.csv", env.now)
    now = now or env.now
    config = env.config
    record, _ = plan_or_resume(env.store, config, config.newsletter(newsletter), env.posts, now)
    Sender(env.store, config, config.newsletter(newsletter), make_provider(config)).run(record, now)
    with env.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT d.id, s.email FROM deliveries d JOIN subscribers s "
                                    "ON s.id = d.subscriber_id WHERE d.issue_id = :i"), {"i": record.id}).all()
    return record.id, {email: delivery for delivery, email in rows}


def event(kind: str, issue: int, delivery: int, email: str, n: int = 1, **extra) -> dict:
    return {"email": email, "timestamp": int(FIXED_TS) - 60, "event": kind, "sg_event_id": f"ev-{kind}-{delivery}-{n}",
            "sg_message_id": "m.1", "issue_id": str(issue), "delivery_id": str(delivery), **extra}


FIXED_TS = "1767596400"  # 2026-01-05 07:00:00 UTC, the tests' fixed now


def post(env, config, items, *, timestamp: str = FIXED_TS, alter=None, headers=None):
    body = json.dumps(items).encode()
    signed = {"X-Twilio-Email-Event-Webhook-Signature": sign(body, timestamp),
              "X-Twilio-Email-Event-Webhook-Timestamp": timestamp}
    if alter:
        body, signed = alter(body, signed)
    return handle_sendgrid_webhook(env.store, config, body, headers if headers is not None else signed,
                                   clock=lambda: env.now)


def state(env) -> dict[str, tuple[str, tuple[str, ...]]]:
    with env.store.engine.connect() as conn:
        people = conn.execute(sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.status)).all()
        held = conn.execute(sa.select(subscriptions.c.subscriber_id, subscriptions.c.newsletter)).all()
    return {p.email: (p.status, tuple(sorted(n for s, n in held if s == p.id))) for p in people}


def recorded(env) -> int:
    with env.store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(delivery_events)).scalar_one()


def test_signed_events_are_recorded_and_the_rules_applied(env):
    addresses = [f"r{i}@example.org" for i in range(6)]
    issue, ids = sent_issue(env, addresses)
    config = configured(env)
    items = [event("delivered", issue, ids["r0@example.org"], "r0@example.org"),
             event("open", issue, ids["r0@example.org"], "r0@example.org"),
             event("bounce", issue, ids["r1@example.org"], "r1@example.org", type="bounce", status="5.1.1",
                   reason="550 5.1.1 user unknown"),
             event("dropped", issue, ids["r2@example.org"], "r2@example.org", reason="Invalid"),
             event("spamreport", issue, ids["r3@example.org"], "r3@example.org"),
             event("unsubscribe", issue, ids["r4@example.org"], "r4@example.org"),
             event("bounce", issue, ids["r5@example.org"], "r5@example.org", type="blocked", status="4.7.1"),
             event("processed", issue, ids["r5@example.org"], "r5@example.org")]
    status, message = post(env, config, items)
    assert (status, message) == (200, "recorded 7, duplicates 0, unmatched 0; bounced 2, complained 1, "
                                      "unsubscribed 1; ignored 1 (other kinds, or not from a newsletter send)")
    assert state(env) == {"r0@example.org": ("active", ("lab", "weekly")),
                          "r1@example.org": ("bounced", ("lab", "weekly")),
                          "r2@example.org": ("bounced", ("lab", "weekly")),
                          "r3@example.org": ("complained", ("lab", "weekly")),
                          "r4@example.org": ("active", ("lab",)),
                          "r5@example.org": ("active", ("lab", "weekly"))}
    assert ev.event_counts(env.store, issue) == {"bounce_hard": 1, "bounce_soft": 1, "delivered": 1, "dropped": 1,
                                                 "open": 1, "spamreport": 1, "unsubscribe": 1}
    health = ev.issue_health(env.store, issue)
    assert (health.sent, health.complained, health.hard_bounced) == (6, 1, 2)
    listed = ev.issue_events(env.store, issue)
    assert listed[2] == {"occurred_at": "2026-01-05T06:59:00+00:00", "delivery": ids["r1@example.org"],
                         "email": "r1@example.org", "event": "bounce", "classification": "hard",
                         "source": "sendgrid", "detail": "5.1.1; 550 5.1.1 user unknown"}


def test_a_post_sent_twice_and_repeated_events_are_recorded_once(env):
    issue, ids = sent_issue(env, ["a@example.org"])
    config = configured(env)
    items = [event("open", issue, ids["a@example.org"], "a@example.org", n=1),
             event("open", issue, ids["a@example.org"], "a@example.org", n=1),
             event("click", issue, ids["a@example.org"], "a@example.org", n=2, url="https://x.example/")]
    assert post(env, config, items)[1].startswith("recorded 2, duplicates 1, unmatched 0;")
    assert post(env, config, items)[1].startswith("recorded 0, duplicates 3, unmatched 0;")
    assert recorded(env) == 2


def test_events_without_an_id_are_known_by_their_content(env):
    issue, ids = sent_issue(env, ["a@example.org"])
    item = event("delivered", issue, ids["a@example.org"], "a@example.org")
    del item["sg_event_id"]
    config = configured(env)
    post(env, config, [item])
    assert post(env, config, [item])[1].startswith("recorded 0, duplicates 1,")


def _resign_body(body, headers):
    return body.replace(b'"open"', b'"spamreport"'), headers


def _bad_signature(body, headers):
    return body, {**headers, "X-Twilio-Email-Event-Webhook-Signature": sign(body + b" ", FIXED_TS)}


def _other_timestamp(body, headers):
    return body, {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(FIXED_TS) - 1)}


def _other_key(body, headers):
    other = ec.derive_private_key(0xBAD, ec.SECP256R1())
    return body, {**headers, "X-Twilio-Email-Event-Webhook-Signature": sign(body, FIXED_TS, other)}


def _garbage_signature(body, headers):
    return body, {**headers, "X-Twilio-Email-Event-Webhook-Signature": "not base64!"}


@pytest.mark.parametrize("alter", [_resign_body, _bad_signature, _other_timestamp, _other_key, _garbage_signature])
def test_altered_or_badly_signed_posts_are_refused_and_change_nothing(env, alter):
    issue, ids = sent_issue(env, ["a@example.org"])
    before = state(env)
    status, message = post(env, configured(env), [event("open", issue, ids["a@example.org"], "a@example.org")],
                           alter=alter)
    assert status == 403
    assert message == "the signature does not match the body and timestamp for the configured public key"
    assert (state(env), recorded(env)) == (before, 0)


def test_unsigned_stale_and_unconfigured_posts_are_refused(env):
    issue, ids = sent_issue(env, ["a@example.org"])
    items = [event("spamreport", issue, ids["a@example.org"], "a@example.org")]
    config = configured(env)
    assert post(env, config, items, headers={})[0] == 403
    stale = str(int(FIXED_TS) - 601)
    assert post(env, config, items, timestamp=stale) == (
        403, "the signed timestamp is 601 s old, past the tolerance of 600 s ([delivery.sendgrid] webhook_tolerance)")
    assert post(env, config, items, timestamp=str(int(FIXED_TS) + 601))[1].startswith(
        "the signed timestamp is 601 s in the future")
    assert post(env, configured(env, webhook_tolerance=timedelta(minutes=15)), [], timestamp=stale)[0] == 200
    assert post(env, env.config, items)[0] == 403
    assert (state(env)["a@example.org"], recorded(env)) == (("active", ("lab", "weekly")), 0)


def test_a_signed_body_that_is_not_an_event_array_is_a_400(env):
    config = configured(env)
    body = b'{"event": "open"}'
    headers = {"x-twilio-email-event-webhook-signature": sign(body, FIXED_TS),
               "x-twilio-email-event-webhook-timestamp": FIXED_TS}
    assert handle_sendgrid_webhook(env.store, config, body, headers, clock=lambda: env.now) == (
        400, "the body is not a JSON array of event objects")


def test_events_for_other_deliveries_are_counted_not_recorded(env):
    issue, ids = sent_issue(env, ["a@example.org", "b@example.org"])
    items = [event("spamreport", issue, ids["a@example.org"], "b@example.org", n=1),  # not the delivery's address
             event("spamreport", issue + 1, ids["a@example.org"], "a@example.org", n=2),  # not its issue
             event("spamreport", issue, 99999, "a@example.org"),  # no such delivery
             event("spamreport", issue, 0, "a@example.org")]  # a test copy
    status, message = post(env, configured(env), items)
    assert (status, message) == (200, "recorded 0, duplicates 0, unmatched 3; bounced 0, complained 0, "
                                      "unsubscribed 0; ignored 1 (other kinds, or not from a newsletter send)")
    assert state(env)["a@example.org"][0] == "active"


def soft(delivery: int, issue: int, n: int, when: int = 0) -> ev.Event:
    return ev.Event(f"k{delivery}-{n}", "sendgrid", delivery, "bounce", FIXED_NOW_PLUS(when), "soft", issue_id=issue)


def FIXED_NOW_PLUS(seconds: int):  # noqa: N802
    from .conftest import FIXED_NOW

    return FIXED_NOW + timedelta(seconds=seconds)


def three_issues(env, address: str) -> list[tuple[int, int]]:
    """(issue, delivery) of three issues sent to `address`, a week apart."""
    found = []
    for week in range(3):
        issue, ids = sent_issue(env, [address], now=env.now - timedelta(days=13 - 6 * week), subscribe=week == 0)
        found.append((issue, ids[address]))
    return found


def test_soft_bounces_in_a_row_mark_the_subscriber_bounced_at_the_limit(env):
    sent = three_issues(env, "a@example.org")
    for n, (issue, delivery) in enumerate(sent[:2]):
        ev.record_events(env.store, [soft(delivery, issue, n)], env.now, soft_bounce_limit=3)
    assert state(env)["a@example.org"][0] == "active"
    # two soft bounces for the same delivery are still one delivery
    ev.record_events(env.store, [soft(sent[1][1], sent[1][0], 9, when=5)], env.now, soft_bounce_limit=3)
    assert state(env)["a@example.org"][0] == "active"
    report = ev.record_events(env.store, [soft(sent[2][1], sent[2][0], 2)], env.now, soft_bounce_limit=3)
    assert report.bounced == ["a@example.org"]
    assert state(env)["a@example.org"][0] == "bounced"


def test_a_delivered_message_breaks_the_run_of_soft_bounces(env):
    sent = three_issues(env, "a@example.org")
    (i0, d0), (i1, d1), (i2, d2) = sent
    ev.record_events(env.store, [soft(d0, i0, 0), soft(d2, i2, 2),
                                 ev.Event("ok", "sendgrid", d1, "delivered", FIXED_NOW_PLUS(0), issue_id=i1)],
                     env.now, soft_bounce_limit=2)
    assert state(env)["a@example.org"][0] == "active"
    ev.record_events(env.store, [soft(d1, i1, 1, when=10)], env.now, soft_bounce_limit=2)  # it bounced after all
    assert state(env)["a@example.org"][0] == "bounced"


def test_a_status_is_only_ever_raised(env):
    issue, ids = sent_issue(env, ["a@example.org"])
    d = ids["a@example.org"]
    ev.record_events(env.store, [ev.Event("c", "sendgrid", d, "spamreport", FIXED_NOW_PLUS(0))], env.now)
    ev.record_events(env.store, [ev.Event("b", "sendgrid", d, "bounce", FIXED_NOW_PLUS(1), "hard")], env.now)
    assert find(env.store, "a@example.org").status == "complained"


def test_send_warns_after_an_issue_with_too_many_complaints_or_hard_bounces(env):
    addresses = [f"r{i:02d}@example.org" for i in range(50)]
    issue, ids = sent_issue(env, addresses)
    assert ev.last_issue_warnings(env.store, "weekly") == []
    ev.record_events(env.store, [ev.Event("c", "sendgrid", ids["r00@example.org"], "spamreport", FIXED_NOW_PLUS(0))],
                     env.now)
    assert ev.last_issue_warnings(env.store, "weekly") == [
        f"1 of 50 recipients of issue {issue} reported it as spam (2.00%, above 0.1%); mailbox providers throttle "
        "or block senders over 0.3%: check that everyone on the list asked for it"]
    ev.record_events(env.store, [ev.Event("b1", "sendgrid", ids["r01@example.org"], "bounce", FIXED_NOW_PLUS(0), "hard")],
                     env.now)
    assert len(ev.last_issue_warnings(env.store, "weekly")) == 1  # 1 in 50 is 2%, not above
    ev.record_events(env.store, [ev.Event("b2", "sendgrid", ids["r02@example.org"], "dropped", FIXED_NOW_PLUS(0),
                                          "hard")], env.now)
    assert ev.last_issue_warnings(env.store, "weekly")[1].startswith(
        f"2 of 50 messages of issue {issue} bounced hard (4.00%, above 2%)")
    assert ev.last_issue_warnings(env.store, "lab") == []


def test_a_post_of_5000_events_is_one_transaction_and_quick(env):
    addresses = [f"r{i:04d}@example.org" for i in range(500)]
    issue, ids = sent_issue(env, addresses)
    kinds = ["delivered", "open", "click", "deferred", "open"] * 2
    items = [event(kinds[n % 10], issue, ids[addresses[n % 500]], addresses[n % 500], n=n) for n in range(5000)]
    commits = []
    sa.event.listen(env.store.engine, "commit", lambda conn: commits.append(1))
    started = time.perf_counter()
    status, message = post(env, configured(env), items)
    elapsed = time.perf_counter() - started
    assert (status, message.split(";")[0], len(commits)) == (200, "recorded 5000, duplicates 0, unmatched 0", 1)
    assert recorded(env) == 5000
    # BENCHMARKS.md has the figure (bench/events.py); this only catches a change that makes it many times slower,
    # such as a transaction per event, on a machine shared with other work.
    assert elapsed < 5.0
