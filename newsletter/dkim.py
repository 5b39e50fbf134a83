"""DKIM: signing each message the outbox and SMTP send, and the DNS records a sender publishes.

RFC 8058 one-click unsubscribe only counts when a DKIM signature covers List-Unsubscribe and
List-Unsubscribe-Post, and DMARC passes only when a signature's domain (or SPF's) aligns with From. The
signature is rsa-sha256 with relaxed/relaxed canonicalisation (RFC 6376), which survives relays that refold
headers or trim trailing spaces, and covers the headers a receiver shows or acts on.

Signing is written here on `cryptography` (OpenSSL) rather than done by dkimpy, whose pure-Python RSA takes
15 to 25 ms a message, ten times what the rest of an SMTP send costs; dkimpy, an independent implementation,
verifies the signatures in the tests. What every copy of a variant shares is done once: the key is loaded
and checked once per process. The private key comes from `[delivery.dkim] key_file` or the environment
variable NEWSLETTER_DKIM_PRIVATE_KEY and is never printed. SendGrid signs with the domain authenticated in
its own settings instead (see the README's Deliverability).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .config import DKIM_KEY_VARIABLE, Config, DkimConfig
from .errors import ConfigError, Problem
from .message import address

#: From is required by RFC 6376; the rest are what a receiver shows or acts on. Each is listed twice in h=
#: ("oversigned"): the second, matching no instance, signs its absence, so a relay cannot add another of it
#: above the signed one (a verifier takes instances from the bottom up).
SIGNED_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                  "List-Unsubscribe-Post", "Reply-To", "MIME-Version", "Content-Type")
_H_TAG = tuple(name for name in SIGNED_HEADERS for _ in range(2))
_WSP_RUN = re.compile(rb"\t[ \t]*| [ \t]+")
_HEADER_START = re.compile(rb"^(?=[^ \t\r\n])", re.MULTILINE)


def sign(message: bytes, dkim_config: DkimConfig) -> bytes:
    """The message (CRLF line endings) with a DKIM-Signature header in front, signed for `dkim_config`'s
    domain and selector. Its t= is the message's own Date, so signing needs no clock."""
    head, separator, body = message.partition(b"\r\n\r\n")
    fields = _header_fields(head + b"\r\n")
    tags = [" v=1;", " a=rsa-sha256;", " c=relaxed/relaxed;", f" d={dkim_config.domain};", f" s={dkim_config.selector};"]
    when = _date_of(fields)
    if when is not None:
        tags.append(f" t={when};")
    tags.append(" h=" + ":".join(_H_TAG) + ";")
    tags.append(f" bh={base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode('ascii')};")
    unsigned = "\r\n".join(_fold(["DKIM-Signature:", *tags])) + "\r\n b="
    hashed = b"".join(_relaxed_header(fields.get(name.lower().encode("ascii"), [])) for name in _H_TAG)
    hashed += _relaxed_header([unsigned.encode("ascii")])[:-2]  # itself last, without b='s value or CRLF
    signature = _key(dkim_config).sign(hashed, padding.PKCS1v15(), hashes.SHA256())
    value = base64.b64encode(signature).decode("ascii")
    folded = "\r\n   ".join(value[i:i + 72] for i in range(0, len(value), 72))
    return (unsigned + folded + "\r\n").encode("ascii") + message


def _header_fields(head: bytes) -> dict[bytes, list[bytes]]:
    """Each header line (with its folded continuations), by lower-case name, in order."""
    fields: dict[bytes, list[bytes]] = {}
    for field in _HEADER_START.split(head):
        if field:
            fields.setdefault(field.split(b":", 1)[0].strip().lower(), []).append(field)
    return fields


def _relaxed_header(instances: list[bytes]) -> bytes:
    """The bottom-most instance not yet signed of a header, taken off `instances`, in relaxed canonical form
    (name lower-cased, unfolded, runs of space made one); nothing once none is left (RFC 6376, 5.4.2)."""
    if not instances:
        return b""
    name, _, value = instances.pop().partition(b":")
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.strip().lower() + b":" + value + b"\r\n"


def _relaxed_body(body: bytes) -> bytes:
    """Relaxed body canonicalisation: no space before a line end, runs of space made one, no trailing empty
    lines, and a final CRLF unless the body is empty."""
    # bytes.replace passes in C, a tenth of what one regex over the body costs
    body = body.replace(b"\t", b" ")
    while b"  " in body:
        body = body.replace(b"  ", b" ")
    body = body.replace(b" \r\n", b"\r\n")
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _fold(tags: list[str]) -> list[str]:
    """The tags on lines of at most 78 characters where they allow, each continuation starting with a space;
    h= is broken after a colon."""
    words = [word for tag in tags for word in re.split(r"(?<=:)", tag)]
    lines = [words.pop(0)]
    for word in words:
        if lines[-1] and len(lines[-1]) + len(word) > 76:
            lines.append(" " if not word.startswith(" ") else "")
        lines[-1] += word
    return lines


def _date_of(fields: dict[bytes, list[bytes]]) -> int | None:
    for field in fields.get(b"date", [])[-1:]:
        try:
            return int(parsedate_to_datetime(field.split(b":", 1)[1].decode("ascii").strip()).timestamp())
        except (TypeError, ValueError, UnicodeDecodeError):
            return None
    return None


def _key(dkim_config: DkimConfig) -> rsa.RSAPrivateKey:
    return _load_key(dkim_config.key_file, os.environ.get(DKIM_KEY_VARIABLE))


@lru_cache(maxsize=4)
def _load_key(key_file: Path | None, from_environment: str | None) -> rsa.RSAPrivateKey:
    """The RSA private key from key_file, else from NEWSLETTER_DKIM_PRIVATE_KEY; loaded once and kept."""
    if key_file is not None:
        where = f"[delivery.dkim] key_file {key_file}"
        try:
            pem = key_file.read_bytes()
        except OSError as err:
            raise ConfigError([Problem(str(key_file), f"delivery.dkim.key_file: cannot be read: {err.strerror}")]
                              ) from err
    elif from_environment:
        where, pem = f"the environment variable {DKIM_KEY_VARIABLE}", from_environment.encode("utf-8")
    else:
        raise ConfigError([Problem("newsletter.toml", f"delivery.dkim: no private key; set key_file or "
                                                      f"{DKIM_KEY_VARIABLE}")])
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None  # the key's text never goes into a message, only where it came from
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise ConfigError([Problem(where, "is not an unencrypted PEM RSA private key of 1024 bits or more "
                                          "(2048 is usual); make one with: openssl genrsa -out dkim.pem 2048")])
    return key


def public_key_record(dkim_config: DkimConfig) -> str:
    """The TXT record's value for `<selector>._domainkey.<domain>`: the public half of the signing key, as
    DER SubjectPublicKeyInfo (RFC 6376, section 3.6.1)."""
    public = _key(dkim_config).public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"


def _txt(value: str) -> str:
    """A TXT value as a zone file writes it: strings of at most 255 characters."""
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


def dns_advice(config: Config) -> list[str]:
    """The DNS records to publish for the From domain, one line each, then advice: DKIM (when configured,
    from the key), SPF for the provider in use, and DMARC. Nothing here looks DNS up."""
    delivery = config.delivery
    domain = address(delivery.from_addr).domain or "example.org"
    lines = []
    if delivery.dkim is not None:
        dkim = delivery.dkim
        lines.append(f"{dkim.selector}._domainkey.{dkim.domain}. TXT {_txt(public_key_record(dkim))}")
        if not (domain == dkim.domain or domain.endswith("." + dkim.domain)):
            lines.append(f"warning: DKIM signs as {dkim.domain} but mail is from {domain}: DMARC needs them to "
                         f"align; set [delivery.dkim] domain = \"{domain}\"")
    elif delivery.provider == "sendgrid":
        lines.append("DKIM for SendGrid: authenticate the domain in SendGrid (Settings, Sender Authentication) "
                     "and publish the CNAME records it shows")
    else:
        lines.append(f"DKIM: not configured; set [delivery.dkim] domain = \"{domain}\", selector and key_file "
                     "to sign what the outbox and SMTP send")
    if delivery.provider == "sendgrid":
        spf = "include:sendgrid.net"
    elif delivery.provider == "smtp" and delivery.smtp.host not in ("localhost", "127.0.0.1", "::1"):
        spf = f"a:{delivery.smtp.host}"
    else:
        spf = "mx"
    lines.append(f"{domain}. TXT \"v=spf1 {spf} ~all\"  (SPF: list every server that sends as {domain}, in one "
                 "record; change ~all to -all once nothing else does)")
    lines.append(f"_dmarc.{domain}. TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}; adkim=r; "
                 "aspf=r\"  (DMARC: start at p=none, read the reports, then move to p=quarantine and p=reject)")
    return lines


class DnsLookupError(Exception):
    """DNS could not be asked (offline, no resolver): nothing can be said about the records."""


def _txt_records(name: str) -> list[str]:
    """The TXT strings published at `name` (each record's strings joined), through dnspython's resolver."""
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=5)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as err:
        raise DnsLookupError(f"{name}: {err}") from err
    return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]


def check_dns(config: Config, lookup=None) -> list[tuple[bool, str]]:
    """Look up what `dns_advice` says to publish: (ok, what was found) for the DKIM key (when signing is
    configured), the SPF record and the DMARC record of the From domain. `lookup(name)` gives a name's TXT
    strings; DnsLookupError when DNS cannot be asked."""
    lookup = lookup or _txt_records
    delivery = config.delivery
    domain = address(delivery.from_addr).domain
    results = []
    if delivery.dkim is not None:
        dkim = delivery.dkim
        name = f"{dkim.selector}._domainkey.{dkim.domain}"
        want = _tag(public_key_record(dkim), "p")
        published = [_tag(record, "p") for record in lookup(name)]
        if want in published:
            results.append((True, f"{name}: the published DKIM key is the signing key"))
        elif published:
            results.append((False, f"{name}: the published DKIM key is not the signing key; publish the record "
                                   "`newsletter check` prints"))
        else:
            results.append((False, f"{name}: no DKIM record; publish the one `newsletter check` prints"))
    spf = [r for r in lookup(domain) if r.lower().startswith("v=spf1")]
    if len(spf) == 1:
        results.append((True, f"{domain}: SPF record {spf[0]!r}"))
    else:
        results.append((False, f"{domain}: {'no SPF record' if not spf else f'{len(spf)} SPF records (only one may be published)'}"))
    dmarc = [r for r in lookup(f"_dmarc.{domain}") if r.lower().startswith("v=dmarc1")]
    results.append((bool(dmarc), f"_dmarc.{domain}: " + (f"DMARC record {dmarc[0]!r}" if dmarc else "no DMARC record")))
    return results


def _tag(record: str, name: str) -> str:
    """One tag's value of a `tag=value; ...` record (DKIM), white space removed; "" when absent."""
    for part in record.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == name:
            return "".join(value.split())
    return ""
