"""The editors' console under /admin/: see the next issues, preview them, send a test copy, follow past issues,
pause, resume and schedule one-off sends. Thin handlers over the library the command line uses (`digest`,
`deliver.run`, `ledger`, `events`, `schedule`), so the console shows and does exactly what the commands do.

Who may use it: with `[web] admin_password_hash` set, whoever signs in with that password (argon2; a signed
session cookie; failed sign-ins limited per client IP). Without it, only a request made on this machine, to
127.0.0.1 or ::1 directly: a request that carries a proxy's forwarding headers is never taken as local, since
a reverse proxy on the same host also connects from loopback. Every form carries the CSRF token.
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import events, ledger, schedule, signup
from ..clock import parse_moment
from ..config import NewsletterConfig
from ..digest import compose, preview_recipient, preview_variant, sample_recipient
from ..errors import NewsletterError, UnknownNameError
from ..render import GMAIL_CLIP_BYTES, personalise
from ..site import read_site
from ..subscribers import normalise_email
from .security import ISSUE_CSP, STRICT_CSP
from .signin import SESSION_COOKIE, SESSION_HOURS, Sessions, password_matches

log = logging.getLogger("newsletter.web")
#: the preview page frames its own digests, and nothing else
CONSOLE_CSP = STRICT_CSP.replace("default-src 'none';", "default-src 'none'; frame-src 'self';")
#: a framed digest: the archive's rules, but this site may frame it
FRAME_CSP = ISSUE_CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'")
#: headers a reverse proxy adds; with any of them, a request is not taken as made on this machine
FORWARDING = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip")
Handler = Callable[[Request, FormData | None], Awaitable[Response]]


def _root(request: Request) -> str:
    return f"{web_app._web(request).prefix}/admin"


def on_loopback(request: Request) -> bool:
    """Whether the request came straight from this machine: a loopback peer and no proxy's headers."""
    if any(name in request.headers for name in FORWARDING):
        return False
    try:
        return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
    except ValueError:
        return False


def _sessions(request: Request) -> Sessions | None:
    password_hash = web_app._web(request).config.web.admin_password_hash
    return Sessions(web_app._web(request).secret, password_hash) if password_hash else None


def _page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    response = web_app.page(request, template, status, form=True, console={
        "root": _root(request), "loopback": _sessions(request) is None}, **context)
    response.headers["Content-Security-Policy"] = CONSOLE_CSP
    return response


def _say(request: Request, status: int, heading: str, *lines: str, back: str | None = None) -> HTMLResponse:
    if status >= 400:
        log.warning("console refused %s %s with %d: %s", request.method, request.url.path, status, " ".join(lines))
    return _page(request, "web/admin/message.html.j2", status, page_title=heading, heading=heading, lines=lines,
                 back=back or f"{_root(request)}/")


def not_set_up(request: Request) -> HTMLResponse:
    return web_app.refuse(
        request, 403, "The editors' console is not set up",
        "No console password is configured, so the console answers only on the machine that runs "
        "`newsletter serve`, at http://127.0.0.1 or http://[::1] directly (not through a proxy).",
        "To use it from elsewhere, run `newsletter admin hash-password`, put the hash it prints in "
        "[web] admin_password_hash of newsletter.toml (or in the environment variable "
        "NEWSLETTER_ADMIN_PASSWORD_HASH), and restart `newsletter serve`.")


def console(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Let only an editor in: signed in, or on loopback when no password is set; every POST needs its CSRF
    token, and a refused one changes nothing."""

    async def guarded(request: Request) -> Response:
        web, sessions = web_app._web(request), _sessions(request)
        if sessions is None and not on_loopback(request):
            return not_set_up(request)
        if sessions is not None and not sessions.valid(request.cookies.get(SESSION_COOKIE), web.now()):
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{_root(request)}/login?{urlencode({'next': target})}", 303)
            return web_app.refuse(request, 403, "Please sign in again",
                                  "Your console session has ended; nothing was changed.")
        form = None
        if request.method == "POST":
            form = await web_app.read_form(request)
            if not web_app.csrf_ok(request, form):
                return _say(request, 403, "Nothing was changed",
                            "This form had expired or did not come from the console. Reload the page and try "
                            "again.")
        return await handler(request, form)

    return guarded


def _newsletter(request: Request) -> NewsletterConfig | None:
    return web_app._web(request).config.newsletters.get(request.path_params["newsletter"])


def _local(moment: datetime, newsletter: NewsletterConfig) -> str:
    return moment.astimezone(newsletter.timezone).strftime("%Y-%m-%d %H:%M %Z")


# --- signing in --------------------------------------------------------------------------------------------

def _next(request: Request, target: str) -> str:
    """Where to go after signing in: a page of the console, never anywhere else."""
    root = _root(request)
    bad = any(c in target for c in "\\\r\n\t") or "//" in target or "/.." in target
    if target.startswith(root + "/") and not bad:
        return target
    return f"{root}/"


async def login_page(request: Request) -> Response:
    if _sessions(request) is None:
        if on_loopback(request):
            return RedirectResponse(f"{_root(request)}/", 303)
        return not_set_up(request)
    return _page(request, "web/admin/login.html.j2", page_title="Sign in",
                 next=_next(request, request.query_params.get("next", "")), error="")


async def login(request: Request) -> Response:
    """Check the password; failures are counted per client IP, and over `admin_login_limit` within
    `admin_login_window` every attempt is refused (the right password too) until the window has passed."""
    web, sessions = web_app._web(request), _sessions(request)
    if sessions is None:
        return await login_page(request)
    form = await web_app.read_form(request)
    target = _next(request, web_app.field(form, "next"))
    if not web_app.csrf_ok(request, form):
        return _say(request, 403, "Please sign in again",
                    "This form had expired or did not come from the console. Reload the page and try again.")
    ip, now, limits = request.client.host if request.client else "", web.now(), web.config.web
    bucket = f"admin-login:{ip}"
    failures = await run_in_threadpool(signup.recent_count, web.store, bucket, limits.admin_login_window, now)
    if failures >= limits.admin_login_limit:
        log.warning("console sign-in refused: client %s is over %d failures", ip, limits.admin_login_limit)
        return _say(request, 429, "Too many failed sign-ins",
                    "Sign-in from your address is paused after too many wrong passwords; try again later.")
    if not await run_in_threadpool(password_matches, limits.admin_password_hash, web_app.field(form, "password")):
        await run_in_threadpool(signup.over_limit, web.store, bucket, limits.admin_login_limit,
                                limits.admin_login_window, now)
        log.warning("console sign-in failed from %s", ip)
        return _page(request, "web/admin/login.html.j2", 403, page_title="Sign in", next=target,
                     error="That password is not the console's.")
    log.info("console sign-in from %s", ip)
    response = RedirectResponse(target, 303)
    response.set_cookie(SESSION_COOKIE, sessions.make(now), max_age=SESSION_HOURS * 3600, httponly=True,
                        secure=web.secure, samesite="strict", path=_root(request))
    return response


async def logout(request: Request) -> Response:
    form = await web_app.read_form(request)
    if not web_app.csrf_ok(request, form):
        return _say(request, 403, "Nothing was changed",
                    "This form had expired or did not come from the console. Reload the page and try again.")
    response = RedirectResponse(f"{_root(request)}/login", 303)
    response.delete_cookie(SESSION_COOKIE, path=_root(request), httponly=True, secure=web_app._web(request).secure,
                           samesite="strict")
    return response


# --- the newsletters and their next issues -----------------------------------------------------------------

def _overview(web, now: datetime) -> tuple[list[dict], int]:
    read = read_site(web.config, now)
    rows = []
    for newsletter in web.config.newsletters.values():
        state = schedule.get_state(web.store, newsletter.id)
        waiting = schedule.list_fires(web.store, newsletter=newsletter.id, statuses=["scheduled"])
        record, digest = preview_variant(web.store, web.config, newsletter, read.posts, now)
        rows.append({
            "newsletter": newsletter, "paused": bool(state and state.paused),
            "next": [_local(f, newsletter) for f in schedule.next_fires(newsletter, now, 3)],
            "one_offs": [{"id": f.id, "at": _local(f.fire_time, newsletter)} for f in reversed(waiting)
                         if f.kind == "one-off"],
            "issue": record, "digest": digest,
            "subject": personalise(digest, sample_recipient(web.config)).subject if digest else "",
        })
    return rows, len(read.problems)


@console
async def home(request: Request, form: FormData | None) -> Response:
    web = web_app._web(request)
    rows, problems = await run_in_threadpool(_overview, web, web.now())
    return _page(request, "web/admin/index.html.j2", page_title="Editors' console", rows=rows, problems=problems,
                 now=web.now().astimezone(web.config.site.timezone).strftime("%Y-%m-%d %H:%M %Z"))


# --- preview and test copy ---------------------------------------------------------------------------------

def _chosen(request: Request) -> tuple[str, list[str]]:
    return request.query_params.get("as", "").strip(), [c for c in request.query_params.getlist("categories") if c]


def _render(web, newsletter: NewsletterConfig, address: str, categories: list[str], now: datetime) -> dict:
    """The preview `preview NEWSLETTER --as ADDRESS --categories ...` writes, and what the page shows beside."""
    posts = read_site(web.config, now).posts
    recipient, held, warning = preview_recipient(web.config, web.store, newsletter.id, address or None)
    record, digest = preview_variant(web.store, web.config, newsletter, posts, now, categories or held)
    offered = list(newsletter.categories) or sorted({c for post in record.posts for c in post.categories})
    found = {"record": record, "digest": digest, "warning": str(warning) if warning else "", "offered": offered,
             "stranger": bool(address) and recipient.unsubscribe_url == sample_recipient(web.config).unsubscribe_url}
    if digest is None:
        return found
    personal = personalise(digest, recipient)
    message = email.message_from_bytes(compose(web.config, digest, recipient, now), policy=email.policy.default)
    size = len(personal.html.encode("utf-8"))
    return {**found, "personal": personal, "headers": list(message.items()), "size": size,
            "clip": GMAIL_CLIP_BYTES, "checks": [p.message for p in digest.checks]}


@console
async def preview(request: Request, form: FormData | None) -> Response:
    return await _preview_page(request)


async def _preview_page(request: Request, status: int = 200, notice: str = "", error: str = "",
                        to: str = "") -> Response:
    web, newsletter = web_app._web(request), _newsletter(request)
    if newsletter is None:
        return _say(request, 404, "No such newsletter", "There is no newsletter of that name in newsletter.toml.")
    address, categories = _chosen(request)
    shown = await run_in_threadpool(_render, web, newsletter, address, categories, web.now())
    query = urlencode([("as", address)] * bool(address) + [("categories", c) for c in categories])
    return _page(request, "web/admin/preview.html.j2", status, page_title=f"Preview of {newsletter.title}",
                 newsletter=newsletter, address=address, categories=categories, shown=shown,
                 frame=f"{_root(request)}/preview/{newsletter.id}/frame" + (f"?{query}" if query else ""),
                 query=query, notice=notice, error=error, to=to)


@console
async def frame(request: Request, form: FormData | None) -> Response:
    """The digest's HTML alone, as the preview page frames it (and as `preview --format html` writes it)."""
    web, newsletter = web_app._web(request), _newsletter(request)
    if newsletter is None:
        return _say(request, 404, "No such newsletter", "There is no newsletter of that name in newsletter.toml.")
    address, categories = _chosen(request)
    shown = await run_in_threadpool(_render, web, newsletter, address, categories, web.now())
    if shown["digest"] is None:
        return _say(request, 404, "Nothing to show", "None of this issue's posts are in these categories.")
    return HTMLResponse(shown["personal"].html, headers={"Content-Security-Policy": FRAME_CSP,
                                                         "X-Frame-Options": "SAMEORIGIN"})


def _test_copy(web, newsletter: NewsletterConfig, address: str, now: datetime) -> str:
    from ..deliver.run import send_test_copy

    posts = read_site(web.config, now).posts
    provider = web.provider_factory()
    report = send_test_copy(web.store, web.config, newsletter, posts, now, provider, address)
    if report.skipped_issue:
        return f"Nothing new for {report.period}: no test copy was sent."
    return (f"A test copy of {report.period} ({report.posts} post(s)) was sent to {address} through "
            f"{provider.name}. Its links unsubscribe nobody.")


@console
async def test_send(request: Request, form: FormData) -> Response:
    web, newsletter = web_app._web(request), _newsletter(request)
    if newsletter is None:
        return _say(request, 404, "No such newsletter", "There is no newsletter of that name in newsletter.toml.")
    to = web_app.field(form, "to").strip()
    try:
        address = normalise_email(to)
    except ValueError as err:
        return await _preview_page(request, 400, error=f"{to!r} cannot be sent to: {err}", to=to)
    try:
        said = await run_in_threadpool(_test_copy, web, newsletter, address, web.now())
    except NewsletterError as err:
        log.warning("console test copy of %s not sent: %s", newsletter.id, err)
        return await _preview_page(request, 502, error=f"The test copy was not sent: {err}", to=to)
    log.info("console test copy of %s sent", newsletter.id)
    return await _preview_page(request, notice=said, to=to)


# --- past issues -------------------------------------------------------------------------------------------

@console
async def issues(request: Request, form: FormData | None) -> Response:
    web, newsletter = web_app._web(request), _newsletter(request)
    if newsletter is None:
        return _say(request, 404, "No such newsletter", "There is no newsletter of that name in newsletter.toml.")
    found = await run_in_threadpool(ledger.list_issues, web.store)
    return _page(request, "web/admin/issues.html.j2", page_title=f"Issues of {newsletter.title}",
                 newsletter=newsletter, issues=[i for i in found if i["newsletter"] == newsletter.id])


def _issue(web, issue_id: int) -> dict | None:
    found = next((i for i in ledger.list_issues(web.store) if i["id"] == issue_id), None)
    if found is None:
        return None
    health = events.issue_health(web.store, issue_id)
    return {**found, "events": events.event_counts(web.store, issue_id), "outcome": events.outcome_line(health),
            "open": [r for r in ledger.open_deliveries(web.store, issue_id)
                     if r["status"] != "skipped" or r["error"]]}


async def _found_issue(request: Request) -> dict | Response:
    web = web_app._web(request)
    found = await run_in_threadpool(_issue, web, request.path_params["issue"])
    if found is None:
        return _say(request, 404, "No such issue", "There is no issue with that number.")
    return found


@console
async def issue(request: Request, form: FormData | None) -> Response:
    found = await _found_issue(request)
    if isinstance(found, Response):
        return found
    return _page(request, "web/admin/issue.html.j2", page_title=f"Issue {found['id']}", issue=found,
                 newsletter=web_app._web(request).config.newsletters.get(found["newsletter"]))


@console
async def retry(request: Request, form: FormData) -> Response:
    """Unknown deliveries back to pending, on a second, confirming POST; the next send of the newsletter (by
    hand or the daemon's next fire) sends them."""
    web = web_app._web(request)
    found = await _found_issue(request)
    if isinstance(found, Response):
        return found
    unknown = found["counts"].get("unknown", 0)
    if web_app.field(form, "confirm") != "yes":
        return _page(request, "web/admin/retry.html.j2", page_title="Send the unknown deliveries again?",
                     issue=found, unknown=unknown)
    changed = await run_in_threadpool(ledger.retry_unknown, web.store, found["id"])
    log.info("console: %d unknown delivery(ies) of issue %d made pending", changed, found["id"])
    return _say(request, 200, f"{changed} delivery(ies) are pending again",
                f"The next send of {found['newsletter']} sends them before anything else: "
                f"`newsletter send {found['newsletter']}` by hand, or the daemon's next fire of it.",
                back=f"{_root(request)}/issue/{found['id']}")


# --- the schedule ------------------------------------------------------------------------------------------

@console
async def pause(request: Request, form: FormData) -> Response:
    web, newsletter = web_app._web(request), _newsletter(request)
    if newsletter is None:
        return _say(request, 404, "No such newsletter", "There is no newsletter of that name in newsletter.toml.")
    paused = request.url.path.endswith("/pause")
    changed = await run_in_threadpool(schedule.set_paused, web.store, web.config, newsletter.id, paused, web.now())
    word = "paused" if paused else "resumed"
    if not changed:
        return _say(request, 200, f"{newsletter.title} was {'paused' if paused else 'not paused'} already",
                    "Nothing changed.")
    log.info("console: %s %s", newsletter.id, word)
    return _say(request, 200, f"{newsletter.title} is {word}",
                "Its fires, one-off sends included, are recorded as paused and not sent; resuming does not "
                "catch them up." if paused else "Its fires are sent again from the next one on.")


@console
async def one_off(request: Request, form: FormData) -> Response:
    web, newsletter = web_app._web(request), _newsletter(request)
    if newsletter is None:
        return _say(request, 404, "No such newsletter", "There is no newsletter of that name in newsletter.toml.")
    text, now = web_app.field(form, "at").strip(), web.now()
    zone = newsletter.timezone.key
    try:
        moment = parse_moment(text, newsletter.timezone)
    except (ValueError, OverflowError):
        return _say(request, 400, "No one-off send was scheduled",
                    f"{text!r} is not a date and time; give one like 2026-01-05T09:30 (in {zone}).")
    if moment <= now:
        return _say(request, 400, "No one-off send was scheduled",
                    f"{_local(moment, newsletter)} is in the past (it is now {_local(now, newsletter)}); give a "
                    "later time.")
    try:
        fire_id = await run_in_threadpool(schedule.add_one_off, web.store, web.config, newsletter.id, moment, now)
    except NewsletterError as err:
        return _say(request, 409, "No one-off send was scheduled", str(err))
    log.info("console: one-off %d of %s at %s", fire_id, newsletter.id, moment.isoformat())
    state = await run_in_threadpool(schedule.get_state, web.store, newsletter.id)
    return _say(request, 200, f"{newsletter.title} will be sent at {_local(moment, newsletter)}",
                f"One-off send {fire_id}: a running `newsletter run` sends it then"
                + (", once the newsletter is resumed (it is paused now)." if state and state.paused else "."))


@console
async def cancel(request: Request, form: FormData) -> Response:
    web = web_app._web(request)
    try:
        fire = await run_in_threadpool(schedule.cancel_one_off, web.store, request.path_params["fire"])
    except UnknownNameError as err:
        return _say(request, 404, "Nothing was cancelled", str(err))
    except NewsletterError as err:
        return _say(request, 409, "Nothing was cancelled", str(err))
    log.info("console: one-off %d of %s cancelled", fire.id, fire.newsletter)
    newsletter = web.config.newsletters.get(fire.newsletter)
    when = _local(fire.fire_time, newsletter) if newsletter else fire.fire_time.isoformat()
    return _say(request, 200, f"The one-off send of {fire.newsletter} at {when} is cancelled")


# Last, so that app.py (whose routes table names these handlers) and this module may be imported in either order.
from . import app as web_app  # noqa: E402
