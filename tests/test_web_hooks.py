"""SendGrid's Event Webhook mounted in `newsletter serve`: a signed batch of events is applied through the
app (no cookie, no CSRF token: the signature is the proof), an altered one is refused with 403, and a batch
larger than a form's limit is taken; an unsubscribe event is recorded as a departure like a link's."""

from __future__ import annotations

import dataclasses
import json

import pytest

from newsletter import preferences
from newsletter.subscribers import find

from .test_events import FIXED_TS, PUBLIC_B64, event, sent_issue, sign
from .web_helpers import make_web

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def hook_web(env):
    env.config = dataclasses.replace(env.config, delivery=dataclasses.replace(
        env.config.delivery, sendgrid=dataclasses.replace(env.config.delivery.sendgrid,
                                                          webhook_public_key=PUBLIC_B64)))
    return make_web(env)


def signed(items, timestamp: str = FIXED_TS) -> tuple[bytes, dict]:
    body = json.dumps(items).encode()
    return body, {"X-Twilio-Email-Event-Webhook-Signature": sign(body, timestamp),
                  "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}


def test_a_signed_batch_is_applied_and_an_altered_one_changes_nothing(env):
    issue, ids = sent_issue(env, ["a@example.org", "b@example.org"])
    web = hook_web(env)
    body, headers = signed([event("spamreport", issue, ids["a@example.org"], "a@example.org")])
    altered = body.replace(b"a@example.org", b"b@example.org")
    refused = web.client.post("/news/hooks/sendgrid", content=altered, headers=headers)
    assert refused.status_code == 403
    assert find(env.store, "b@example.org").status == "active"
    answer = web.client.post("/news/hooks/sendgrid", content=body, headers=headers)
    assert answer.status_code == 200
    assert find(env.store, "a@example.org").status == "complained"


def test_an_unsubscribe_event_is_recorded_as_a_departure(env):
    issue, ids = sent_issue(env, ["a@example.org"])
    web = hook_web(env)
    body, headers = signed([event("unsubscribe", issue, ids["a@example.org"], "a@example.org")])
    assert web.client.post("/news/hooks/sendgrid", content=body, headers=headers).status_code == 200
    subscriber = find(env.store, "a@example.org")
    assert "weekly" not in subscriber.newsletters
    assert [(d.newsletter, d.how) for d in preferences.departures(env.store, subscriber.id)] == [
        ("weekly", "provider")]


def test_a_batch_larger_than_a_forms_limit_is_taken(env):
    issue, ids = sent_issue(env, ["a@example.org"])
    web = hook_web(env)
    items = [event("open", issue, ids["a@example.org"], "a@example.org", n=i) for i in range(200)]
    body, headers = signed(items)
    assert len(body) > web.config.web.max_body  # a sign-up form would get 413
    assert web.client.post("/news/hooks/sendgrid", content=body, headers=headers).status_code == 200
