"""Per-delivery bounce addresses (VERP): `bounces+<delivery id>.<signature>@domain`.

An SMTP send gives each message its own envelope sender, made from `[delivery.smtp] bounce_address`, so that a
bounce names the delivery it is about whatever the bouncing server writes in its body. The signature is an
HMAC-SHA256 (itsdangerous, with the store's secret, as the unsubscribe tokens are) truncated to 80 bits and
written in lower-case base32, because some mail servers change the case of a local part on the way back; a
forged or mangled address is never taken for a delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from itsdangerous import Signer

SALT = "newsletter-bounce"
_SIGNATURE_CHARS = 16  # 80 bits in base32
_TAG = re.compile(r"^(\d+)\.([a-z2-7]{16})$")


class BounceAddresses:
    """Makes and reads the per-delivery envelope senders of one bounce address."""

    def __init__(self, bounce_address: str, secret: str):
        local, _, domain = bounce_address.rpartition("@")
        if not local or not domain:
            raise ValueError(f"{bounce_address!r} is not an address like bounces@news.example.org")
        self.local, self.domain = local, domain.lower()
        self._signer = Signer(secret, salt=SALT, digest_method=hashlib.sha256)

    def _signature(self, delivery_id: int) -> str:
        raw = self._signer.get_signature(str(delivery_id))
        digest = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        return base64.b32encode(digest).decode("ascii").lower()[:_SIGNATURE_CHARS]

    def for_delivery(self, delivery_id: int) -> str:
        """The envelope sender (MAIL FROM) for one delivery's message."""
        return f"{self.local}+{delivery_id}.{self._signature(delivery_id)}@{self.domain}"

    def delivery_of(self, address: str) -> int | None:
        """The delivery a bounce address names, or None for any other address, a forged or a mangled one."""
        address = address.strip().strip("<>").strip()
        local, _, domain = address.rpartition("@")
        prefix, plus, tag = local.partition("+")
        if not plus or domain.lower() != self.domain or prefix.lower() != self.local.lower():
            return None
        match = _TAG.match(tag.lower())
        if match is None:
            return None
        delivery_id = int(match.group(1))
        return delivery_id if hmac.compare_digest(self._signature(delivery_id), match.group(2)) else None


def bounce_addresses(bounce_address: str | None, secret: str) -> BounceAddresses | None:
    """The VERP maker for `[delivery.smtp] bounce_address`, or None when it is not set."""
    return BounceAddresses(bounce_address, secret) if bounce_address else None
