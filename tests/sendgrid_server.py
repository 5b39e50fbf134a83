"""A local HTTP server that answers POST /v3/mail/send as SendGrid does, for the tests and the benchmark.

It checks the API key, validates every request body against SendGrid's own OpenAPI description of the Mail
Send request (tests/data/sendgrid, copied with its licence), enforces the documented limits the schema does
not show, and answers 202 with an X-Message-Id, or SendGrid's `{"errors": [...]}` shapes. A script of faults
(429 with rate-limit headers, 5xx, 413, a 400 naming one recipient, an answer lost after the request was read,
a timeout) can be queued for the next requests. `accepted` records every personalization SendGrid would have
taken, including those of requests whose answer was then lost.

Run alone as a sink: python tests/sendgrid_server.py [--port N] [--no-validate | --validate-every N]
A benchmark reads (and resets) the arrival time of the first request since the last read, and the counts, from
GET /_bench/stats.
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

SPEC = Path(__file__).resolve().parent / "data" / "sendgrid" / "tsg_mail_v3.json"
SCHEMA_POINTER = "#/components/requestBodies/PostMailSend/content/application~1json/schema"


def mail_send_validator():
    """A JSON Schema validator for the Mail Send request body, resolving the description's own $refs."""
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    registry = Registry().with_resource("urn:sendgrid-mail", Resource(contents=spec, specification=DRAFT7))
    return Draft7Validator({"$ref": "urn:sendgrid-mail" + SCHEMA_POINTER}, registry=registry)


@dataclass
class Fault:
    """What to do with one request instead of accepting it."""

    kind: str  # status, lose_answer, timeout, reject_recipient
    status: int = 0
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    email: str = ""
    seconds: float = 0.0


def errors_body(message: str, field_name: str | None = None) -> bytes:
    return json.dumps({"errors": [{"message": message, "field": field_name, "help": None}]}).encode()


class SendgridServer:
    def __init__(self, api_key: str = "SG.test-key", validate: bool = True, max_request_bytes: int = 30_000_000,
                 port: int = 0, delay: float = 0.0, keep: bool = True, rate_limit: int | None = None,
                 clock=time.time, validate_every: int = 1, observe=None):
        self.api_key = api_key
        # At most `rate_limit` requests a whole second of `clock`, as SendGrid's headers announce: every answer
        # carries X-RateLimit-Limit, -Remaining and -Reset, and a request over the limit gets a 429.
        self.rate_limit, self.clock = rate_limit, clock
        self.window, self.used, self.throttled = 0, 0, 0
        self.delay = delay
        self.keep = keep
        self.count = 0
        self.validator = mail_send_validator() if validate else None
        # the 1st, (1+n)th, (1+2n)th... request is validated: a benchmark pays for a share of them, as a real
        # server spends time on every request, without the validator dominating what is measured
        self.validate_every = validate_every
        self.validated = 0
        self.first_arrival: float | None = None
        # called with each well-formed body as it arrives, before it is answered (a test may hold it there)
        self.observe = observe
        self.max_request_bytes = max_request_bytes
        self.faults: deque[Fault] = deque()
        self.accepted: list[dict] = []
        self.requests = 0
        self.violations: list[str] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                owner.handle(self)

            def do_GET(self) -> None:  # noqa: N802
                owner.stats(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that vanish mid-answer are expected
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SendgridServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def queue(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def emails(self) -> list[str]:
        return [p["to"][0]["email"] for p in self.accepted]

    def stats(self, request: http.server.BaseHTTPRequestHandler) -> None:
        """GET /_bench/stats: the first request's arrival (Unix time) since the last read, and the counts."""
        if request.path != "/_bench/stats":
            return self.answer(request, 404, errors_body("not found"))
        with self.lock:
            body = {"first_arrival": self.first_arrival, "requests": self.requests, "personalizations": self.count,
                    "validated": self.validated, "violations": len(self.violations)}
            self.first_arrival = None
        return self.answer(request, 200, json.dumps(body).encode())

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        arrived = time.time()
        with self.lock:
            if self.first_arrival is None:
                self.first_arrival = arrived
            self.requests += 1
            validate = (self.requests - 1) % self.validate_every == 0
            fault = self.faults.popleft() if self.faults else None
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        if request.path != "/v3/mail/send":
            return self.answer(request, 404, errors_body("not found"))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.answer(request, 401, errors_body("The provided authorization grant is invalid, expired, "
                                                         "or revoked", None))
        if length > self.max_request_bytes:
            return self.answer(request, 413, errors_body("request entity too large"))
        try:
            body = json.loads(raw)
        except ValueError:
            return self.answer(request, 400, errors_body("Bad Request", None))
        if self.observe is not None:
            self.observe(body)
        problem = self.check(body, validate)
        if problem:
            with self.lock:
                self.violations.append(problem)
            return self.answer(request, 400, errors_body(problem, None))
        if self.rate_limit is not None:
            with self.lock:
                second = int(self.clock())
                if second != self.window:
                    self.window, self.used = second, 0
                self.used += 1
                limits = {"X-RateLimit-Limit": str(self.rate_limit),
                          "X-RateLimit-Remaining": str(max(0, self.rate_limit - self.used)),
                          "X-RateLimit-Reset": str(second + 1)}
                if self.used > self.rate_limit:
                    self.throttled += 1
                    return self.answer(request, 429, errors_body("too many requests"), limits)
        else:
            limits = {}
        if fault is not None and fault.kind == "status":
            return self.answer(request, fault.status, errors_body(fault.message or "fault"), fault.headers)
        if fault is not None and fault.kind == "reject_recipient":
            for index, personalization in enumerate(body["personalizations"]):
                if personalization["to"][0]["email"] == fault.email:
                    field_name = f"personalizations.{index}.to.0.email"
                    return self.answer(request, 400, errors_body(fault.message or "Does not contain a valid "
                                                                 "address.", field_name))
        with self.lock:
            self.count += len(body["personalizations"])
            for personalization in body["personalizations"] if self.keep else ():
                self.accepted.append({**personalization, "subject": body.get("subject"),
                                      "content": body.get("content"), "from": body.get("from"),
                                      "categories": body.get("categories")})
        if fault is not None and fault.kind == "lose_answer":
            request.close_connection = True
            request.connection.shutdown(2)
            return None
        if fault is not None and fault.kind == "timeout":
            time.sleep(fault.seconds)
        if self.delay:
            time.sleep(self.delay)
        return self.answer(request, 202, b"", {"X-Message-Id": uuid.uuid4().hex[:22], **limits})

    def check(self, body: dict, validate: bool = True) -> str | None:
        """A schema violation, or one of the documented limits the schema does not show."""
        if self.validator is not None and validate:
            with self.lock:
                self.validated += 1
            error = next(iter(self.validator.iter_errors(body)), None)
            if error is not None:
                return f"schema: {error.message} at {'/'.join(str(p) for p in error.absolute_path)}"
        personalizations = body.get("personalizations") or []
        recipients = [to["email"].lower() for p in personalizations for to in p.get("to", [])]
        if len(recipients) > 1000:
            return "too many recipients: at most 1000 per request"
        if len(set(recipients)) != len(recipients):
            return "each email address may appear once per request"
        for p in personalizations:
            if len(json.dumps(p.get("custom_args", {}))) > 10_000:
                return "custom_args must be under 10,000 bytes"
            if len(json.dumps(p.get("substitutions", {}))) > 10_000:
                return "substitutions must be at most 10,000 bytes per personalization"
        return None

    def answer(self, request, status: int, body: bytes, headers: dict | None = None) -> None:
        request.send_response(status)
        if body:
            request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)


def main() -> None:
    parser = argparse.ArgumentParser(description="A local SendGrid Mail Send sink.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="SG.bench-key")
    parser.add_argument("--no-validate", action="store_true", help="Skip schema validation.")
    parser.add_argument("--validate-every", type=int, default=1, metavar="N",
                        help="Validate one request in N against the schema (the first, then every Nth).")
    args = parser.parse_args()
    server = SendgridServer(api_key=args.api_key, validate=not args.no_validate, port=args.port, keep=False,
                            validate_every=args.validate_every)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
