"""The outbox provider: one file per copy, and a copy that cannot be made fails alone."""

from __future__ import annotations

import email
import email.policy

from newsletter.deliver.base import Batch, Envelope
from newsletter.deliver.outbox import OutboxProvider
from newsletter.render import Digest, IssueInfo, Recipient
from newsletter.select import Selection

from .conftest import FIXED_NOW


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("this name cannot be shown")


def batch_for(*recipients: Recipient) -> Batch:
    issue = IssueInfo(1, FIXED_NOW, "2026-01-05", "https://x.example.org/archive/")
    digest = Digest("weekly", issue, Selection((), (), FIXED_NOW, FIXED_NOW), "Hello", "<p>Hi</p>", "Hi\n", ())
    return Batch(1, "weekly-2026-01-05", "weekly", "Weekly", digest,
                 tuple(Envelope(i + 1, r) for i, r in enumerate(recipients)),
                 '"Harbour, Light" <news@bücher.de>', None, FIXED_NOW)


def test_a_copy_that_cannot_be_made_fails_alone_and_the_others_are_written(tmp_path):
    outbox = OutboxProvider(tmp_path)
    outcomes = outbox.send(batch_for(Recipient("ann@example.org"), Recipient("bob@example.org", Unprintable()),
                                     Recipient("no-at-sign"), Recipient("jörg@bücher.de", "Jörg")))
    assert [(o.status, o.detail) for o in outcomes] == [
        ("sent", None),
        ("failed", "the message could not be built: RuntimeError: this name cannot be shown"),
        ("failed", "'no-at-sign' is not an address that can be sent to: An email address must have an @-sign."),
        ("sent", None),
    ]
    files = sorted(p.name for p in (tmp_path / "weekly-2026-01-05").iterdir())
    assert files == ["0000001-ann@example.org.eml", "0000004-j_rg@b_cher.de.eml"]
    raw = (tmp_path / "weekly-2026-01-05" / files[1]).read_bytes()
    msg = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert msg.defects == []
    assert (msg["To"].addresses[0].addr_spec, msg["From"].addresses[0].display_name) == (
        "jörg@xn--bcher-kva.de", "Harbour, Light")
    assert msg["From"].addresses[0].addr_spec == "news@xn--bcher-kva.de"
