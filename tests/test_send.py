"""Sending through the ledger with the outbox provider: planned once, resumed never repeated, skips recorded,
crashes leave unknowns that are only resent on the operator's word."""

from __future__ import annotations

import email
import email.policy
import io
import os
from datetime import timedelta

import pytest
import sqlalchemy as sa

from newsletter import ledger
from newsletter.deliver import make_provider
from newsletter.deliver.run import Sender, dry_run, send_test_copy
from newsletter.plan import plan_or_resume
from newsletter.store import deliveries, issues
from newsletter.subscribers import import_csv, set_status
from newsletter.tokens import Tokens

from .conftest import ROOT, dead_owner


def subscribe(env, text: str) -> None:
    import_csv(env.store, env.config, io.StringIO(text), "t.csv", env.now)


def send(env, newsletter: str = "weekly", now=None, **options):
    now = now or env.now
    config = env.config
    record, _ = plan_or_resume(env.store, config, config.newsletter(newsletter), env.posts, now)
    return Sender(env.store, config, config.newsletter(newsletter), make_provider(config)).run(record, now, **options)


def outbox(env, label: str = "weekly-2026-01-05") -> dict[str, email.message.EmailMessage]:
    folder = env.tmp / "outbox" / label
    found = {}
    for path in sorted(folder.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[msg["To"].addresses[0].addr_spec] = msg
    return found


def delivery_rows(env, issue_id: int) -> dict[str, tuple]:
    return {r["email"]: (r["status"], r["error"]) for r in ledger.open_deliveries(env.store, issue_id)}


def test_the_sample_list_gets_one_message_each_with_their_own_variant_and_links(env):
    subscribe(env, (ROOT / "subscribers" / "sample.csv").read_text())
    report = send(env)
    assert report.counts == {"sent": 8}
    assert (report.number, report.posts, report.variants) == (1, 10, 5)
    messages = outbox(env)
    assert sorted(messages) == ["ana.souza@example.org", "ben.okafor@example.org", "dev.patel@example.org",
                                "erin.walsh@example.org", "farid.haddad@example.org", "hana.kobayashi@example.org",
                                "ivan.petrov@example.org", "lena.fischer@example.org"]
    ben = messages["ben.okafor@example.org"].get_body(("plain",)).get_content()
    assert "== Culture ==" in ben and "== Travel ==" in ben and "== Science ==" not in ben
    tokens = Tokens(env.store.secret())
    for address, msg in messages.items():
        token = msg["List-Unsubscribe"].strip("<>").rsplit("/", 1)[1]
        claims = tokens.verify("unsubscribe", token)
        subscriber_id = env.store.engine.connect().execute(
            sa.text("SELECT id FROM subscribers WHERE email = :e"), {"e": address}).scalar_one()
        assert (claims.subscriber_id, claims.newsletter) == (subscriber_id, "weekly")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_sending_again_the_same_day_resumes_and_sends_nobody_twice(env):
    subscribe(env, "email,newsletters\na@example.org,weekly\nb@example.org,weekly\n")
    first = send(env)
    again = send(env, now=env.now + timedelta(hours=5))
    assert first.issue_id == again.issue_id
    assert again.counts == {"sent": 2}
    with env.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(issues)).scalar_one() == 1
        assert conn.execute(sa.select(sa.func.max(deliveries.c.attempts))).scalar_one() == 1
    assert len(outbox(env)) == 2


def test_the_next_issue_carries_only_new_posts_and_an_empty_one_is_recorded_as_skipped(env):
    subscribe(env, "email,newsletters\na@example.org,weekly\n")
    first = send(env, now=env.now - timedelta(days=3))
    second = send(env)
    assert (first.posts, second.posts, second.number) == (5, 6, 2)
    first_posts = {p.key for p in ledger.get_issue(env.store, first.issue_id).posts}
    second_posts = {p.key for p in ledger.get_issue(env.store, second.issue_id).posts}
    assert first_posts.isdisjoint(second_posts)
    third = send(env, now=env.now + timedelta(days=1))
    assert third.skipped_issue and third.counts == {}
    assert ledger.get_issue(env.store, third.issue_id).status == "skipped"
    assert send(env, now=env.now + timedelta(days=1, hours=2)).skipped_issue


def test_a_subscriber_whose_categories_have_nothing_new_is_skipped_with_the_reason(env):
    subscribe(env, "email,newsletters,categories\nsci@example.org,weekly,Science\n"
                   "tech@example.org,weekly,Technology\n")
    report = send(env, "weekly", now=env.now.replace(year=2025, month=12, day=30, hour=11))
    assert report.counts == {"sent": 1, "skipped": 1}
    assert delivery_rows(env, report.issue_id) == {
        "tech@example.org": ("skipped", "none of this issue's posts are in the subscriber's categories")}


def test_who_leaves_after_planning_is_skipped_and_who_joins_waits_for_the_next_issue(env):
    subscribe(env, "email,newsletters\nstays@example.org,weekly\nleaves@example.org,weekly\n")
    record, created = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now)
    assert created
    set_status(env.store, "leaves@example.org", "unsubscribed", env.now)
    subscribe(env, "email,newsletters\nlate@example.org,weekly\n")
    report = Sender(env.store, env.config, env.config.newsletter("weekly"), make_provider(env.config)).run(
        record, env.now)
    assert report.counts == {"sent": 1, "skipped": 1}
    assert delivery_rows(env, record.id) == {"leaves@example.org": ("skipped", "unsubscribed after the issue was "
                                                                               "planned")}
    assert sorted(outbox(env)) == ["stays@example.org"]


def test_in_flight_rows_of_a_dead_sender_become_unknown_and_are_resent_only_when_asked(env):
    subscribe(env, "email,newsletters\na@example.org,weekly\nb@example.org,weekly\nc@example.org,weekly\n")
    record, _ = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now)
    ledger.acquire_lease(env.store, record.id, dead_owner())
    claimed = ledger.claim(env.store, record.id, "weekly", 1, "crashed")
    assert [c.email for c in claimed] == ["a@example.org"]
    report = send(env)
    assert (report.recovered, report.counts) == (1, {"sent": 2, "unknown": 1})
    assert report.exit_code == 3
    assert delivery_rows(env, record.id) == {"a@example.org": (
        "unknown", "in flight when an earlier send stopped; the provider may or may not have it")}
    assert send(env).counts == {"sent": 2, "unknown": 1}
    retried = send(env, retry_unknown=True)
    assert (retried.retried_unknown, retried.counts, retried.exit_code) == (1, {"sent": 3}, 0)


def test_a_live_sender_holds_the_issue(env):
    subscribe(env, "email,newsletters\na@example.org,weekly\n")
    record, _ = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now)
    ledger.acquire_lease(env.store, record.id, ledger.lease_owner())
    with pytest.raises(ledger.SendBusy, match=rf"issue {record.id} is being sent by .*:{os.getpid()} \(host:pid\)"):
        send(env)
    assert ledger.counts(env.store, record.id) == {"pending": 1}


def test_dry_run_records_nothing(env):
    subscribe(env, (ROOT / "subscribers" / "sample.csv").read_text())
    report = dry_run(env.store, env.config, env.config.newsletter("lab"), env.posts, env.now)
    assert (report.posts, report.variants, dict(report.counts)) == (6, 3, {"would send": 6})
    assert ledger.list_issues(env.store) == []
    assert not (env.tmp / "outbox").exists()


def test_a_test_copy_goes_to_one_address_and_unsubscribes_nobody(env):
    subscribe(env, "email,newsletters\na@example.org,weekly\n")
    report = send_test_copy(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now,
                            make_provider(env.config), "editor@example.org")
    assert (report.mode, dict(report.counts)) == ("test", {"sent": 1})
    assert ledger.list_issues(env.store) == []
    [msg] = outbox(env, "weekly-2026-01-05-test").values()
    assert msg["To"] == "editor@example.org"
    token = msg["List-Unsubscribe"].strip("<>").rsplit("/", 1)[1]
    assert Tokens(env.store.secret()).verify("unsubscribe", token).is_test


def test_the_frozen_content_is_what_a_resumed_send_sends(env, tmp_path):
    subscribe(env, "email,newsletters\na@example.org,weekly\nb@example.org,weekly\n")
    record, _ = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now)
    Sender(env.store, env.config, env.config.newsletter("weekly"), make_provider(env.config)).run(record, env.now)
    stored = ledger.get_issue(env.store, record.id)
    assert [p.title for p in stored.posts][:2] == ["Measuring sea level by hand", "An island day trip in winter"]
    assert stored.image_sizes["_posts/2026-01-04-an-island-day-trip.md#an-island-day-trip"] == (640, 360)


def test_sends_that_reach_people_warn_while_links_still_point_at_the_blog(env):
    from newsletter.deliver.base import Outcome, Provider

    class Accepting(Provider):
        name = "accepting"

        def send(self, batch):
            return [Outcome.sent("id") for _ in batch.envelopes]

    subscribe(env, "email,newsletters\na@example.org,weekly\n")
    record, _ = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now)
    report = Sender(env.store, env.config, env.config.newsletter("weekly"), Accepting()).run(record, env.now)
    assert report.warnings == ["[web] base_url is not set, so unsubscribe and preferences links point at the blog "
                               "(https://harbourlight.example.org); set it to where `newsletter serve` answers"]
    outbox_report = send(env, now=env.now.replace(day=6))
    assert outbox_report.warnings == []


def test_a_scheduler_can_name_its_own_period(env):
    subscribe(env, "email,newsletters\na@example.org,weekly\n")
    record, created = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts, env.now,
                                     period="2026-W02")
    again, created_again = plan_or_resume(env.store, env.config, env.config.newsletter("weekly"), env.posts,
                                          env.now.replace(day=7), period="2026-W02")
    assert (created, created_again, record.id == again.id, record.period) == (True, False, True, "2026-W02")
