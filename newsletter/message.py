"""The message: one RFC 5322 email for one recipient, multipart/alternative with text first, then HTML.

A `MessageTemplate` is made once per digest variant: the headers every copy shares are encoded and folded by
the standard library's email policy then, and so is the per-recipient part of each copy (To, Message-ID,
List-Unsubscribe, and the Subject when it is personal). Only the bodies are per recipient, their personal
fields filled in and encoded as quoted-printable by binascii, which is what makes a copy take tens of
microseconds instead of milliseconds. The multipart boundary starts with "=_", which quoted-printable text can
never contain. No header can carry a CR or LF from post or subscriber data: every value goes through
`header_text`, and the email policy rejects any that would still fold into a new header.
"""

from __future__ import annotations

import binascii
import email.policy
import secrets
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime, formataddr, parseaddr

from .render import Digest, Recipient, marker, personalise

WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)
PERSONAL_SUBJECT_FIELDS = ("name", "email")
ONE_CLICK = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"


def header_text(value: str) -> str:
    """A header value with every run of whitespace, CR and LF included, folded to one space."""
    return " ".join(str(value).split())


def address(text: str) -> Address:
    """An Address from "Name <addr>" or a bare "addr", with the display name made header-safe."""
    name, addr = parseaddr(header_text(text))
    username, _, domain = addr.rpartition("@")
    return Address(display_name=header_text(name), username=username, domain=domain)


def domain_of(text: str) -> str:
    return address(text).domain or "localhost"


def header(name: str, value: object) -> bytes:
    """One header line (folded where long, RFC 2047-encoded where not ASCII), CRLF-terminated."""
    return WIRE_POLICY.fold_binary(name, WIRE_POLICY.header_store_parse(name, value)[1])


def quoted_printable(text: str) -> bytes:
    data = text.replace("\r\n", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")
    return encoded if encoded.endswith(b"\r\n") else encoded + b"\r\n"


def bulk_headers(newsletter_id: str, issue_number: int, domain: str) -> bytes:
    """What tells receivers this is a list message: no out-of-office or auto replies (Precedence, and
    X-Auto-Response-Suppress for Exchange), and a Feedback-ID naming the issue, newsletter and sender, by which
    Gmail's postmaster tools report complaints."""
    return (b"Precedence: bulk\r\nX-Auto-Response-Suppress: OOF, AutoReply\r\n"
            + header("Feedback-ID", feedback_id(newsletter_id, issue_number, domain)))


def feedback_id(newsletter_id: str, issue_number: int, domain: str) -> str:
    return f"{issue_number}:{newsletter_id}:newsletter:{domain}"


def unsubscribe_mailto_uri(mailbox: str | None, newsletter_id: str) -> str | None:
    """The mailto: target of List-Unsubscribe, for clients that only mail; its subject names the newsletter."""
    if not mailbox:
        return None
    return f"mailto:{header_text(mailbox)}?subject=unsubscribe%20{newsletter_id}"


def unsubscribe_values(url: str, mailto: str | None) -> dict[str, str]:
    """List-Unsubscribe (the HTTPS link first, then the mailto: target) and, with the link, the RFC 8058
    one-click List-Unsubscribe-Post."""
    targets = [f"<{header_text(url)}>"] if url else []
    targets += [f"<{mailto}>"] if mailto else []
    values = {"List-Unsubscribe": ", ".join(targets)} if targets else {}
    if url:
        values["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return values


def unsubscribe_headers(url: str, mailto: str | None) -> list[bytes]:
    values = unsubscribe_values(url, mailto)
    lines = [header("List-Unsubscribe", values["List-Unsubscribe"])] if values else []
    return lines + ([ONE_CLICK] if "List-Unsubscribe-Post" in values else [])


class MessageTemplate:
    """The messages of one digest variant: the shared part built once, each recipient's copy made from it."""

    def __init__(self, digest: Digest, *, sender: str, reply_to: str | None, list_id: tuple[str, str],
                 date: datetime, unsubscribe_mailto: str | None = None):
        self.digest = digest
        self.domain = domain_of(sender)
        self.personal_subject = any(marker(f) in digest.subject for f in PERSONAL_SUBJECT_FIELDS)
        title, newsletter_id = list_id
        shared = [] if self.personal_subject else [header("Subject", header_text(digest.subject))]
        shared.append(header("From", address(sender)))
        if reply_to:
            shared.append(header("Reply-To", address(reply_to)))
        self.head = b"".join(shared)
        self.tail = (header("Date", format_datetime(date))
                     + header("List-Id", formataddr((header_text(title), f"{newsletter_id}.{self.domain}")))
                     + bulk_headers(newsletter_id, digest.issue.number, self.domain))
        self.mailto = unsubscribe_mailto_uri(unsubscribe_mailto, newsletter_id)
        self.boundary = f"=_nl_{secrets.token_hex(12)}".encode()

    def render(self, recipient: Recipient, message_id: str) -> bytes:
        """The exact bytes of one recipient's copy: CRLF line endings, ready for SMTP or an .eml file."""
        personal = personalise(self.digest, recipient)
        to = Address(display_name=header_text(recipient.name), addr_spec=header_text(recipient.email))
        parts = [header("Subject", personal.subject)] if self.personal_subject else []
        parts += [self.head, header("To", to), self.tail, header("Message-ID", message_id)]
        parts += unsubscribe_headers(recipient.unsubscribe_url, self.mailto)
        boundary = self.boundary
        parts += [
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="', boundary, b'"\r\n\r\n',
            b"--", boundary, b'\r\nContent-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n", quoted_printable(personal.text),
            b"--", boundary, b'\r\nContent-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n", quoted_printable(personal.html),
            b"--", boundary, b"--\r\n",
        ]
        return b"".join(parts)
