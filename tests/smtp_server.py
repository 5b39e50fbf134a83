"""A real SMTP server on loopback (aiosmtpd) for the tests, with faults that can be scripted per recipient."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SmtpSink:
    """Records every message it accepts; `faults[address]` lists what to do with that recipient's next
    attempts: an SMTP reply such as "450 try later" at RCPT, "drop-rcpt" to cut the connection at RCPT,
    "hold-for-session N" to answer RCPT only once session N has begun (so that another connection is opened
    while this one is busy), "drop-after-data" to take the message and cut the connection before answering,
    "close-after-data" to take the message, answer, and then close the idle connection, or "data 554 rejected"
    to answer the end of DATA with that reply (the message is not kept).
    `session_faults[n]` is "drop" to cut session n (1 is the first) at EHLO, or "refuse-login" for `authenticate`
    to refuse every login in it; `logins` records (session, accepted) for each login."""

    received: list[tuple[str, bytes]] = field(default_factory=list)
    envelopes: list[tuple[str, str, list[str]]] = field(default_factory=list)
    sessions: int = 0
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    session_faults: dict[int, str] = field(default_factory=dict)
    logins: list[tuple[int, bool]] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> dict[str, int]:
        tally: dict[str, int] = defaultdict(int)
        for address, _ in self.received:
            tally[address] += 1
        return dict(tally)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        with self.lock:
            self.sessions += 1
            fault = self.session_faults.get(self.sessions)
        if fault == "drop":
            server.transport.close()
            return []
        session.host_name = hostname
        session.number = self.sessions
        return responses

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        """An aiosmtpd authenticator following `logins`; a refusal is answered 535 by the server itself."""
        from aiosmtpd.smtp import AuthResult

        number = getattr(session, "number", 0)
        accepted = self.session_faults.get(number) != "refuse-login"
        with self.lock:
            self.logins.append((number, accepted))
        return AuthResult(success=accepted, handled=False)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        with self.lock:
            fault = self.faults[address].pop(0) if self.faults.get(address) else None
        if fault == "drop-rcpt":
            server.transport.close()
            return "421 closing"
        if fault and fault.startswith("hold-for-session "):
            wanted = int(fault.split()[1])
            deadline = time.monotonic() + 5
            while self.sessions < wanted and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            self.held.append(f"{address} until session {self.sessions}")
            fault = None
        if fault and fault[0].isdigit():
            return fault
        if fault:
            self.faults[address].insert(0, fault)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        address = envelope.rcpt_tos[0]
        with self.lock:
            fault = self.faults[address].pop(0) if self.faults.get(address) else None
            if fault and fault.startswith("data "):
                return fault[len("data "):]
            self.received.append((address, envelope.content))
            self.envelopes.append((envelope.mail_from, address, list(envelope.mail_options)))
        if fault == "drop-after-data":
            server.transport.close()
        elif fault == "close-after-data":  # answer first: the close runs once the reply is written
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on 127.0.0.1 and a free port; keyword arguments go to its Controller (TLS, authentication)."""

    def __init__(self, sink: SmtpSink | None = None, **options):
        self.sink = sink or SmtpSink()
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port, **options)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


class CountingSink:
    """A sink for benchmarks: accepts everything and only counts messages and bytes."""

    def __init__(self):
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages += 1
        self.bytes += len(envelope.content)
        return "250 OK"


def main() -> None:
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="A local SMTP sink that accepts and counts messages.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sink = CountingSink()
    port = args.port or free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    print(port, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()
    print(sink.messages, flush=True)


if __name__ == "__main__":
    main()
