"""The message: one RFC 5322 email for one recipient, multipart/alternative with text first, then HTML.

No header can carry a CR or LF from post or subscriber data: every value goes through `header_text`, and the
standard library's header policy rejects any that would still fold into a new header.
"""

from __future__ import annotations

import email.policy
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr

from .render import Personal, Recipient

WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)


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


def build_message(
    personal: Personal,
    recipient: Recipient,
    *,
    sender: str,
    reply_to: str | None,
    list_id: tuple[str, str],
    date: datetime,
    message_id: str | None = None,
) -> EmailMessage:
    """Assemble the message for one recipient. `list_id` is (newsletter title, newsletter id)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    domain = domain_of(sender)
    msg["Subject"] = header_text(personal.subject)
    msg["From"] = address(sender)
    if reply_to:
        msg["Reply-To"] = address(reply_to)
    msg["To"] = Address(display_name=header_text(recipient.name), addr_spec=header_text(recipient.email))
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id or make_msgid(domain=domain)
    title, newsletter_id = list_id
    msg["List-Id"] = formataddr((header_text(title), f"{newsletter_id}.{domain}"))
    if recipient.unsubscribe_url:
        msg["List-Unsubscribe"] = f"<{header_text(recipient.unsubscribe_url)}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["MIME-Version"] = "1.0"
    msg.set_content(personal.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(personal.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """The exact bytes that go on the wire: CRLF line endings."""
    return msg.as_bytes(policy=WIRE_POLICY)
