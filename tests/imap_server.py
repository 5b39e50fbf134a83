"""A small IMAP4rev1 server over TLS on loopback, for the tests of `newsletter bounces --imap`.

It answers the commands a read-only reader sends (CAPABILITY, LOGIN, SELECT and EXAMINE, UID SEARCH ALL,
UID FETCH with BODY.PEEK[], LOGOUT) over one folder of messages, as RFC 3501 describes, and records every
command with its arguments so that a test can see that nothing was stored, flagged or expunged.
"""

from __future__ import annotations

import re
import shlex
import socketserver
import ssl
import threading

_FETCH = re.compile(r"^UID FETCH (\d+) \(BODY\.PEEK\[\]\)$", re.IGNORECASE)


class ImapServer:
    def __init__(self, context: ssl.SSLContext, user: str, password: str, folders: dict[str, list[bytes]]):
        self.user, self.password, self.folders = user, password, folders
        self.commands: list[str] = []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                owner.session(self.rfile, self.wfile)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self):
                sock, address = super().get_request()
                return context.wrap_socket(sock, server_side=True), address

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ImapServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def session(self, rfile, wfile) -> None:
        def say(text: str | bytes) -> None:
            wfile.write(text if isinstance(text, bytes) else text.encode() + b"\r\n")

        say("* OK IMAP4rev1 test server ready")
        authenticated, messages = False, None
        for raw in rfile:
            tag, _, command = raw.decode().rstrip("\r\n").partition(" ")
            self.commands.append(command if not command.upper().startswith("LOGIN") else "LOGIN")
            verb = command.split(" ", 1)[0].upper()
            if verb == "CAPABILITY":
                say("* CAPABILITY IMAP4rev1")
                say(f"{tag} OK CAPABILITY completed")
            elif verb == "LOGIN":
                authenticated = shlex.split(command)[1:] == [self.user, self.password]
                say(f"{tag} OK LOGIN completed" if authenticated else f"{tag} NO [AUTHENTICATIONFAILED] bad login")
            elif verb in ("SELECT", "EXAMINE") and authenticated:
                messages = self.folders.get(command.split(" ", 1)[1].strip('"'))
                if messages is None:
                    say(f"{tag} NO no such folder")
                    continue
                say(f"* {len(messages)} EXISTS")
                say(f"{tag} OK [READ-ONLY] {verb} completed")
            elif command.upper() == "UID SEARCH ALL" and messages is not None:
                say("* SEARCH " + " ".join(str(n) for n in range(1, len(messages) + 1)))
                say(f"{tag} OK SEARCH completed")
            elif (match := _FETCH.match(command)) and messages is not None:
                uid = int(match.group(1))
                body = messages[uid - 1]
                say(f"* {uid} FETCH (UID {uid} BODY[] {{{len(body)}}}\r\n".encode() + body + b")\r\n")
                say(f"{tag} OK FETCH completed")
            elif verb == "LOGOUT":
                say("* BYE logging out")
                say(f"{tag} OK LOGOUT completed")
                return
            else:
                say(f"{tag} BAD not understood here")
