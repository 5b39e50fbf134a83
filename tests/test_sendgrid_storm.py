"""SendGrid under a rate-limit storm: a 429 is "slow down", not a failure; the send adapts its pace to the
rate-limit headers, keeps going through 429s and 5xx, and stops only at its deadline with the rest pending."""

from __future__ import annotations

import dataclasses
import io
from datetime import timedelta

import pytest

from newsletter import ledger
from newsletter.deliver.run import ProviderUnavailable, Sender
from newsletter.deliver.sendgrid import SendgridProvider
from newsletter.plan import plan_or_resume
from newsletter.subscribers import import_csv

from .sendgrid_server import Fault, SendgridServer
from .test_sendgrid import KEY, configure


class FakeClock:
    """Seconds that pass only when the send waits: the server, the provider and the sender share it."""

    def __init__(self, start: float):
        self.now, self.waits = start, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 3))
        self.now += seconds


def people(env, count: int) -> list[str]:
    addresses = [f"reader{i:04d}@example.org" for i in range(count)]
    import_csv(env.store, env.config, io.StringIO("email,newsletters\n" + "".join(f"{a},weekly\n" for a in addresses)),
               "t.csv", env.now)
    return addresses


def sender(env, config, clock, provider=None):
    newsletter = config.newsletter("weekly")
    record, _ = plan_or_resume(env.store, config, newsletter, env.posts, env.now)
    provider = provider or SendgridProvider(config.delivery.sendgrid, api_key=KEY, clock=clock)
    return record, Sender(env.store, config, newsletter, provider, sleep=clock.sleep, clock=clock)


SLOW_DOWN = Fault("status", 429, "too many requests", {"Retry-After": "1"})
DOWN = Fault("status", 500, "internal error")
OK = Fault("pass")


def test_a_storm_of_429s_and_5xx_completes_with_every_copy_sent_once(env):
    addresses = people(env, 300)
    clock = FakeClock(1_000_000.0)
    # 15 batches of 20: the first meets seven 429s in a row (more than max_attempts), the others a mix that
    # makes 17 of the 40 requests 429s and 8 of them 5xx, with at most two 5xx on one batch before it goes.
    mixes = [[SLOW_DOWN, OK], [DOWN, SLOW_DOWN, OK], [OK], [SLOW_DOWN, OK], [DOWN, DOWN, OK], [OK],
             [SLOW_DOWN, SLOW_DOWN, DOWN, OK]]
    storm = [SLOW_DOWN] * 7 + [OK] + [fault for i in range(14) for fault in mixes[i % len(mixes)]]
    throttled = sum(f is SLOW_DOWN for f in storm)
    assert (len(storm), throttled, sum(f is DOWN for f in storm)) == (40, 17, 8)
    with SendgridServer(api_key=KEY) as server:
        config = configure(env, server.url, batch_size=20, max_attempts=3)
        server.queue(*storm)
        record, send = sender(env, config, clock)
        report = send.run(record, env.now)
    assert dict(report.counts) == {"sent": 300}
    assert sorted(server.emails()) == addresses  # each once
    assert server.requests == len(storm) and server.violations == []
    assert clock.waits == [1.0] * throttled  # every 429 waited out as asked (5xx retry at once here)


def test_the_send_stops_at_its_deadline_with_everything_pending(env):
    people(env, 5)
    clock = FakeClock(0.0)
    with SendgridServer(api_key=KEY) as server:
        config = configure(env, server.url)
        config = dataclasses.replace(config, delivery=dataclasses.replace(config.delivery,
                                                                          deadline=timedelta(minutes=10)))
        server.queue(*[Fault("status", 429, "too many requests", {"Retry-After": "120"})] * 20)
        record, send = sender(env, config, clock)
        with pytest.raises(ProviderUnavailable, match=r"the send's deadline \(10m\) would pass before the provider "
                                                      r"takes more, so the send stops and the rest stays pending"):
            send.run(record, env.now)
    assert clock.waits == [120.0] * 5 and server.requests == 6
    assert dict(ledger.counts(env.store, record.id)) == {"pending": 5}


def test_the_pace_follows_the_rate_limit_headers_so_429s_stay_rare(env):
    people(env, 100)
    clock = FakeClock(1_000_000.5)
    with SendgridServer(api_key=KEY, rate_limit=3, clock=clock) as server:
        config = configure(env, server.url, batch_size=10)
        record, send = sender(env, config, clock)
        report = send.run(record, env.now)
    assert dict(report.counts) == {"sent": 100}
    assert (server.requests, server.throttled) == (10, 0)
    assert clock.waits == [0.5, 1.0, 1.0]  # after the 3rd, 6th and 9th request, until the next second
