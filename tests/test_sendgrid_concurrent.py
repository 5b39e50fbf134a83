"""SendGrid with several requests in flight at once (`requests_in_flight`): every batch is committed as
`sending` before it is posted; a refusal of one request leaves the others recorded and the refused batch
retried; Ctrl-C leaves what was handed over `sending` (unknown to the next run) and nothing is sent twice.

The server may take the requests in any order, so these tests assert what holds in every order: each copy at
most once, and the ledger agreeing with what the server took."""

from __future__ import annotations

import io
import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from newsletter import ledger
from newsletter.deliver.base import StopSend
from newsletter.deliver.run import Sender
from newsletter.deliver.sendgrid import SendgridProvider
from newsletter.plan import plan_or_resume
from newsletter.store import deliveries
from newsletter.subscribers import import_csv

from .sendgrid_server import Fault, SendgridServer
from .test_sendgrid import KEY, configure


def people(env, count: int) -> list[str]:
    addresses = [f"reader{i:04d}@example.org" for i in range(count)]
    import_csv(env.store, env.config, io.StringIO("email,newsletters\n" + "".join(f"{a},weekly\n" for a in addresses)),
               "t.csv", env.now)
    return addresses


def sender(env, config, **options):
    newsletter = config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
    provider = SendgridProvider(config.delivery.sendgrid, api_key=KEY)
    return record, Sender(env.store, config, newsletter, provider, sleep=lambda s: None, **options)


def statuses(env, delivery_ids) -> Counter:
    with env.store.engine.connect() as conn:
        return Counter(conn.execute(sa.select(deliveries.c.status).where(deliveries.c.id.in_(delivery_ids)))
                       .scalars())


def by_status(env, issue_id) -> Counter:
    return ledger.counts(env.store, issue_id)


def test_each_request_is_committed_as_sending_before_it_is_posted_and_every_copy_goes_once(env):
    addresses = people(env, 100)
    seen, wrong = [], []
    lock = threading.Lock()

    def observe(body):
        # read from another connection, as a crash would leave it: every row of the request is committed
        ids = [int(p["custom_args"]["delivery_id"]) for p in body["personalizations"]]
        found = statuses(env, ids)
        if found != Counter({"sending": len(ids)}):
            wrong.append(dict(found))
        with lock:
            seen.append(len(ids))

    with SendgridServer(api_key=KEY, observe=observe) as server:
        config = configure(env, server.url, batch_size=10, requests_in_flight=3)
        record, send = sender(env, config)
        report = send.run(record, env.now)
    assert wrong == []
    assert dict(report.counts) == {"sent": 100}
    assert (server.requests, sorted(seen)) == (10, [10] * 10)
    assert sorted(server.emails()) == addresses


class Gate:
    """Holds every request after the first at the server until `open()`, and tells when `count` arrived."""

    def __init__(self, count: int):
        self.count, self.arrived = count, 0
        self.all_there, self.opened = threading.Event(), threading.Event()
        self.lock = threading.Lock()

    def __call__(self, body) -> None:
        with self.lock:
            self.arrived += 1
            first = self.arrived == 1
            if self.arrived == self.count:
                self.all_there.set()
        if not first:
            assert self.opened.wait(30), "the test never let the held requests go"

    def open(self) -> None:
        self.opened.set()


def test_ctrl_c_with_requests_in_flight_leaves_them_unknown_and_sends_nobody_twice(env):
    addresses = people(env, 40)
    gate = Gate(3)

    def interrupted(marks):
        if not marks:  # a claim with nobody to skip
            return
        # the first answer is being recorded; the other two requests are at the server, unanswered
        assert gate.all_there.wait(30)
        raise KeyboardInterrupt

    with SendgridServer(api_key=KEY, observe=gate) as server:
        config = configure(env, server.url, batch_size=10, requests_in_flight=3)
        record, send = sender(env, config, progress=interrupted)
        with pytest.raises(KeyboardInterrupt):
            send.run(record, env.now)
        # what was handed over and not answered stays in flight; what was never claimed stays pending
        assert by_status(env, record.id) == {"sent": 10, "sending": 20, "pending": 10}
        gate.open()  # the server takes the two held requests: their copies went out
        record, again = sender(env, config)
        report = again.run(record, env.now)
        assert (report.recovered, dict(report.counts)) == (20, {"sent": 20, "unknown": 20})
        assert report.exit_code == 3
        for thread in [t for t in threading.enumerate() if t.name.startswith("post")]:
            thread.join(30)  # the interrupted send's workers, done once the server answered them
        server.httpd.shutdown()
    assert Counter(server.emails()) == Counter(addresses)


def test_a_5xx_on_one_of_the_requests_in_flight_is_retried_and_the_others_are_recorded(env):
    addresses = people(env, 60)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("status", 500, "internal error"))  # whichever request arrives first
        config = configure(env, server.url, batch_size=10, requests_in_flight=3)
        record, send = sender(env, config)
        report = send.run(record, env.now)
    assert dict(report.counts) == {"sent": 60}
    assert server.requests == 7
    assert Counter(server.emails()) == Counter(addresses)


def test_a_lost_answer_among_requests_in_flight_is_unknown_for_that_batch_only(env):
    addresses = people(env, 60)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("lose_answer"))
        config = configure(env, server.url, batch_size=10, requests_in_flight=3)
        record, send = sender(env, config)
        report = send.run(record, env.now)
        assert dict(report.counts) == {"sent": 50, "unknown": 10}
        record, again = sender(env, config)
        assert dict(again.run(record, env.now).counts) == {"sent": 50, "unknown": 10}
    assert server.requests == 6
    assert Counter(server.emails()) == Counter(addresses)


def test_a_refusal_that_stops_the_send_records_the_other_answers_and_gives_its_batch_back(env):
    people(env, 60)
    with SendgridServer(api_key=KEY) as server:
        server.queue(Fault("status", 403, "access forbidden"))
        config = configure(env, server.url, batch_size=10, requests_in_flight=3)
        record, send = sender(env, config)
        with pytest.raises(StopSend, match="access forbidden"):
            send.run(record, env.now)
        counts = by_status(env, record.id)
        # the ledger says sent for exactly what the server took; the refused batch and the rest are pending
        assert set(counts) <= {"sent", "pending"} and counts["pending"] >= 10
        assert sorted(server.emails()) == sorted(ledger_sent(env, record.id))
        record, again = sender(env, config)
        assert dict(again.run(record, env.now).counts) == {"sent": 60}
    assert max(Counter(server.emails()).values()) == 1 and len(server.emails()) == 60


def ledger_sent(env, issue_id) -> list[str]:
    with env.store.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT s.email FROM deliveries d JOIN subscribers s ON s.id = "
                                         "d.subscriber_id WHERE d.issue_id = :i AND d.status = 'sent'"),
                                 {"i": issue_id}).scalars())


def test_requests_in_flight_stay_within_the_rate_limit_the_answers_announce(env):
    from .test_sendgrid_storm import FakeClock

    people(env, 100)
    clock = FakeClock(1_000_000.5)
    with SendgridServer(api_key=KEY, rate_limit=3, clock=clock) as server:
        config = configure(env, server.url, batch_size=10, requests_in_flight=3)
        newsletter = config.newsletter("weekly")
        record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
        provider = SendgridProvider(config.delivery.sendgrid, api_key=KEY, clock=clock)
        report = Sender(env.store, config, newsletter, provider, sleep=clock.sleep, clock=clock).run(record, env.now)
    assert dict(report.counts) == {"sent": 100}
    # three at once in each second of the clock, then a wait for the next: never a 429
    assert (server.requests, server.throttled) == (10, 0)
    assert clock.waits == [0.5, 1.0, 1.0]
