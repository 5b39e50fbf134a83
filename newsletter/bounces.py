"""SMTP bounces and complaint reports, read from a mailbox and matched to deliveries by their VERP address.

A bounce (an RFC 3464 delivery status notification, or one of the older forms Exim, Postfix, Exchange and
others still send) comes back to the envelope sender of the message that bounced, which the SMTP send makes
per delivery (verp.py). A complaint report (ARF, RFC 5965) carries the original message, whose Return-Path is
that same address. So a report is matched only through that address: where the report was delivered
(Delivered-To, X-Original-To, Envelope-To, To) or the Return-Path of the original it returns. Nothing is
guessed from the text of the body; a report without a valid address of ours is reported as unmatched and
changes nothing.

Whether a bounce is permanent or temporary is read by flufl.bounce (GNU Mailman's detectors, which know the
DSN format and the common non-standard ones); a DSN whose Status codes are all 4.x.x (a message that expired
after temporary failures, RFC 3463) counts as soft. Then the same rules as SendGrid's events apply
(events.record_events).
"""

from __future__ import annotations

import email
import email.message
import email.utils
import hashlib
import mailbox
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import NewsletterError, Problem
from .events import Event, EventReport, record_events
from .verp import BounceAddresses

#: where a report was delivered to, as mail servers write it, most specific first
ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
COMPLAINT_TYPES = ("abuse", "fraud")


class MailboxError(NewsletterError):
    """A bounce mailbox cannot be read."""


@dataclass(frozen=True)
class Reading:
    """What one message in the mailbox is: an event for a delivery, or the reason it is not one."""

    where: str
    event: Event | None = None
    problem: str | None = None
    #: the failed addresses the report names, shown for an unmatched one so the operator can act by hand
    recipients: tuple[str, ...] = ()


@dataclass
class BounceReport:
    readings: list[Reading] = field(default_factory=list)
    events: EventReport = field(default_factory=EventReport)

    @property
    def problems(self) -> list[Problem]:
        found = [Problem(r.where, r.problem + (f" (failed: {', '.join(r.recipients)})" if r.recipients else ""))
                 for r in self.readings if r.problem]
        found += [Problem("bounces", why) for why in self.events.unmatched]
        return found


def read_mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    """Each message of an mbox file, with where it is (file and position)."""
    if not path.is_file():
        raise MailboxError(f"--mbox {path}: no such file; give the mbox file bounces are delivered to")
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        for n, key in enumerate(box.keys(), 1):
            yield f"{path} message {n}", box.get_bytes(key)
    finally:
        box.close()


def read_maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    """Each message of a Maildir (new/, then cur/), in a stable order, with its file's path."""
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise MailboxError(f"--maildir {path}: not a Maildir (it needs cur/ and new/ folders)")
    for folder in ("new", "cur"):
        for message in sorted((path / folder).iterdir()):
            if message.is_file() and not message.name.startswith("."):
                yield str(message), message.read_bytes()


IMAP_PASSWORD_VARIABLE = "NEWSLETTER_IMAP_PASSWORD"


def read_imap(url: str, password: str | None, *, timeout: float = 30.0) -> Iterator[tuple[str, bytes]]:
    """Each message of an IMAP folder, `imaps://user@host[:port]/Folder` (INBOX when no folder is named), over
    TLS verified against the system's authorities; the folder is opened read-only and nothing is flagged or
    deleted. The password comes from NEWSLETTER_IMAP_PASSWORD and is never printed."""
    import imaplib
    import ssl
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme != "imaps" or not parts.hostname or not parts.username:
        raise MailboxError(f"--imap {_safe(url)}: give imaps://user@host[:port]/Folder (TLS only)")
    if not password:
        raise MailboxError(f"--imap needs the password in the environment variable {IMAP_PASSWORD_VARIABLE}")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    where = f"imaps://{parts.username}@{parts.hostname}:{parts.port or 993}/{folder}"
    try:
        client = imaplib.IMAP4_SSL(parts.hostname, parts.port or 993, ssl_context=ssl.create_default_context(),
                                   timeout=timeout)
    except (OSError, imaplib.IMAP4.error) as err:
        raise MailboxError(f"cannot connect to {where}: {err}") from err
    try:
        try:
            client.login(unquote(parts.username), password)
        except imaplib.IMAP4.error as err:
            raise MailboxError(f"{where}: the server refused the login ({err}); check the user name in --imap "
                               f"and {IMAP_PASSWORD_VARIABLE}") from err
        status, _ = client.select(_quoted(folder), readonly=True)
        if status != "OK":
            raise MailboxError(f"{where}: no such folder")
        _, found = client.uid("SEARCH", "ALL")
        for uid in (found[0] or b"").split():
            _, data = client.uid("FETCH", uid, "(BODY.PEEK[])")
            message = next((item[1] for item in data if isinstance(item, tuple)), None)
            if message is not None:
                yield f"{where} UID {uid.decode()}", message
    except (OSError, imaplib.IMAP4.error) as err:
        raise MailboxError(f"{where}: {err}") from err
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _safe(url: str) -> str:
    """A URL fit to print: any password in it hidden."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def read_report(where: str, data: bytes, addresses: BounceAddresses, now: datetime) -> Reading:
    """Turn one message into an event for the delivery its VERP address names, or say why it is not one."""
    message = email.message_from_bytes(data)
    complaint = _feedback_type(message)
    if complaint is not None:
        if complaint not in COMPLAINT_TYPES:
            return Reading(where, problem=f"a feedback report of type {complaint!r}, not a complaint; ignored")
        kind, classification, detail, failed = "spamreport", None, f"Feedback-Type: {complaint}", ()
    else:
        classification, detail, failed = _bounce(message)
        if classification is None:
            return Reading(where, problem="not a bounce or complaint report that could be read; ignored")
        kind = "bounce"
    delivery, why = _delivery(message, addresses)
    if delivery is None:
        return Reading(where, problem=f"unmatched {kind if kind == 'bounce' else 'complaint'}: {why}",
                       recipients=failed)
    message_id = (message.get("message-id") or "").strip() or hashlib.sha256(data).hexdigest()
    return Reading(where, Event(key=f"mailbox:{delivery}:{message_id}"[:255], source="mailbox", delivery_id=delivery,
                                kind=kind, occurred_at=_date(message, now), classification=classification,
                                detail=detail), recipients=failed)


def _feedback_type(message: email.message.Message) -> str | None:
    """The Feedback-Type of an ARF report (multipart/report; report-type=feedback-report), else None."""
    if message.get_content_type() != "multipart/report" or \
            (message.get_param("report-type") or "").lower() != "feedback-report":
        return None
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            fields = payload[0] if isinstance(payload, list) and payload else email.message_from_string(
                str(payload))
            return (fields.get("feedback-type") or "").strip().lower() or "(none)"
    return "(none)"


def _bounce(message: email.message.Message) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(hard, soft or None, a detail line, the failed addresses) as flufl.bounce and the DSN fields say."""
    from flufl.bounce import all_failures

    temporary, permanent = all_failures(message)
    failed = tuple(sorted(a.decode("ascii", "replace") for a in permanent | temporary))
    statuses, diagnostics = [], []
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status" and part.is_multipart():
            for block in part.get_payload():
                if block.get("status"):
                    statuses.append(block["status"].split()[0])
                if block.get("diagnostic-code"):
                    diagnostics.append(" ".join(block["diagnostic-code"].split()))
    if not (permanent or temporary):
        return None, None, ()
    hard = bool(permanent) and not (statuses and all(s.startswith("4") for s in statuses))
    detail = "; ".join(statuses + diagnostics) or (
        f"{'permanent' if hard else 'temporary'} failure for {', '.join(failed)}: {message.get('subject', '')}")
    return ("hard" if hard else "soft"), " ".join(detail.split())[:2000], failed


def _delivery(message: email.message.Message, addresses: BounceAddresses) -> tuple[int | None, str]:
    """The delivery named by a VERP address where the report was delivered, in a complaint report's
    Original-Mail-From, or in the Return-Path of the original message a report returns."""
    candidates = [a for h in ENVELOPE_HEADERS for _, a in email.utils.getaddresses(message.get_all(h, []))]
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report" and part.is_multipart():
            for fields in part.get_payload():
                candidates += [a for _, a in email.utils.getaddresses(fields.get_all("original-mail-from", []))]
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            original = part.get_payload()[0] if part.is_multipart() else email.message_from_string(
                part.get_payload(decode=True).decode("utf-8", "replace"))
            candidates += [a for _, a in email.utils.getaddresses(original.get_all("return-path", []))]
    ours = [a for a in candidates if "+" in a.partition("@")[0] and a.rpartition("@")[2].lower() == addresses.domain]
    for address in ours:
        delivery = addresses.delivery_of(address)
        if delivery is not None:
            return delivery, ""
    if ours:
        return None, f"{ours[0]} is not a bounce address this database signed"
    return None, f"no bounce address of ours ({addresses.local}+…@{addresses.domain}) in its headers"


def _date(message: email.message.Message, now: datetime) -> datetime:
    try:
        moment = email.utils.parsedate_to_datetime(message.get("date", ""))
    except (TypeError, ValueError, IndexError):
        return now
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def process_bounces(store, messages: Iterator[tuple[str, bytes]], addresses: BounceAddresses, now: datetime, *,
                    soft_bounce_limit: int = 3) -> BounceReport:
    """Read every message, then record the matched ones in one transaction."""
    report = BounceReport()
    for where, data in messages:
        report.readings.append(read_report(where, data, addresses, now))
    report.events = record_events(store, [r.event for r in report.readings if r.event], now,
                                  soft_bounce_limit=soft_bounce_limit)
    return report
