"""Unsubscribe and preferences tokens: they verify, carry who and which newsletter, and cannot be forged.

Every test here is exhaustive or fixed: the alteration tests try every character at every position of a set
of tokens, so a token that still verifies after any one-character change fails every run, not one run in
thirty.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.tokens import TEST_SUBSCRIBER, Claims, SecretKeyError, Tokens

SECRET = "a" * 64
BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
ALPHABET = BASE64URL + ".=~ é"
# Ids and newsletters chosen to cover short and long payloads and every length of signature tail.
SAMPLES = [(0, "weekly"), (7, "lab"), (42, "weekly"), (123456789, "a"), (2**53, "news-letter_2")]
ids = st.integers(min_value=0, max_value=2**53)
newsletters = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)


@settings(derandomize=True, max_examples=200)
@given(subscriber=ids, newsletter=newsletters)
def test_a_signed_token_verifies_to_what_it_was_made_for(subscriber, newsletter):
    tokens = Tokens(SECRET)
    for purpose in ("unsubscribe", "preferences"):
        assert tokens.verify(purpose, tokens.make(purpose, subscriber, newsletter)) == Claims(subscriber, newsletter)


def one_character_changes(token: str):
    """Every token one substitution, deletion or insertion away from `token`."""
    for index in range(len(token) + 1):
        for char in ALPHABET:
            yield token[:index] + char + token[index:]
            if index < len(token):
                yield token[:index] + char + token[index + 1:]
        if index < len(token):
            yield token[:index] + token[index + 1:]


@pytest.mark.parametrize("purpose", ["unsubscribe", "preferences"])
@pytest.mark.parametrize(("subscriber", "newsletter"), SAMPLES)
def test_every_one_character_change_of_a_token_is_rejected(purpose, subscriber, newsletter):
    tokens = Tokens(SECRET)
    token = tokens.make(purpose, subscriber, newsletter)
    accepted = [t for t in set(one_character_changes(token)) - {token} if tokens.verify(purpose, t) is not None]
    assert accepted == []


def test_the_ignored_bits_of_the_last_signature_character_do_not_make_other_spellings():
    """The signature is 32 bytes in 43 base64 characters: the last one carries 4 bits of the signature and 2
    that the decoder drops. The three characters differing only in those 2 bits decode to the same bytes."""
    tokens = Tokens(SECRET)
    token = tokens.make("unsubscribe", 42, "weekly")
    assert len(token.rsplit(".", 1)[1]) == 43
    value = BASE64URL.index(token[-1])
    siblings = [BASE64URL[(value & ~0b11) | low] for low in range(4) if (value & ~0b11) | low != value]
    assert len(siblings) == 3
    for sibling in siblings:
        assert tokens.verify("unsubscribe", token[:-1] + sibling) is None
    assert tokens.verify("unsubscribe", token) == Claims(42, "weekly")


def test_a_leading_zero_or_padding_is_not_another_spelling_of_a_token():
    tokens = Tokens(SECRET)
    token = tokens.make("unsubscribe", 42, "weekly")
    signature = token.rsplit(".", 1)[1]
    assert tokens.verify("unsubscribe", f"042.weekly.{signature}") is None
    assert tokens.verify("unsubscribe", token + "=") is None
    assert tokens.verify("unsubscribe", token + "==") is None


def test_tokens_are_bound_to_purpose_secret_and_subscriber():
    tokens = Tokens(SECRET)
    token = tokens.make("unsubscribe", 42, "weekly")
    assert tokens.verify("preferences", token) is None
    assert tokens.verify("archive", token) is None
    assert Tokens("b" * 64).verify("unsubscribe", token) is None
    forged = "43.weekly." + token.rsplit(".", 1)[1]
    assert tokens.verify("unsubscribe", forged) is None
    for junk in ("", "42", "42.weekly", "x.weekly.sig", "é.é.é", "\udcff.weekly.sig", None, b"42.weekly.x"):
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


def test_a_secret_that_is_not_text_is_a_clear_error():
    """A secret key set from bytes that are not UTF-8 reaches Python as lone surrogates."""
    with pytest.raises(SecretKeyError, match=r"^the secret key \(NEWSLETTER_SECRET_KEY\) is not UTF-8 text "
                                             r"\(character 4\); set it to letters and digits"):
        Tokens("abc\udcff")
