"""Delivery: the send loop and the providers behind it (outbox, smtp, sendgrid)."""

from __future__ import annotations

from ..config import Config
from .base import Provider


def make_provider(config: Config, name: str | None = None) -> Provider:
    """The provider named (or `[delivery] provider`), set up from the config and the environment."""
    name = name or config.delivery.provider
    delivery = config.delivery
    if name == "outbox":
        from .outbox import OutboxProvider

        return OutboxProvider(delivery.outbox, delivery.batch_size)
    if name == "smtp":
        from .smtp import SmtpProvider

        return SmtpProvider(delivery.smtp, delivery.batch_size)
    if name == "sendgrid":
        from .sendgrid import SendgridProvider

        return SendgridProvider(delivery.sendgrid)
    raise ValueError(f"unknown provider {name!r}")
