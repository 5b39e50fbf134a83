"""The SMTP provider: smtplib, connections kept open across messages, several in parallel.

Each message goes MAIL, RCPT and DATA step by step, so that the answer is classified by where it came: any
refusal or lost connection before the message's final dot is safe to retry (the server took nothing); a
connection lost after the final dot, before the server answered, is `unknown`. A 5xx for a recipient, or for
the message at the end of DATA, is a permanent failure; a 4xx is retried later.

One recipient's problem never takes down a batch: whatever goes wrong while one message is built or sent
(an address that cannot go on the wire, an exception inside smtplib) becomes that delivery's outcome, and the
other messages go on. Connections are opened lazily, up to [delivery.smtp] connections: when one more cannot be
opened (refused, a login refused, a limit on sessions), the batch carries on over those already open; only when
none is left are the messages it could not send retried, and a batch none of which reached the server is handed
back whole (RetryBatch, or StopSend for a refused login or failed TLS), so that no one is failed for it.

Addresses go out as `message.mailbox` gives them: internationalised domains in IDNA. A local part that is not
ASCII needs SMTPUTF8; when the server does not offer it, that delivery fails with the reason.
The password comes from NEWSLETTER_SMTP_PASSWORD, never the config. TLS (STARTTLS or implicit) always verifies
the server's certificate, against the system's authorities or [delivery.smtp] ca_file for a private one.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

from ..config import SmtpConfig
from ..errors import NewsletterError
from ..message import AddressError, Mailbox, address, mailbox
from ..verp import BounceAddresses
from .base import Batch, Envelope, Outcome, Provider, RetryBatch, StopSend

PASSWORD_VARIABLE = "NEWSLETTER_SMTP_PASSWORD"
_LEADING_DOT = re.compile(rb"(?m)^\.")
#: internal statuses, never reported: the sender was refused (the send stops); no connection could be had
_STOP, _UNREACHED = "stop", "unreached"


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


class _Stale(Exception):
    """A pooled connection turned out closed at its first command: the server took nothing, use another."""


class SmtpProvider(Provider):
    name = "smtp"

    def __init__(self, config: SmtpConfig, batch_size: int = 100, password: str | None = None,
                 bounces: BounceAddresses | None = None):
        self.config = config
        self.bounces = bounces  # a per-delivery envelope sender (VERP), when [delivery.smtp] bounce_address is set
        self.batch_size = batch_size
        self.password = password if password is not None else os.environ.get(PASSWORD_VARIABLE)
        if config.username and not self.password:
            raise StopSend(f"[delivery.smtp] username is set but {PASSWORD_VARIABLE} is not in the environment")
        self._lock = threading.Condition()
        self._idle: list[smtplib.SMTP] = []
        self._live = 0  # connections open, idle or in use
        self._allowed = config.connections  # lowered, for the rest of a batch, when one more cannot be opened
        self._failure: Exception | None = None
        self._pool: ThreadPoolExecutor | None = None

    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def open(self) -> None:
        self._pool = ThreadPoolExecutor(self.config.connections, thread_name_prefix="smtp")
        try:
            connection = self._connect()  # fail early, and plainly, when the server cannot be reached
        except Exception as err:
            raise self._connect_error(err) from err
        with self._lock:
            self._idle.append(connection)
            self._live += 1

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            idle, self._idle = self._idle, []
            self._live -= len(idle)
        for connection in idle:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        if cfg.security == "ssl":
            connection = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=context)
        else:
            connection = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
        try:
            if cfg.security == "starttls":
                connection.starttls(context=context)
            connection.ehlo_or_helo_if_needed()
            if cfg.username:
                connection.login(cfg.username, self.password)
        except BaseException:
            connection.close()
            raise
        return connection

    def _connect_error(self, err: Exception) -> NewsletterError | RetryBatch:
        """What a failure to connect means for the send: a refused login or failed TLS stops it (no retry
        will fix them), an unreachable server is retried."""
        where = self.where()
        if isinstance(err, smtplib.SMTPAuthenticationError):
            return StopSend(f"SMTP server {where} refused the login: {_reply(err.smtp_code, err.smtp_error)}; "
                            f"check [delivery.smtp] username and {PASSWORD_VARIABLE}")
        if isinstance(err, ssl.SSLError):
            return StopSend(f"TLS with the SMTP server {where} failed: {err.reason or err}; for a server "
                            "certificate from a private authority, set [delivery.smtp] ca_file")
        if isinstance(err, smtplib.SMTPNotSupportedError):
            return StopSend(f"SMTP server {where}: {err}; check [delivery.smtp] security and username")
        if isinstance(err, (OSError, smtplib.SMTPException)):
            return RetryBatch(f"cannot connect to the SMTP server {where}: {err}")
        return StopSend(f"cannot connect or log in to the SMTP server {where}: {type(err).__name__}: {err}; "
                        f"check [delivery.smtp] and {PASSWORD_VARIABLE}")

    def send(self, batch: Batch) -> list[Outcome]:
        assert self._pool is not None, "open() the provider first"
        with self._lock:
            self._allowed, self._failure = self.config.connections, None
        try:
            sender = address(batch.sender)
        except AddressError as err:
            raise StopSend(f"the sender {batch.sender!r} cannot go on the wire: {err}; check [delivery] from"
                           ) from err
        envelope_from = Mailbox(sender.username, sender.domain)
        outcomes = list(self._pool.map(lambda envelope: self._send_one(batch, envelope_from, envelope),
                                       batch.envelopes))
        if all(o.status == _UNREACHED for o in outcomes):
            raise self._connect_error(self._failure) from self._failure  # nothing reached the server
        stops = [o for o in outcomes if o.status == _STOP]
        if stops:
            raise StopSend(stops[0].detail, [Outcome("release") if o.status == _STOP else self._final(o)
                                             for o in outcomes])
        return [self._final(o) for o in outcomes]

    def _final(self, outcome: Outcome) -> Outcome:
        if outcome.status == _UNREACHED:
            return Outcome.retry(outcome.detail)
        return outcome

    def _send_one(self, batch: Batch, sender: Mailbox, envelope: Envelope) -> Outcome:
        """Build and send one message; whatever goes wrong becomes this delivery's outcome."""
        try:
            message_id, data = batch.message_bytes(envelope)
            recipient = mailbox(envelope.recipient.email)
            if self.bounces is not None and envelope.delivery_id:
                sender = mailbox(self.bounces.for_delivery(envelope.delivery_id))
        except AddressError as err:
            return Outcome.failed(str(err))
        except Exception as err:
            return Outcome.failed(f"the message could not be built: {type(err).__name__}: {err}")
        for _ in range(2):
            connection, reused = self._checkout()
            if connection is None:
                return Outcome(_UNREACHED, f"no connection to {self.where()} could be opened: {self._failure}")
            try:
                outcome, sound = self._transaction(connection, reused, sender, recipient, message_id, data)
            except _Stale:
                self._checkin(connection, sound=False)
                continue
            except Exception as err:  # _transaction classifies what it can; whatever is left, nobody can tell
                self._checkin(connection, sound=False)
                return Outcome.unknown(f"sending to {self.where()} failed at an unknown point: "
                                       f"{type(err).__name__}: {err}")
            self._checkin(connection, sound)
            return outcome
        return Outcome.retry(f"connections to {self.where()} keep closing before a message")

    def _checkout(self) -> tuple[smtplib.SMTP | None, bool]:
        """An idle connection (reused), else a new one while fewer than allowed are open, else wait for one in
        use. (None, False) when none is open and none can be opened."""
        while True:
            with self._lock:
                while True:
                    if self._idle:
                        return self._idle.pop(), True
                    if self._live < self._allowed:
                        self._live += 1
                        break
                    if self._live == 0:
                        return None, False
                    self._lock.wait()
            try:
                return self._connect(), False
            except Exception as err:
                with self._lock:
                    self._live -= 1
                    self._allowed = self._live  # go on with the connections that work
                    self._failure = err
                    self._lock.notify_all()

    def _checkin(self, connection: smtplib.SMTP, sound: bool) -> None:
        if not sound:
            connection.close()
        with self._lock:
            if sound:
                self._idle.append(connection)
            else:
                self._live -= 1
            self._lock.notify_all()

    def _transaction(self, connection: smtplib.SMTP, reused: bool, sender: Mailbox, recipient: Mailbox,
                     message_id: str, data: bytes) -> tuple[Outcome, bool]:
        """One message on one connection: its outcome, and whether the connection can take another."""
        options: list[str] = []
        if sender.smtputf8 or recipient.smtputf8:
            if not connection.has_extn("smtputf8"):
                box, fix = ((recipient, "or use an ASCII address") if recipient.smtputf8
                            else (sender, "or give [delivery] from an ASCII local part"))
                return Outcome.failed(f"the address {box.addr_spec!r} needs SMTPUTF8 (the local part {box.local!r} "
                                      f"is not ASCII) and the SMTP server {self.where()} does not offer it; send "
                                      f"through a server that does, {fix}"), True
            options = ["SMTPUTF8"] + (["BODY=8BITMIME"] if connection.has_extn("8bitmime") else [])
        try:
            for step, command, accepted in (
                    ("MAIL FROM", lambda: connection.mail(sender.addr_spec, options), (250,)),
                    ("RCPT TO", lambda: connection.rcpt(recipient.addr_spec), (250, 251)),
                    ("DATA", lambda: connection.docmd("DATA"), (354,))):
                try:
                    code, reply = command()
                except (OSError, smtplib.SMTPServerDisconnected):
                    if reused and step == "MAIL FROM":
                        raise _Stale from None
                    raise
                if code not in accepted:
                    return self._refused(connection, step, code, reply)
            body = _LEADING_DOT.sub(b"..", data)
            connection.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        except _Stale:
            raise
        except (OSError, smtplib.SMTPException) as err:
            return Outcome.retry(f"connection to {self.where()} lost before the message was complete: {err}"), False
        except Exception as err:  # the server has no complete message: this one fails, the connection is dropped
            return Outcome.failed(f"sending failed before the message was complete: {type(err).__name__}: "
                                  f"{err}"), False
        try:
            code, reply = connection.getreply()
        except Exception as err:
            return Outcome.unknown(f"connection to {self.where()} lost after the message was sent, before the "
                                   f"server answered: {err}"), False
        if code == 250:
            return Outcome.sent(message_id), True
        detail = f"end of DATA: {_reply(code, reply)}"
        return (Outcome.failed(detail) if code >= 500 else Outcome.retry(detail)), code != 421

    def _refused(self, connection: smtplib.SMTP, step: str, code: int, reply: bytes) -> tuple[Outcome, bool]:
        detail = f"{step}: {_reply(code, reply)}"
        sound = code != 421
        if sound:
            try:
                connection.rset()
            except (OSError, smtplib.SMTPException):
                sound = False
        if code >= 500 and step == "MAIL FROM":
            return Outcome(_STOP, f"SMTP server {self.where()} refused the sender: {detail}; "
                                  "check [delivery] from"), sound
        return (Outcome.failed(detail) if code >= 500 else Outcome.retry(detail)), sound
