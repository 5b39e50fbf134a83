"""The web app's pure security helpers, as properties: `next=` never leaves our hosts, log paths never hold a
token, CSRF tokens verify only with their own cookie."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from newsletter.web.security import Csrf, redact, safe_next

BASE = "https://news.example.org/n"
OWN = {"news.example.org", "blog.example.org"}
targets = st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, host, rest: f"{scheme}{host}{rest}",
              st.sampled_from(["https://", "http://", "//", "/", "\\\\", "javascript:", "HTTPS://", " https://"]),
              st.sampled_from(["news.example.org", "blog.example.org", "evil.example", "news.example.org.evil.example",
                               "news.example.org@evil.example", "evil.example#news.example.org", ""]),
              st.text(max_size=20)),
)


@given(targets)
def test_next_only_ever_leads_to_our_own_hosts(target):
    found = safe_next(target, BASE, OWN)
    if found is not None:
        parts = urlsplit(found)
        assert parts.scheme in ("http", "https")
        assert parts.hostname in OWN
        assert not any(c in found for c in "\\\r\n\t")


@given(st.sampled_from(["unsubscribe", "preferences", "confirm"]),
       st.text(st.characters(blacklist_characters="/?#"), min_size=8, max_size=80), st.text(max_size=30))
def test_log_paths_never_hold_a_token(purpose, token, query):
    line = redact(f"/n/{purpose}/{token}?{query}")
    assert line == f"/n/{purpose}/<token>"


cookies = st.text(st.sampled_from("abcXYZ019-_"), min_size=1, max_size=40)


@given(cookies, st.one_of(cookies, st.text(max_size=40)))
def test_a_csrf_token_verifies_only_with_its_own_cookie(cookie, other):
    csrf = Csrf("a secret")
    token = csrf.token(cookie)
    assert csrf.valid(cookie, token)
    assert csrf.valid(other, token) == (other == cookie)
    assert not csrf.valid(other, csrf.token(other)) or Csrf.usable(other)
    assert not Csrf("another secret").valid(cookie, token)
    assert not csrf.valid(cookie, token[:-1])
