"""What every provider shares: the batch it is handed, the outcomes it reports, the errors it may raise.

A provider only builds its payload, posts it, and classifies the answer; the send loop in `run.py` owns
claiming, batching, retries and the ledger. A provider that cannot tell whether a message went out says
`unknown`, never `sent` or `retry`: an unknown is never resent without the operator's word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import make_msgid
from functools import cached_property

from ..config import DkimConfig
from ..errors import NewsletterError
from ..message import MessageTemplate, domain_of
from ..render import Digest, Recipient


class StopSend(NewsletterError):
    """A problem no retry will fix (bad credentials, a refused sender, a malformed request): the send stops,
    and the batch goes back to pending for a run after the cause is fixed. When part of the batch had already
    gone, `outcomes` says what happened to each envelope, `release` marking those to give back."""

    def __init__(self, message: str, outcomes: list[Outcome] | None = None):
        super().__init__(message)
        self.outcomes = outcomes


class RetryBatch(Exception):
    """The provider did not take the request (rate limited, unavailable, unreachable): try it again later.
    `after` is the wait the provider asked for, in seconds, when it said."""

    def __init__(self, reason: str, after: float | None = None):
        super().__init__(reason)
        self.after = after


class RateLimited(RetryBatch):
    """The provider asked us to slow down (HTTP 429): not a failure. The send waits as asked and goes on,
    without counting it against `max_attempts`, until the send's deadline."""


class SplitBatch(Exception):
    """The request was too large: send the batch again in halves."""


@dataclass(frozen=True)
class Outcome:
    status: str  # sent, failed, retry, unknown; or release (untried, give back) with StopSend
    detail: str | None = None
    message_id: str | None = None
    after: float | None = None

    @classmethod
    def sent(cls, message_id: str | None) -> Outcome:
        return cls("sent", message_id=message_id)

    @classmethod
    def failed(cls, detail: str) -> Outcome:
        return cls("failed", detail)

    @classmethod
    def retry(cls, detail: str, after: float | None = None) -> Outcome:
        return cls("retry", detail, after=after)

    @classmethod
    def unknown(cls, detail: str) -> Outcome:
        return cls("unknown", detail)


@dataclass(frozen=True)
class Envelope:
    """One copy to send: its ledger row (0 for a test copy) and its recipient."""

    delivery_id: int
    recipient: Recipient


@dataclass(frozen=True)
class Batch:
    """Copies of one digest variant for several recipients, with what every message shares."""

    issue_id: int
    label: str
    newsletter_id: str
    newsletter_title: str
    digest: Digest
    envelopes: tuple[Envelope, ...]
    sender: str
    reply_to: str | None
    date: datetime
    #: [delivery.dkim]: when set, every message from `message_bytes` is DKIM-signed
    dkim: DkimConfig | None = None
    #: [web] unsubscribe_mailto: a mailto: target for List-Unsubscribe besides the HTTPS link
    unsubscribe_mailto: str | None = None

    def message_id(self, envelope: Envelope) -> str:
        return make_msgid(idstring=f"{self.label}.{envelope.delivery_id}", domain=domain_of(self.sender))

    def message_bytes(self, envelope: Envelope) -> tuple[str, bytes]:
        """The exact bytes of one recipient's message, and its Message-ID."""
        message_id = self.message_id(envelope)
        data = self.template.render(envelope.recipient, message_id)
        if self.dkim is not None:
            from ..dkim import sign  # imported only when signing: cryptography is slow to load

            data = sign(data, self.dkim)
        return message_id, data

    @cached_property
    def template(self) -> MessageTemplate:
        return MessageTemplate(self.digest, sender=self.sender, reply_to=self.reply_to,
                               list_id=(self.newsletter_title, self.newsletter_id), date=self.date,
                               unsubscribe_mailto=self.unsubscribe_mailto)

    def split(self) -> tuple[Batch, Batch]:
        half = len(self.envelopes) // 2
        return (self._with(self.envelopes[:half]), self._with(self.envelopes[half:]))

    def _with(self, envelopes: tuple[Envelope, ...]) -> Batch:
        return replace(self, envelopes=envelopes)


class Provider:
    """The interface of an email provider. Subclasses set `name` and `batch_size` and implement `send`."""

    name = "base"
    batch_size = 100
    #: how many requests the send may have out at once; above 1, `send` is called from worker threads (and
    #: must not touch the ledger), one batch per call, while the send loop prepares the next batch
    in_flight = 1
    #: whether the personal links in sends go out to real people (the outbox sends nothing)
    reaches_people = True

    def open(self) -> None:
        """Make connections or clients before the first batch."""

    def close(self) -> None:
        """Release connections."""

    def pause(self) -> float:
        """Seconds to wait before the next request, when the provider's rate-limit headers said its quota is
        spent until a reset; 0 to go on at once."""
        return 0.0

    def room(self) -> float:
        """How many requests may be out at once by the rate limit the provider's last answers announced (those
        still out included); infinite when it announced none."""
        return float("inf")

    def send(self, batch: Batch) -> list[Outcome]:
        """Send every envelope of the batch; one Outcome each, in order. May raise RetryBatch, SplitBatch
        or StopSend for the batch as a whole."""
        raise NotImplementedError

    def prepare(self, batch: Batch) -> Callable[[], list[Outcome]]:
        """Do what `send` does before the request goes (building and encoding it), and return the call that
        sends it and answers as `send` does. With several requests in flight the send loop prepares on its
        own thread and calls the result from a worker, so that the workers only wait on the network."""
        return lambda: self.send(batch)

    def __enter__(self) -> Provider:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
