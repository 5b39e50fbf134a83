"""Delivery: the send loop and the providers behind it (outbox, smtp, sendgrid)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Config
from .base import Provider

if TYPE_CHECKING:
    from ..store import Store


def make_provider(config: Config, name: str | None = None, store: Store | None = None) -> Provider:
    """The provider named (or `[delivery] provider`), set up from the config and the environment; with the
    store, SMTP messages carry a per-delivery bounce address signed with its secret when one is configured."""
    name = name or config.delivery.provider
    delivery = config.delivery
    if name == "outbox":
        from .outbox import OutboxProvider

        return OutboxProvider(delivery.outbox, delivery.batch_size)
    if name == "smtp":
        from ..verp import bounce_addresses
        from .smtp import SmtpProvider

        bounces = bounce_addresses(delivery.smtp.bounce_address, store.secret()) if store is not None else None
        return SmtpProvider(delivery.smtp, delivery.batch_size, bounces=bounces)
    if name == "sendgrid":
        from .sendgrid import SendgridProvider

        return SendgridProvider(delivery.sendgrid)
    raise ValueError(f"unknown provider {name!r}")
