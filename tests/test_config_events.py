"""The configuration of what providers report back: the webhook key and tolerance, the bounce address, the
soft-bounce limit; every problem named with its key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from newsletter.config import load_config
from newsletter.errors import ConfigError

from .conftest import ROOT
from .test_events import PUBLIC_B64


def config_with(tmp_path, text: str):
    path = tmp_path / "newsletter.toml"
    path.write_text(f'[site]\nsource = "{ROOT / "site"}"\n' + text, encoding="utf-8")
    return load_config(path)


def test_defaults(tmp_path):
    delivery = config_with(tmp_path, "").delivery
    assert (delivery.soft_bounce_limit, delivery.smtp.bounce_address) == (3, None)
    assert (delivery.sendgrid.webhook_public_key, delivery.sendgrid.webhook_tolerance) == (None, timedelta(minutes=10))


def test_values_are_read_and_the_key_may_be_wrapped(tmp_path):
    wrapped = PUBLIC_B64[:40] + "\n" + PUBLIC_B64[40:]
    delivery = config_with(tmp_path, f'[delivery]\nsoft_bounce_limit = 5\n[delivery.smtp]\nbounce_address = '
                                     f'"bounces@News.Example.org"\n[delivery.sendgrid]\nwebhook_public_key = """'
                                     f'{wrapped}"""\nwebhook_tolerance = "5m"\n').delivery
    assert (delivery.soft_bounce_limit, delivery.smtp.bounce_address) == (5, "bounces@news.example.org")
    assert delivery.sendgrid.webhook_public_key == PUBLIC_B64
    assert delivery.sendgrid.webhook_tolerance == timedelta(minutes=5)


def test_every_problem_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config_with(tmp_path, '[delivery]\nsoft_bounce_limit = 0\n[delivery.smtp]\nbounce_address = '
                              '"bounces+x@example.org"\n[delivery.sendgrid]\nwebhook_public_key = "bm90IGEga2V5"\n'
                              'webhook_tolerance = "soon"\n')
    where = str(tmp_path / "newsletter.toml")
    messages = [str(p).removeprefix(where + ": ") for p in caught.value.problems]
    assert messages == [
        "delivery.soft_bounce_limit: must be between 1 and 100, not 0",
        "delivery.smtp.bounce_address: 'bounces+x@example.org' must be a bare address without a '+' tag, like "
        "\"bounces@news.example.org\"",
        "delivery.sendgrid.webhook_public_key: not a base64 public key (ValueError); paste the key SendGrid shows "
        "under Settings, Mail Settings, Signed Event Webhook Requests",
        "delivery.sendgrid.webhook_tolerance: 'soon' is not a duration; write a positive number and a unit, like "
        "7d, 2w or 12h"]
