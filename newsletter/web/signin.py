"""The editors' console sign-in: the password's argon2 hash, and the signed session cookie.

The password itself is never stored or configured: `newsletter admin hash-password` prints its argon2id hash
(argon2-cffi's defaults), which goes in `[web] admin_password_hash` or NEWSLETTER_ADMIN_PASSWORD_HASH. A
session is `<expiry>.<fingerprint of the hash>` signed with the store's secret, so it cannot be forged, it
ends on its own after SESSION_HOURS, and changing the password signs every session out. The clock is a
parameter, as everywhere.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, Signer

SESSION_COOKIE = "nl_admin"
SESSION_HOURS = 12
HASH_VARIABLE = "NEWSLETTER_ADMIN_PASSWORD_HASH"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def hash_problem(value: str) -> str | None:
    """Why `value` is not an argon2 hash `hash-password` could have printed, or None when it is one."""
    if not value.startswith("$argon2"):
        return "is not an argon2 hash (it must start with $argon2id$); make one with `newsletter admin hash-password`"
    try:
        from argon2 import extract_parameters

        extract_parameters(value)
    except (InvalidHashError, ValueError) as err:
        return f"is not a usable argon2 hash ({err}); make one with `newsletter admin hash-password`"
    return None


def password_matches(password_hash: str, password: str) -> bool:
    """Whether `password` is the one `password_hash` was made from (argon2 compares in constant time)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class Sessions:
    """Signed, expiring session values for one password hash."""

    def __init__(self, secret: str, password_hash: str):
        self.signer = Signer(secret, salt="newsletter-admin-session", digest_method=hashlib.sha256)
        self.fingerprint = hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]

    def make(self, now: datetime) -> str:
        expires = int((now + timedelta(hours=SESSION_HOURS)).timestamp())
        return self.signer.sign(f"{expires}.{self.fingerprint}").decode("ascii")

    def valid(self, value: str | None, now: datetime) -> bool:
        if not value or len(value) > 200:
            return False
        try:
            payload = self.signer.unsign(value).decode("ascii")
        except (BadSignature, UnicodeError):
            return False
        expires, _, fingerprint = payload.partition(".")
        return expires.isdigit() and fingerprint == self.fingerprint and now.timestamp() < int(expires)
