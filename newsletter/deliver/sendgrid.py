"""The SendGrid provider: v3 Mail Send through python_http_client (the `sendgrid` package's HTTP client, set up
as that package sets it up, without importing the rest of it: 9 MB and a third of a second of start-up), up to
1000 personalizations a request.

The HTML and text of a variant go once per request; each subscriber is one personalization carrying their
address, substitutions for their personal fields (escaped for HTML, text and the Subject separately), their
List-Unsubscribe headers, and custom_args naming the issue and delivery. The headers every copy shares
(List-Id, Precedence, X-Auto-Response-Suppress, Feedback-ID) go once, as in the other providers' messages. How answers are classified:
- 202 (or 200 in sandbox mode): sent; X-Message-Id is kept.
- 429: SendGrid saying "slow down": waited out as its headers say, not counted as a failed attempt; and when
  an answer says the quota is spent (X-RateLimit-Remaining: 0), the next request waits for X-RateLimit-Reset,
  so that 429s stay rare instead of being retried.
- 5xx: not taken; retried after Retry-After or X-RateLimit-Reset when given, within max_attempts.
- 400 naming personalizations: those recipients failed with SendGrid's message; the others go again.
- 413: the request was too large; sent again in halves.
- any other 400, 401, 403: the send stops with SendGrid's words, the batch left pending.
- a connection error before the request went out: retried; after it went (no answer): unknown.
The API key comes from SENDGRID_API_KEY and is never printed.
"""

from __future__ import annotations

import dataclasses
import html
import http.client
import json
import os
import re
import threading
import time
import urllib.error
from collections.abc import Callable
from functools import partial

import orjson
import python_http_client
from python_http_client.exceptions import HTTPError

from ..config import SendgridConfig
from ..message import (
    AddressError,
    address,
    domain_of,
    feedback_id,
    header_text,
    mailbox,
    unsubscribe_mailto_uri,
    unsubscribe_values,
)
from ..render import PERSONAL_FIELDS, marker
from .base import Batch, Outcome, Provider, RateLimited, RetryBatch, SplitBatch, StopSend

KEY_VARIABLE = "SENDGRID_API_KEY"
_PERSONALIZATION = re.compile(r"^personalizations\.(\d+)")
_ESCAPES = {"html": lambda v: html.escape(v, quote=True), "text": lambda v: v, "subj": header_text}
#: the body goes as UTF-8 bytes encoded by orjson (about seven times faster than json for a 1.3 MB request);
#: with this content type python_http_client sends the text it is given instead of encoding it again
_JSON = {"Content-Type": "application/json; charset=utf-8"}


def _tag(context: str, field: str) -> str:
    return f"%nl_{context}_{field}%"


def _address(text: str) -> dict[str, str]:
    """A configured address (From, Reply-To) as SendGrid takes it, its domain in IDNA form."""
    found = address(text)
    email = f"{found.username}@{found.domain}"
    return {"email": email, "name": found.display_name} if found.display_name else {"email": email}


def _recipient_email(text: str) -> str:
    """A subscriber's address as SendGrid's schema takes it (format: email, ASCII): an internationalised domain
    in IDNA form; an address whose local part is not ASCII cannot go (AddressError says so)."""
    box = mailbox(text)
    if box.smtputf8:
        raise AddressError(f"{text!r} has a local part that is not ASCII, which SendGrid's Mail Send does not take;"
                           " send to it over SMTP with SMTPUTF8")
    return box.addr_spec


class SendgridProvider(Provider):
    name = "sendgrid"

    def __init__(self, config: SendgridConfig, api_key: str | None = None, clock=time.time):
        self.config = config
        self.clock = clock
        self.resume_at = 0.0  # a Unix time: the quota is spent until then
        # (X-RateLimit-Reset, the least X-RateLimit-Remaining answered for it): answers to requests in flight
        # at once arrive in any order, and workers note them
        self.window: tuple[float, int | None] = (0.0, None)
        self._quota = threading.Lock()
        self.batch_size = config.batch_size
        self.in_flight = config.requests_in_flight
        self.api_key = api_key if api_key is not None else os.environ.get(KEY_VARIABLE)
        if not self.api_key:
            raise StopSend(f"the sendgrid provider needs an API key in the environment variable {KEY_VARIABLE}")
        wrong = next((i for i, c in enumerate(self.api_key) if not ("!" <= c <= "~")), None)
        if wrong is not None:
            # it would fail only once a batch is claimed, in the HTTP header, and leave that batch unknown
            raise StopSend(f"{KEY_VARIABLE} holds a space, line break or non-ASCII character (at position "
                           f"{wrong + 1}), which no API key has; set it to the key exactly as SendGrid shows it")
        self.client = python_http_client.Client(host=config.api_host, version=3, request_headers={
            "Authorization": f"Bearer {self.api_key}", "User-Agent": "newsletter (python_http_client)",
            "Accept": "application/json"})

    def payload(self, batch: Batch, emails: list[str] | None = None) -> dict:
        """The Mail Send request body for one batch (it validates against SendGrid's published schema).
        `emails`: the recipients' addresses as SendGrid takes them, when `send` has them already."""
        digest = batch.digest
        used = {f for f in PERSONAL_FIELDS if marker(f) in digest.html + digest.text + digest.subject}

        def tagged(text: str, context: str) -> str:
            for field in used:
                text = text.replace(marker(field), _tag(context, field))
            return text

        mailto = unsubscribe_mailto_uri(batch.unsubscribe_mailto, batch.newsletter_id)
        domain = domain_of(batch.sender)
        # each substitution's tag, field and escape, worked out once a batch rather than once a recipient
        plan = [(_tag(context, f), f, escape) for context, escape in _ESCAPES.items() for f in used]
        issue_id = str(batch.issue_id)
        if emails is None:
            emails = [_recipient_email(e.recipient.email) for e in batch.envelopes]
        personalizations = []
        for envelope, email in zip(batch.envelopes, emails, strict=True):
            recipient = envelope.recipient
            to = {"email": email}
            if name := header_text(recipient.name):
                to["name"] = name
            personalization = {
                "to": [to],
                "custom_args": {"issue_id": issue_id, "delivery_id": str(envelope.delivery_id)},
            }
            if plan:
                personalization["substitutions"] = {
                    tag: escape(str(getattr(recipient, f) or "")) for tag, f, escape in plan}
            if unsubscribe := unsubscribe_values(recipient.unsubscribe_url, mailto):
                personalization["headers"] = unsubscribe
            personalizations.append(personalization)
        body = {
            "personalizations": personalizations,
            "from": _address(batch.sender),
            "subject": tagged(header_text(digest.subject), "subj") or batch.newsletter_title,
            "content": [{"type": "text/plain", "value": tagged(digest.text, "text")},
                        {"type": "text/html", "value": tagged(digest.html, "html")}],
            "categories": [batch.newsletter_id],
            "headers": {"List-Id": f"{header_text(batch.newsletter_title)} <{batch.newsletter_id}.{domain}>",
                        "Precedence": "bulk", "X-Auto-Response-Suppress": "OOF, AutoReply",
                        "Feedback-ID": feedback_id(batch.newsletter_id, digest.issue.number, domain)},
        }
        if batch.reply_to:
            body["reply_to"] = _address(batch.reply_to)
        return body

    def send(self, batch: Batch) -> list[Outcome]:
        """Send the batch; a recipient whose address SendGrid cannot take fails alone, and the rest go."""
        return self.prepare(batch)()

    def prepare(self, batch: Batch) -> Callable[[], list[Outcome]]:
        """Check the addresses and build and encode the request body here; the call returned only posts it."""
        refused, emails = {}, []
        for i, envelope in enumerate(batch.envelopes):
            try:
                emails.append(_recipient_email(envelope.recipient.email))
            except AddressError as err:
                refused[i] = Outcome.failed(str(err))
        if not refused:
            return partial(self._post, batch, self._body(batch, emails))
        kept = dataclasses.replace(batch, envelopes=tuple(e for i, e in enumerate(batch.envelopes)
                                                          if i not in refused))
        body = self._body(kept, emails) if kept.envelopes else None

        def post() -> list[Outcome]:
            answered = iter(self._post(kept, body) if body is not None else ())
            return [refused[i] if i in refused else next(answered) for i in range(len(batch.envelopes))]
        return post

    def _body(self, batch: Batch, emails: list[str]) -> str:
        return orjson.dumps(self.payload(batch, emails)).decode("utf-8")

    def _post(self, batch: Batch, body: str) -> list[Outcome]:
        try:
            response = self.client.mail.send.post(request_body=body, request_headers=_JSON,
                                                         timeout=self.config.timeout)
        except HTTPError as err:
            self._note_quota(err.headers)
            return self._refused(err, batch)
        except urllib.error.URLError as err:
            raise RetryBatch(f"SendGrid at {self.config.api_host} could not be reached: {err.reason}") from err
        except (OSError, http.client.HTTPException) as err:
            return [Outcome.unknown(f"the request to SendGrid went out but no answer came back: {err!r}")
                    for _ in batch.envelopes]
        self._note_quota(response.headers)
        message_id = _header(response.headers, "X-Message-Id")
        return [Outcome.sent(message_id)] * len(batch.envelopes)  # one frozen value serves them all

    def _note_quota(self, headers) -> None:
        remaining, reset = _header(headers, "X-RateLimit-Remaining"), _header(headers, "X-RateLimit-Reset")
        if not (reset and reset.strip().isdigit()):
            return
        with self._quota:
            if remaining is not None and remaining.strip() == "0":
                self.resume_at = max(self.resume_at, float(reset))
            if remaining is not None and remaining.strip().isdigit():
                left, until = int(remaining), float(reset)
                if until > self.window[0] or self.window[1] is None:
                    self.window = (until, left)
                elif until == self.window[0]:
                    self.window = (until, min(left, self.window[1]))

    def pause(self) -> float:
        return max(0.0, self.resume_at - self.clock())

    def room(self) -> float:
        until, left = self.window
        return float("inf") if left is None or self.clock() >= until else float(left)

    def _refused(self, err: HTTPError, batch: Batch) -> list[Outcome]:
        status = err.status_code
        errors = _errors(err.body)
        words = "; ".join(e.get("message") or "" for e in errors) or str(err.reason)
        if status == 429:
            raise RateLimited(f"SendGrid rate limit (429): {words}", _wait(err.headers, self.clock))
        if status >= 500:
            raise RetryBatch(f"SendGrid answered {status}: {words}", _wait(err.headers, self.clock))
        if status == 413:
            if len(batch.envelopes) == 1:
                return [Outcome.failed(f"SendGrid 413: the message is too large ({words})")]
            raise SplitBatch(words)
        if status == 400:
            named = {}
            for e in errors:
                match = _PERSONALIZATION.match(str(e.get("field") or ""))
                if match is None:
                    named = {}
                    break
                named[int(match.group(1))] = e.get("message") or "rejected"
            if named and all(i < len(batch.envelopes) for i in named):
                return [Outcome.failed(f"SendGrid 400: {named[i]}") if i in named
                        else Outcome.retry("sent again without a rejected recipient", after=0)
                        for i in range(len(batch.envelopes))]
        raise StopSend(f"SendGrid refused the request ({status}): {words}")


def _errors(body: bytes | str | None) -> list[dict]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return []
    found = data.get("errors") if isinstance(data, dict) else None
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def _header(headers, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    return str(value) if value is not None else None


def _wait(headers, clock=time.time) -> float | None:
    """Seconds to wait, from Retry-After (seconds) or X-RateLimit-Reset (a Unix time)."""
    retry_after = _header(headers, "Retry-After")
    if retry_after and retry_after.strip().isdigit():
        return float(retry_after)
    reset = _header(headers, "X-RateLimit-Reset")
    if reset and reset.strip().isdigit():
        return max(0.0, float(reset) - clock())
    return None
