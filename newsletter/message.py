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


class MessageTemplate:
    """The messages of one digest variant: the shared part built once, each recipient's copy made from it."""

    def __init__(self, digest: Digest, *, sender: str, reply_to: str | None, list_id: tuple[str, str],
                 date: datetime):
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
                     + header("List-Id", formataddr((header_text(title), f"{newsletter_id}.{self.domain}"))))
        self.boundary = f"=_nl_{secrets.token_hex(12)}".encode()

    def render(self, recipient: Recipient, message_id: str) -> bytes:
        """The exact bytes of one recipient's copy: CRLF line endings, ready for SMTP or an .eml file."""
        personal = personalise(self.digest, recipient)
        to = Address(display_name=header_text(recipient.name), addr_spec=header_text(recipient.email))
        parts = [header("Subject", personal.subject)] if self.personal_subject else []
        parts += [self.head, header("To", to), self.tail, header("Message-ID", message_id)]
        if recipient.unsubscribe_url:
            parts.append(header("List-Unsubscribe", f"<{header_text(recipient.unsubscribe_url)}>"))
            parts.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
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
