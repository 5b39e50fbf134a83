"""The SMTP provider: smtplib, connections kept open across messages, several in parallel.

Each message goes MAIL, RCPT, DATA step by step, so that the answer is classified by where it came: any
refusal or lost connection before the message's final dot is safe to retry (the server took nothing); a
connection lost after the final dot, before the server answered, is `unknown`. A 5xx for a recipient is a
permanent failure; a 4xx is retried later. The password comes from NEWSLETTER_SMTP_PASSWORD, never the config.
TLS (STARTTLS or implicit) always verifies the server's certificate, against the system's authorities or
[delivery.smtp] ca_file for a private one.
"""

from __future__ import annotations

import os
import queue
import re
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from email.utils import parseaddr

from ..config import SmtpConfig
from .base import Batch, Envelope, Outcome, Provider, RetryBatch, StopSend

PASSWORD_VARIABLE = "NEWSLETTER_SMTP_PASSWORD"
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


class SmtpProvider(Provider):
    name = "smtp"

    def __init__(self, config: SmtpConfig, batch_size: int = 100, password: str | None = None):
        self.config = config
        self.batch_size = batch_size
        self.password = password if password is not None else os.environ.get(PASSWORD_VARIABLE)
        if config.username and not self.password:
            raise StopSend(f"[delivery.smtp] username is set but {PASSWORD_VARIABLE} is not in the environment")
        self._idle: queue.SimpleQueue[smtplib.SMTP] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None

    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def open(self) -> None:
        self._pool = ThreadPoolExecutor(self.config.connections, thread_name_prefix="smtp")
        try:
            self._idle.put(self._connect())  # fail early, and plainly, when the server cannot be reached
        except smtplib.SMTPAuthenticationError as err:
            raise StopSend(f"SMTP server {self.where()} refused the login: {_reply(err.smtp_code, err.smtp_error)}"
                           ) from err
        except ssl.SSLError as err:
            raise StopSend(f"TLS with the SMTP server {self.where()} failed: {err.reason or err}; for a server "
                           "certificate from a private authority, set [delivery.smtp] ca_file") from err
        except (OSError, smtplib.SMTPException) as err:
            raise RetryBatch(f"cannot connect to the SMTP server {self.where()}: {err}") from err

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True)
        while not self._idle.empty():
            connection = self._idle.get()
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
            if cfg.security == "starttls":
                connection.starttls(context=context)
        connection.ehlo_or_helo_if_needed()
        if cfg.username:
            connection.login(cfg.username, self.password)
        return connection

    def send(self, batch: Batch) -> list[Outcome]:
        assert self._pool is not None, "open() the provider first"
        sender = parseaddr(batch.sender)[1]
        outcomes = list(self._pool.map(lambda envelope: self._send_one(batch, sender, envelope), batch.envelopes))
        stops = [o for o in outcomes if o.status == "stop"]
        if stops:
            raise StopSend(stops[0].detail, [Outcome("release") if o.status == "stop" else o for o in outcomes])
        return outcomes

    def _send_one(self, batch: Batch, sender: str, envelope: Envelope) -> Outcome:
        """Send one message on an idle connection (or a new one), and put the connection back if it is sound."""
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            try:
                connection = self._connect()
            except smtplib.SMTPAuthenticationError as err:
                return Outcome("stop", f"SMTP server {self.where()} refused the login: "
                                       f"{_reply(err.smtp_code, err.smtp_error)}")
            except (OSError, smtplib.SMTPException) as err:
                return Outcome.retry(f"cannot connect to {self.where()}: {err}")
        outcome, sound = self._transaction(connection, batch, sender, envelope)
        if sound:
            self._idle.put(connection)
        else:
            connection.close()
        return outcome

    def _transaction(self, connection: smtplib.SMTP, batch: Batch, sender: str,
                     envelope: Envelope) -> tuple[Outcome, bool]:
        message_id, data = batch.message_bytes(envelope)
        try:
            for step, command, accepted in (("MAIL FROM", lambda: connection.mail(sender), (250,)),
                                            ("RCPT TO", lambda: connection.rcpt(envelope.recipient.email),
                                             (250, 251)),
                                            ("DATA", lambda: connection.docmd("DATA"), (354,))):
                code, reply = command()
                if code not in accepted:
                    return self._refused(connection, step, code, reply)
            body = _LEADING_DOT.sub(b"..", data)
            connection.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        except (OSError, smtplib.SMTPException) as err:
            return Outcome.retry(f"connection to {self.where()} lost before the message was complete: {err}"), False
        try:
            code, reply = connection.getreply()
        except (OSError, smtplib.SMTPException) as err:
            return Outcome.unknown(f"connection to {self.where()} lost after the message was sent, before the "
                                   f"server answered: {err}"), False
        if code == 250:
            return Outcome.sent(message_id), True
        detail = _reply(code, reply)
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
            return Outcome("stop", f"SMTP server {self.where()} refused the sender: {detail}; "
                                   "check [delivery] from"), sound
        return (Outcome.failed(detail) if code >= 500 else Outcome.retry(detail)), sound
