"""The SMTP provider: smtplib, connections kept open across messages, several in parallel.

Each message goes MAIL, RCPT, DATA step by step, so that the answer is classified by where it came: any
refusal or lost connection before the message's final dot is safe to retry (the server took nothing); a
connection lost after the final dot, before the server answered, is `unknown`. A 5xx for a recipient is a
permanent failure; a 4xx is retried later. The password comes from NEWSLETTER_SMTP_PASSWORD, never the config.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import threading
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
        self._local = threading.local()
        self._connections: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def open(self) -> None:
        self._pool = ThreadPoolExecutor(self.config.connections, thread_name_prefix="smtp")
        try:
            self._connect().noop()  # fail early, and plainly, when the server cannot be reached
        except smtplib.SMTPAuthenticationError as err:
            raise StopSend(f"SMTP server {self.where()} refused the login: {_reply(err.smtp_code, err.smtp_error)}"
                           ) from err
        except (OSError, smtplib.SMTPException) as err:
            raise RetryBatch(f"cannot connect to the SMTP server {self.where()}: {err}") from err

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True)
        for connection in self._connections:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()
        self._connections.clear()

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        if cfg.security == "ssl":
            connection = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout,
                                          context=ssl.create_default_context())
        else:
            connection = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            if cfg.security == "starttls":
                connection.starttls(context=ssl.create_default_context())
        if cfg.username:
            connection.login(cfg.username, self.password)
        with self._lock:
            self._connections.append(connection)
        self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            connection.close()

    def send(self, batch: Batch) -> list[Outcome]:
        assert self._pool is not None, "open() the provider first"
        sender = parseaddr(batch.sender)[1]
        outcomes = list(self._pool.map(lambda envelope: self._send_one(batch, sender, envelope), batch.envelopes))
        stops = [o for o in outcomes if o.status == "stop"]
        if stops:
            raise StopSend(stops[0].detail, [Outcome("release") if o.status == "stop" else o for o in outcomes])
        return outcomes

    def _send_one(self, batch: Batch, sender: str, envelope: Envelope) -> Outcome:
        message_id, data = batch.message_bytes(envelope)
        try:
            connection = getattr(self._local, "connection", None) or self._connect()
        except smtplib.SMTPAuthenticationError as err:
            return Outcome("stop", f"SMTP server {self.where()} refused the login: "
                                   f"{_reply(err.smtp_code, err.smtp_error)}")
        except (OSError, smtplib.SMTPException) as err:
            return Outcome.retry(f"cannot connect to {self.where()}: {err}")
        try:
            code, reply = connection.mail(sender)
            if code != 250:
                return self._refused(connection, "MAIL FROM", code, reply, sender_refused=True)
            code, reply = connection.rcpt(envelope.recipient.email)
            if code not in (250, 251):
                return self._refused(connection, "RCPT TO", code, reply)
            code, reply = connection.docmd("DATA")
            if code != 354:
                return self._refused(connection, "DATA", code, reply)
            body = _LEADING_DOT.sub(b"..", data)
            connection.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            return Outcome.retry(f"connection to {self.where()} lost before the message was complete: {err}")
        try:
            code, reply = connection.getreply()
        except (OSError, smtplib.SMTPException) as err:
            self._drop()
            return Outcome.unknown(f"connection to {self.where()} lost after the message was sent, before the "
                                   f"server answered: {err}")
        if code == 250:
            return Outcome.sent(message_id)
        if code == 421:
            self._drop()
        return Outcome.failed(_reply(code, reply)) if code >= 500 else Outcome.retry(_reply(code, reply))

    def _refused(self, connection: smtplib.SMTP, step: str, code: int, reply: bytes,
                 sender_refused: bool = False) -> Outcome:
        detail = f"{step}: {_reply(code, reply)}"
        if code == 421:
            self._drop()
        else:
            try:
                connection.rset()
            except (OSError, smtplib.SMTPException):
                self._drop()
        if code >= 500 and sender_refused:
            return Outcome("stop", f"SMTP server {self.where()} refused the sender: {detail}; "
                                   "check [delivery] from")
        return Outcome.failed(detail) if code >= 500 else Outcome.retry(detail)
