"""Unsubscribe and preferences tokens: signed with itsdangerous, so they cannot be forged or enumerated.

A token carries the subscriber's id and the newsletter, signed with the store's secret (NEWSLETTER_SECRET_KEY,
else a random one kept in the database so every process agrees). Tokens never expire: an unsubscribe link in a
year-old email still works. A test copy sent with `send --to` carries a token that unsubscribes nobody.
The web endpoints verify tokens with `verify`; nothing here prints or logs the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import urlsafe_b64encode
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer
from itsdangerous.encoding import base64_encode, want_bytes

from .errors import NewsletterError

PURPOSES = ("unsubscribe", "preferences")
TEST_SUBSCRIBER = 0
SECRET_VARIABLE = "NEWSLETTER_SECRET_KEY"


@dataclass(frozen=True)
class Claims:
    """What a valid token says: whose link it is and for which newsletter; `is_test` for a test copy's."""

    subscriber_id: int
    newsletter: str

    @property
    def is_test(self) -> bool:
        return self.subscriber_id == TEST_SUBSCRIBER


class _KeyedSigner(Signer):
    """itsdangerous' Signer with its key derived once and its HMAC keyed once: a send makes two tokens per
    subscriber, and deriving the key and keying HMAC-SHA256 anew for each was most of their cost. The
    signatures are byte for byte the ones Signer makes (a test holds it to that)."""

    def __init__(self, secret: str, salt: str):
        super().__init__(secret, salt=salt, digest_method=hashlib.sha256)
        # HMAC (RFC 2104) from its two keyed SHA-256 states, made once: copying a hashlib state is one C call
        # where hmac.HMAC.copy() and digest() are several Python ones, and a send signs two tokens a subscriber
        key = self.derive_key().ljust(64, b"\0")  # the derived key is a SHA-256 digest, shorter than a block
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def _mac(self, value: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def get_signature(self, value: str | bytes) -> bytes:
        return base64_encode(self._mac(want_bytes(value)))

    def sign_text(self, value: str) -> str:
        """`sign` for text, without itsdangerous' conversions and calls."""
        return f"{value}.{urlsafe_b64encode(self._mac(value.encode('utf-8'))).rstrip(b'=').decode('ascii')}"


class SecretKeyError(NewsletterError):
    """The signing secret cannot be used (it came from the environment as bytes that are not text)."""


def checked_secret(secret: str) -> str:
    """The signing secret, once it is known to be text: SecretKeyError, naming the variable, when it is not."""
    try:
        secret.encode("utf-8")
    except UnicodeEncodeError as err:
        raise SecretKeyError(f"the secret key ({SECRET_VARIABLE}) is not UTF-8 text (character "
                             f"{err.start + 1}); set it to letters and digits, e.g. the output of "
                             "`python3 -c 'import secrets; print(secrets.token_hex(32))'`") from err
    return secret


class Tokens:
    def __init__(self, secret: str):
        checked_secret(secret)
        self._signers = {
            purpose: _KeyedSigner(secret, salt=f"newsletter-{purpose}") for purpose in PURPOSES
        }

    def make(self, purpose: str, subscriber_id: int, newsletter: str) -> str:
        """`<subscriber id>.<newsletter>.<HMAC-SHA256>`: URL-safe, and about 2 microseconds to make."""
        return self._signers[purpose].sign_text(f"{subscriber_id}.{newsletter}")

    def verify(self, purpose: str, token: str) -> Claims | None:
        """The claims of a genuine token for `purpose`, or None for anything forged, altered or malformed.

        Only the exact text `make` gives is accepted. The signature's last base64 character carries two bits
        the decoder ignores, so without this check four spellings of every token would verify, and a leading
        zero in the id would be a second spelling of the same claims.
        """
        if not isinstance(token, str):
            return None
        try:
            payload = self._signers[purpose].unsign(token).decode("ascii")
        except (BadSignature, UnicodeError, KeyError, TypeError):
            return None
        subscriber, _, newsletter = payload.partition(".")
        if not subscriber.isdigit() or not newsletter:
            return None
        claims = Claims(int(subscriber), newsletter)
        canonical = self.make(purpose, claims.subscriber_id, claims.newsletter)
        if not hmac.compare_digest(canonical.encode("ascii"), token.encode("utf-8", "surrogateescape")):
            return None
        return claims

    def urls(self, base_url: str, subscriber_id: int, newsletter: str) -> tuple[str, str]:
        """The (unsubscribe, preferences) links of one subscriber of one newsletter."""
        return (
            f"{base_url}/unsubscribe/{self.make('unsubscribe', subscriber_id, newsletter)}",
            f"{base_url}/preferences/{self.make('preferences', subscriber_id, newsletter)}",
        )


def _view_signer(secret: str) -> Signer:
    return Signer(secret, salt="newsletter-view", digest_method=hashlib.sha256)


def variant_token(secret: str, issue_id: int, key: str) -> str:
    """The signed `v=` value of a view link that opens one variant of one issue (the web archive checks it)."""
    return _view_signer(secret).sign(f"{issue_id}.{key}").decode("ascii")
