"""The message: one RFC 5322 email for one recipient, multipart/alternative with text first, then HTML.

A `MessageTemplate` is made once per digest variant: the headers every copy shares are encoded and folded by
the standard library's email policy then, and so is the per-recipient part of each copy (To, Message-ID,
List-Unsubscribe, and the Subject when it is personal). Only the bodies are per recipient, their personal
fields filled in and encoded as quoted-printable by binascii, which is what makes a copy take tens of
microseconds instead of milliseconds. The multipart boundary starts with "=_", which quoted-printable text can
never contain. No header can carry a CR or LF from post or subscriber data: every value goes through
`header_text`, and the email policy rejects any that would still fold into a new header.

Addresses go on the wire in the form every server takes: an internationalised domain in IDNA ("xn--" labels),
and an address header never holds an encoded word inside the address; a local part that is not ASCII makes
that header UTF-8 (RFC 6532), which only a server offering SMTPUTF8 may be given.
"""

from __future__ import annotations

import binascii
import email.policy
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.headerregistry import Address, HeaderRegistry
from email.utils import format_datetime, formataddr
from urllib.parse import quote

from .render import Digest, Recipient, marker, personalise

WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)
#: for the headers of a message that carries an address with a non-ASCII local part (RFC 6532, sent with SMTPUTF8)
UTF8_POLICY = WIRE_POLICY.clone(utf8=True)
PERSONAL_SUBJECT_FIELDS = ("name", "email")
MAX_LINE = 998
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                            r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_HEADERS = HeaderRegistry()


class AddressError(ValueError):
    """An address (or a link in a header) that cannot go on the wire; the message says why."""


@dataclass(frozen=True)
class Mailbox:
    """An address as it goes on the wire: the domain in IDNA (ASCII, "xn--" labels); the local part as it is,
    which needs SMTPUTF8 and UTF-8 headers (RFC 6531, 6532) when it is not ASCII."""

    local: str
    domain: str

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def smtputf8(self) -> bool:
        return not self.local.isascii()


def header_text(value: str) -> str:
    """A header value with every run of whitespace, CR and LF included, folded to one space."""
    return " ".join(str(value).split())


def mailbox(text: str) -> Mailbox:
    """The wire form of a bare address. A plain ASCII address is taken as it is (subscriber addresses were
    validated when stored); anything else goes through email-validator, which gives the IDNA form of an
    internationalised domain. AddressError says what is wrong."""
    addr = str(text).strip()
    if _PLAIN_ADDRESS.fullmatch(addr):
        local, _, domain = addr.rpartition("@")
        return Mailbox(local, domain)
    from email_validator import EmailNotValidError, validate_email

    try:
        valid = validate_email(addr, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as err:
        raise AddressError(f"{addr!r} is not an address that can be sent to: {err}") from err
    return Mailbox(valid.local_part, valid.ascii_domain)


def address(text: str) -> Address:
    """One address from "Name <addr>" or a bare "addr", its display name made header-safe and its domain in
    IDNA form. A value holding several addresses, or none, is an AddressError."""
    parsed = _HEADERS("From", header_text(text))
    found = list(parsed.addresses)
    if len(found) != 1 or not found[0].domain:
        raise AddressError(f"{text!r} must be one address, like \"Blog <news@example.org>\"")
    box = mailbox(found[0].addr_spec)
    return Address(display_name=header_text(found[0].display_name), username=box.local, domain=box.domain)


def domain_of(text: str) -> str:
    """The IDNA domain of an address: what Message-ID and List-Id are made with."""
    return address(text).domain


def header(name: str, value: object) -> bytes:
    """One header line (folded where long, RFC 2047-encoded where not ASCII), CRLF-terminated."""
    return WIRE_POLICY.fold_binary(name, WIRE_POLICY.header_store_parse(name, value)[1])


def address_header(name: str, value: Address) -> bytes:
    """An address header; in UTF-8 (RFC 6532) when the local part is not ASCII, since an encoded word is not
    allowed inside an address."""
    policy = WIRE_POLICY if value.username.isascii() else UTF8_POLICY
    line = policy.fold_binary(name, policy.header_store_parse(name, value)[1])
    return _phrase_fits(name, line, value.display_name, value.addr_spec)


def _phrase_fits(name: str, line: bytes, phrase: str, bracketed: str) -> bytes:
    """`line` when it is within the line limit and keeps <bracketed> literal; otherwise the header made again
    with the phrase as RFC 2047 encoded words, which fold at any length (a name of 2,000 letters without a
    space cannot be folded as it is)."""
    target = f"<{bracketed}>".encode()
    if target in line.replace(b"\r\n ", b" ") and max(len(part) for part in line.split(b"\r\n")) <= MAX_LINE:
        return line
    words = Header(phrase, "utf-8", header_name=name).encode(linesep="\r\n").encode("ascii")
    return f"{name}: ".encode() + words + b"\r\n " + target + b"\r\n"


def link_header(name: str, url: str) -> bytes:
    """A header holding one URL in angle brackets (RFC 2369): never an encoded word, which no client would
    decode there. Spaces and non-ASCII are percent-encoded; a URL cannot be folded, so one that does not fit
    on a line is an AddressError."""
    text = quote(header_text(url), safe="".join(chr(c) for c in range(33, 127) if chr(c) not in '<>"'))
    line = f"{name}: <{text}>".encode("ascii")
    if len(line) > MAX_LINE:
        raise AddressError(f"the {name} link is {len(text)} characters long; a header line holds at most "
                           f"{MAX_LINE}, so shorten [web] base_url")
    return line + b"\r\n"


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
        self.sender = address(sender)
        shared.append(address_header("From", self.sender))
        if reply_to:
            shared.append(address_header("Reply-To", address(reply_to)))
        self.head = b"".join(shared)
        list_id = f"{newsletter_id}.{self.domain}"
        self.tail = (header("Date", format_datetime(date))
                     + _phrase_fits("List-Id", header("List-Id", formataddr((header_text(title), list_id))),
                                    header_text(title), list_id))
        self.boundary = f"=_nl_{secrets.token_hex(12)}".encode()

    def render(self, recipient: Recipient, message_id: str) -> bytes:
        """The exact bytes of one recipient's copy: CRLF line endings, ready for SMTP or an .eml file. An
        address or link that cannot go on the wire is an AddressError, for this copy alone."""
        box = mailbox(recipient.email)
        to = Address(display_name=header_text(recipient.name), username=box.local, domain=box.domain)
        personal = personalise(self.digest, recipient)
        parts = [header("Subject", personal.subject)] if self.personal_subject else []
        parts += [self.head, address_header("To", to), self.tail, header("Message-ID", message_id)]
        if recipient.unsubscribe_url:
            parts.append(link_header("List-Unsubscribe", recipient.unsubscribe_url))
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
