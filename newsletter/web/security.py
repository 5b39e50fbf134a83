"""The web app's security rules, each in one place: response headers, CSRF, redirects, and logs without tokens.

- Every response carries a strict Content-Security-Policy (no scripts at all), `X-Content-Type-Options:
  nosniff`, `Referrer-Policy: no-referrer` (tokens are in the URLs: a click to the blog must not carry them),
  `X-Frame-Options: DENY` (the editors' console's preview frame alone may be framed, by the console), and `Cache-Control: no-store` unless a page says it may be cached (only the public
  archive does).
- CSRF: a random value in an HttpOnly, SameSite=Lax cookie, and in each form the same value signed with the
  store's secret (itsdangerous, compared in constant time). A sign-up form on the blog cannot carry one, so
  `/subscribe` also accepts a post whose Origin is the site's, the web app's, or one of `[web]
  allowed_origins`.
- `next=` redirects only to the web app's or the site's own host.
- Log lines name routes, never tokens or query strings.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from urllib.parse import urljoin, urlsplit

from itsdangerous import BadSignature, Signer
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "nl_csrf"
CSRF_FIELD = "csrf"
STRICT_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
              "frame-ancestors 'none'")
#: an archived issue is the email's HTML: inline styles and remote images, still no scripts and no forms
ISSUE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; form-action 'none'; "
             "base-uri 'none'; frame-ancestors 'none'")
_SECRET_SEGMENT = re.compile(r"/(unsubscribe|preferences|confirm)/[^/?#]*")
log = logging.getLogger("newsletter.web")


def redact(path: str) -> str:
    """A request path fit for a log line: the token segments replaced, the query string dropped."""
    return _SECRET_SEGMENT.sub(lambda m: f"/{m.group(1)}/<token>", path.split("?", 1)[0])


class SecurityHeaders:
    """Adds the security headers to every response (a page may set its own CSP or Cache-Control), and logs
    each request as method, redacted path and status."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", STRICT_CSP)
                headers.setdefault("Cache-Control", "no-store")
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers.setdefault("X-Frame-Options", "DENY")  # the console frames its own previews
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info("%s %s %d", scope["method"], redact(scope["path"]), status)


class PathPrefix:
    """Serve under the path of `[web] base_url` behind any reverse proxy: one that passes the prefix on
    (`/news/unsubscribe/...`) and one that strips it (`/unsubscribe/...`) both reach the same route, and the
    app's own links always carry the prefix."""

    def __init__(self, app: ASGIApp, prefix: str):
        self.app = app
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] == "http":
            path = scope["path"]
            if not (path == self.prefix or path.startswith(self.prefix + "/")):
                path = self.prefix + path
            scope = {**scope, "path": path, "raw_path": path.encode("utf-8"), "root_path": self.prefix}
        await self.app(scope, receive, send)


class Csrf:
    """Double-submit CSRF tokens: the cookie holds a random value, each form the value signed."""

    def __init__(self, secret: str):
        self.signer = Signer(secret, salt="newsletter-csrf", digest_method=hashlib.sha256)

    @staticmethod
    def new_value() -> str:
        return secrets.token_urlsafe(24)

    @staticmethod
    def usable(value: str | None) -> bool:
        """Whether a cookie sent back looks like one we made (anything else is replaced with a new one)."""
        return bool(value) and len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)

    def token(self, value: str) -> str:
        return self.signer.sign(value).decode("utf-8")

    def valid(self, cookie: str | None, token: str | None) -> bool:
        if not self.usable(cookie) or not token:
            return False
        try:
            signed = self.signer.unsign(token).decode("utf-8")
        except (BadSignature, UnicodeError):
            return False
        return secrets.compare_digest(signed.encode("utf-8"), cookie.encode("utf-8"))


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def safe_next(target: str | None, base_url: str, own_hosts: set[str]) -> str | None:
    """Where a `next=` may send the browser: an http(s) URL on one of our own hosts, or a path on the web app;
    None for anything else (another host, a scheme-relative //host, javascript:, backslashes, line breaks)."""
    if not target or any(c in target for c in "\\\r\n\t") or len(target) > 2000:
        return None
    if target.startswith("/") and not target.startswith("//"):
        return urljoin(origin_of(base_url) + "/", target)
    try:
        parts = urlsplit(target)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if parts.scheme in ("http", "https") and host and host.lower() in own_hosts:
        return target
    return None


class BodyLimit:
    """Refuse request bodies over `[web] max_body` bytes, declared or streamed, with 413: the error reaches the
    app's error page (Starlette's own limit answers in plain text)."""

    def __init__(self, app: ASGIApp, max_body: int, larger: dict[str, int] | None = None):
        self.app = app
        self.max_body = max_body
        self.larger = larger or {}  # paths that take more (a provider's batch of events)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        path, root = scope.get("path", ""), scope.get("root_path", "")
        limit = self.larger.get(path[len(root):] if root and path.startswith(root) else path, self.max_body)
        total = 0

        async def limited() -> Message:
            nonlocal total
            if declared.isdigit() and int(declared) > limit:
                raise HTTPException(413)
            message = await receive()
            total += len(message.get("body", b""))
            if total > limit:
                raise HTTPException(413)
            return message

        await self.app(scope, limited, send)
