"""The outbox provider, the default: one .eml file per recipient, the exact bytes that would go on the wire.

It runs the same send loop and ledger as a real provider, so it is how a send is rehearsed and how the demo
runs without any account. Files are written atomically: a crash never leaves half a message. A copy that cannot
be made (an address that cannot go on the wire) fails that delivery alone; a folder that cannot be written stops
the send, since no retry of the same batch would fare better.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..message import AddressError, address
from .base import Batch, Outcome, Provider, StopSend

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


class OutboxProvider(Provider):
    name = "outbox"
    reaches_people = False

    def __init__(self, folder: Path, batch_size: int = 100):
        self.folder = folder
        self.batch_size = batch_size

    def path_for(self, batch: Batch, delivery_id: int, email: str) -> Path:
        return self.folder / batch.label / f"{delivery_id:07d}-{_UNSAFE.sub('_', email)}.eml"

    def send(self, batch: Batch) -> list[Outcome]:
        try:
            address(batch.sender)
        except AddressError as err:
            raise StopSend(f"outbox: the sender cannot go on the wire: {err}; check [delivery] from") from err
        outcomes = []
        for envelope in batch.envelopes:
            try:
                message_id, data = batch.message_bytes(envelope)
            except AddressError as err:
                outcomes.append(Outcome.failed(str(err)))
                continue
            except Exception as err:
                outcomes.append(Outcome.failed(f"the message could not be built: {type(err).__name__}: {err}"))
                continue
            target = self.path_for(batch, envelope.delivery_id, envelope.recipient.email)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary = target.with_suffix(".tmp")
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, target)
            except OSError as err:
                raise StopSend(f"outbox: cannot write {target}: {err.strerror}") from err
            outcomes.append(Outcome.sent(message_id))
        return outcomes
