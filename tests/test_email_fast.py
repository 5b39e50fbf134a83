"""The import's faster address check gives exactly email-validator's verdicts, normalised forms and errors."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import subscribers as subs

ATEXT = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~"
HOSTILE = ATEXT + '.@"<>()[]\\,;: \t\u00a0éüßİ\u0338\u0301\u200b＠﹫。ｅ-_' + "\x00\x7f"
LABELS = ["example", "EXAMPLE", "mail", "xn--bcher-kva", "XN--BCHER-KVA", "bücher", "BÜCHER", "straße", "ﬁ", "a",
          "a-b", "-ab", "ab-", "a--b", "1", "123", "xn--", "xn--zz", "ｅxample", "ex_ample", "café\u0301",
          "\u0338x", "localhost", "a" * 63, "b" * 64, ""]
TLDS = ["org", "com", "co.uk", "test", "local", "localhost", "invalid", "example", "onion", "arpa", "internal",
        "123", "bücher", "xn--p1ai", "ORG", "o", ""]
LOCALS = ["a", "ana.souza", "Ana.Souza", "a+tag", "a..b", ".a", "a.", "postmaster", "PostMaster", "abuse",
          '"quoted"', '"a b"', '"a@b"', "ana souza", "anä", "a" * 64, "a" * 65, "a" * 240, "", "a@b"]


def plain(text: str) -> str:
    """normalise_email as it was: the full validate_email call on every address."""
    if "\r" in text or "\n" in text:
        raise ValueError("contains a line break")
    try:
        return validate_email(text.strip(), check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as err:
        raise ValueError(f"{text.strip()!r} is not a valid address: {err}") from None


def verdict(check, text: str) -> tuple[bool, str]:
    try:
        return True, check(text)
    except ValueError as err:
        return False, str(err)


def same_verdicts(text: str) -> None:
    expected = verdict(plain, text)
    assert verdict(subs.normalise_email, text) == expected  # the domain may be new here ...
    assert verdict(subs.normalise_email, text) == expected  # ... and is cached now


domains = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                    st.lists(st.sampled_from(LABELS), min_size=0, max_size=4), st.sampled_from(TLDS))
structured = st.builds(lambda local, at, domain, pad: f"{pad}{local}{at}{domain}{pad}",
                       st.one_of(st.sampled_from(LOCALS), st.text(ATEXT + ".", max_size=80)),
                       st.sampled_from(["@", "@", "@", "@@", "＠", ""]), domains, st.sampled_from(["", " ", "\t"]))


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(structured)
def test_structured_addresses_get_the_same_verdict_as_validate_email(text):
    same_verdicts(text)


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(st.text(HOSTILE, max_size=40).map(lambda t: t.replace("\u00a0", "@", 1)))
def test_hostile_text_gets_the_same_verdict_as_validate_email(text):
    same_verdicts(text)


@pytest.mark.parametrize("text", [
    "ana.souza@example.org", "Ana.Souza@EXAMPLE.ORG", "ana@xn--bcher-kva.example", "ana@BÜCHER.example",
    "PostMaster@example.org", "ana@example.test", "ana@localhost", "ana@[192.0.2.1]", '"ana"@example.org',
    "Ana <ana@example.org>", "ana@exa mple.org", "a" * 64 + "@" + ".".join(["b" * 63] * 3) + ".org",
    "a" * 60 + "@" + ".".join(["b" * 63] * 3) + ".org", "a" * 10 + "@" + "ü" * 40 + "." + "b" * 63 + ".org",
    "ana@example.org.", "ana@.example.org", "ana@example..org", "ana@-example.org", "ana@exam_ple.org",
    "ana@xn--.org", "ana@ｅxample.org", "ana@example。org", "ana@éxample.org\u0301",
])
def test_edge_addresses_get_the_same_verdict_as_validate_email(text):
    same_verdicts(text)


def test_lengths_are_checked_in_every_form_email_validator_checks():
    # The domain's ASCII form (28 characters a label) is longer than its UTF-8 one (24 bytes a label): the
    # address is too long only in ASCII.
    local, domain = "a" * 60, ".".join(["日本語ドメイン例"] * 7) + ".org"
    assert verdict(plain, f"{local}@{domain}")[0] is False
    assert verdict(subs.normalise_email, f"x@{domain}") == verdict(plain, f"x@{domain}")
    assert verdict(subs.normalise_email, f"{local}@{domain}") == verdict(plain, f"{local}@{domain}")


def test_each_domain_is_checked_by_email_validator_once(monkeypatch):
    calls = []

    def counted(text, **options):
        calls.append(text)
        return validate_email(text, **options)

    monkeypatch.setattr(subs, "validate_email", counted)
    monkeypatch.setattr(subs, "_domains", {})
    found = [subs.normalise_email(f"reader{n}@Cached.Example.org") for n in range(3)]
    assert found == ["reader0@cached.example.org", "reader1@cached.example.org", "reader2@cached.example.org"]
    assert calls == ["a@Cached.Example.org"]
    with pytest.raises(ValueError, match="is not a valid address"):
        subs.normalise_email("reader@bad_domain.org")
    assert calls == ["a@Cached.Example.org", "a@bad_domain.org", "reader@bad_domain.org"]
