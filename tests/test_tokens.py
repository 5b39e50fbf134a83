"""Unsubscribe and preferences tokens: they verify, carry who and which newsletter, and cannot be forged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from newsletter.tokens import TEST_SUBSCRIBER, Claims, Tokens

SECRET = "a" * 64
ids = st.integers(min_value=0, max_value=2**53)
newsletters = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)


@given(subscriber=ids, newsletter=newsletters)
def test_a_signed_token_verifies_to_what_it_was_made_for(subscriber, newsletter):
    tokens = Tokens(SECRET)
    for purpose in ("unsubscribe", "preferences"):
        assert tokens.verify(purpose, tokens.make(purpose, subscriber, newsletter)) == Claims(subscriber, newsletter)


@given(subscriber=ids, newsletter=newsletters, position=st.integers(min_value=0), char=st.sampled_from("AZaz09-_."))
def test_any_altered_token_is_rejected(subscriber, newsletter, position, char):
    tokens = Tokens(SECRET)
    token = tokens.make("unsubscribe", subscriber, newsletter)
    index = position % len(token)
    altered = token[:index] + char + token[index + 1:]
    if altered != token:
        assert tokens.verify("unsubscribe", altered) is None


def test_tokens_are_bound_to_purpose_secret_and_subscriber():
    tokens = Tokens(SECRET)
    token = tokens.make("unsubscribe", 42, "weekly")
    assert tokens.verify("preferences", token) is None
    assert Tokens("b" * 64).verify("unsubscribe", token) is None
    forged = "43.weekly." + token.rsplit(".", 1)[1]
    assert tokens.verify("unsubscribe", forged) is None
    for junk in ("", "42", "42.weekly", "x.weekly.sig", "é.é.é"):
        assert tokens.verify("unsubscribe", junk) is None


def test_urls_and_the_test_token():
    tokens = Tokens(SECRET)
    unsubscribe, preferences = tokens.urls("https://news.example.org", 7, "lab")
    assert unsubscribe.startswith("https://news.example.org/unsubscribe/7.lab.")
    assert preferences.startswith("https://news.example.org/preferences/7.lab.")
    claims = tokens.verify("unsubscribe", unsubscribe.rsplit("/", 1)[1])
    assert claims == Claims(7, "lab") and not claims.is_test
    test_claims = tokens.verify("unsubscribe", tokens.make("unsubscribe", TEST_SUBSCRIBER, "lab"))
    assert test_claims.is_test
