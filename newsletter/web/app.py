"""The Starlette app of `newsletter serve`: one routes table (at the end), thin handlers that call the library.
The editors' console's handlers are in admin.py; their routes are in the same table.

Handlers read the request, call `preferences`, `signup` or `archive` in a worker thread (the store is
synchronous), and render a template from `web/` in the templates folder. Every refusal answers 4xx with a page
that says why, and is logged without tokens. The clock is a parameter, so tests choose the time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import preferences, signup
from ..config import Config
from ..render import template_environment
from ..store import Store, open_store
from ..tokens import Claims, Tokens
from . import archive
from .security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    ISSUE_CSP,
    BodyLimit,
    Csrf,
    PathPrefix,
    SecurityHeaders,
    origin_of,
    redact,
    safe_next,
)

log = logging.getLogger("newsletter.web")
PUBLIC_CACHE = "public, max-age=300"


class Web:
    """What the handlers share: the config, the store, the signing keys, the templates, the clock."""

    def __init__(self, config: Config, store: Store, clock: Callable[[], datetime],
                 provider_factory: Callable[[], object]):
        self.config, self.store, self.clock, self.provider_factory = config, store, clock, provider_factory
        self.secret = store.secret()
        self.tokens = Tokens(self.secret)
        self.csrf = Csrf(self.secret)
        self.env = template_environment(config.templates)
        self.base = config.web_base_url
        self.prefix = urlsplit(self.base).path.rstrip("/")
        self.links = archive.Links(self.prefix)
        self.secure = self.base.startswith("https://")
        hosts = {urlsplit(self.base).hostname, urlsplit(config.site.url).hostname}
        self.own_hosts = {h.lower() for h in hosts if h}
        self.origins = {o for o in (origin_of(self.base), origin_of(config.site.url),
                                    *(o.lower() for o in config.web.allowed_origins)) if o}

    def now(self) -> datetime:
        return self.clock().astimezone(timezone.utc)

    def site(self) -> dict:
        return {"title": self.config.site.title, "url": self.config.site.absolute_base}


def _web(request: Request) -> Web:
    return request.app.state.web


def page(request: Request, template: str, status: int = 200, *, form: bool = False, **context) -> HTMLResponse:
    """Render a page; a page with a form gets the CSRF token, and the cookie it is checked against."""
    web = _web(request)
    cookie, fresh = request.cookies.get(CSRF_COOKIE), None
    if form and not Csrf.usable(cookie):
        cookie = fresh = Csrf.new_value()
    html = web.env.get_template(template).render(site=web.site(), links=web.links,
                                             csrf=web.csrf.token(cookie) if form else "", **context)
    response = HTMLResponse(html, status)
    if fresh:
        response.set_cookie(CSRF_COOKIE, fresh, httponly=True, secure=web.secure, samesite="lax",
                            path=web.prefix or "/")
    return response


def message(request: Request, status: int, heading: str, *lines: str, back: dict | None = None) -> HTMLResponse:
    return page(request, "web/message.html.j2", status, page_title=heading, heading=heading, lines=lines, back=back)


def refuse(request: Request, status: int, heading: str, *lines: str) -> HTMLResponse:
    """A 4xx page that says why, and a log line that says why without tokens."""
    log.warning("refused %s %s with %d: %s", request.method, redact(request.url.path), status, " ".join(lines))
    return message(request, status, heading, *lines)


async def read_form(request: Request) -> FormData:
    try:
        return await request.form()
    except HTTPException:
        raise
    except Exception as err:  # a malformed body: python-multipart's and Starlette's parse errors vary
        raise HTTPException(400, "The form could not be read.") from err


def field(form: FormData, name: str) -> str:
    """A text field of the form ("" when absent, or when a file was posted in its place)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def fields(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


def csrf_ok(request: Request, form: FormData) -> bool:
    return _web(request).csrf.valid(request.cookies.get(CSRF_COOKIE), field(form, CSRF_FIELD))


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def bad_link(request: Request) -> HTMLResponse:
    return refuse(request, 400, "This link is not valid",
                  "Check that the whole link was copied from the email; a link that was cut or changed does "
                  "nothing.")


def verified(request: Request, purpose: str) -> Claims | None:
    claims = _web(request).tokens.verify(purpose, request.path_params["token"])
    if claims is None or claims.newsletter not in _web(request).config.newsletters:
        return None
    return claims


def test_copy(request: Request) -> HTMLResponse:
    return message(request, 200, "This link is from a test copy",
                   "It was sent with `send --to` and changes nobody's subscription.")


def preferences_url(web: Web, subscriber_id: int, newsletter: str) -> str:
    return f"{web.prefix}/preferences/{web.tokens.make('preferences', subscriber_id, newsletter)}"


# --- unsubscribe -------------------------------------------------------------------------------------------

async def unsubscribe_page(request: Request) -> Response:
    web, claims = _web(request), verified(request, "unsubscribe")
    if claims is None:
        return bad_link(request)
    if claims.is_test:
        return test_copy(request)
    found = await run_in_threadpool(preferences.by_id, web.store, claims.subscriber_id)
    if found is None:
        return refuse(request, 404, "No subscription", "This address is no longer on our list.")
    newsletter = web.config.newsletter(claims.newsletter)
    context = {"email": found.email, "newsletter": newsletter, "page_title": f"Unsubscribe from {newsletter.title}",
               "preferences_url": preferences_url(web, found.id, newsletter.id)}
    if newsletter.id not in found.newsletters:
        return page(request, "web/unsubscribed.html.j2", form=True, **context)
    others = [web.config.newsletters[n].title for n in found.newsletters if n != newsletter.id
              and n in web.config.newsletters]
    return page(request, "web/unsubscribe.html.j2", form=True, others=others, **context)


async def unsubscribe(request: Request) -> Response:
    """RFC 8058 one-click (body `List-Unsubscribe=One-Click`: no cookie, no CSRF token, 200, no redirect), or
    the page's button (CSRF-checked). Both are idempotent and take effect at once."""
    web, claims = _web(request), verified(request, "unsubscribe")
    form = await read_form(request)
    one_click = field(form, "List-Unsubscribe") == "One-Click"
    if claims is None:
        return bad_link(request)
    if not one_click and not csrf_ok(request, form):
        return refuse(request, 403, "Please use the button again",
                      "This form had expired or did not come from this site. Reload the page and press the button.")
    if claims.is_test:
        return PlainTextResponse("A test copy's link: nobody was unsubscribed.\n") if one_click else test_copy(request)
    how = "one-click" if one_click else "page"
    removed = await run_in_threadpool(preferences.unsubscribe, web.store, claims.subscriber_id, claims.newsletter,
                                      how, web.now())
    if removed:
        log.info("subscriber %d left %s (%s)", claims.subscriber_id, claims.newsletter, how)
    if one_click:
        return PlainTextResponse("Unsubscribed.\n")
    found = await run_in_threadpool(preferences.by_id, web.store, claims.subscriber_id)
    newsletter = web.config.newsletter(claims.newsletter)
    return page(request, "web/unsubscribed.html.j2", form=True, email=found.email if found else "",
                newsletter=newsletter, page_title=f"You have left {newsletter.title}",
                preferences_url=preferences_url(web, claims.subscriber_id, newsletter.id))


# --- preferences -------------------------------------------------------------------------------------------

def _choices(web: Web, found, departures: list[preferences.Departure]) -> list[dict]:
    left = {d.newsletter: d.at for d in departures if d.rejoined_at is None}
    zone = web.config.site.timezone
    rows = []
    for newsletter in web.config.newsletters.values():
        held = found.newsletters.get(newsletter.id)
        chosen = {c.casefold() for c in held or ()}
        rows.append({
            "id": newsletter.id, "title": newsletter.title, "subscribed": held is not None,
            "left": left[newsletter.id].astimezone(zone).strftime("%-d %B %Y")
            if held is None and newsletter.id in left else "",
            "categories": [{"name": c, "chosen": c.casefold() in chosen} for c in newsletter.categories],
        })
    return rows


async def _preferences_page(request: Request, subscriber_id: int, notice: str = "", status: int = 200) -> Response:
    web = _web(request)
    found = await run_in_threadpool(preferences.by_id, web.store, subscriber_id)
    if found is None:
        return refuse(request, 404, "No subscription", "This address is no longer on our list.")
    departures = await run_in_threadpool(preferences.departures, web.store, subscriber_id)
    blocked = preferences.refusal(found.status).capitalize() + "." if found.status in preferences.BLOCKED else ""
    if found.status == "unsubscribed" and not notice:
        notice = "Nothing is sent to this address at the moment. Tick a newsletter and save to come back."
    return page(request, "web/preferences.html.j2", status, form=True, email=found.email, notice=notice,
                blocked=blocked, newsletters=_choices(web, found, departures), page_title="Your newsletters")


async def preferences_page(request: Request) -> Response:
    claims = verified(request, "preferences")
    if claims is None:
        return bad_link(request)
    if claims.is_test:
        return test_copy(request)
    return await _preferences_page(request, claims.subscriber_id)


def _categories(web: Web, newsletter_id: str, posted: list[str]) -> tuple[str, ...]:
    offered = {c.casefold(): c for c in web.config.newsletters[newsletter_id].categories}
    chosen = []
    for item in posted:
        name, _, category = item.partition(":")
        match = offered.get(category.casefold()) if name == newsletter_id else None
        if match and match not in chosen:
            chosen.append(match)
    return tuple(chosen)


def _save(web: Web, subscriber_id: int, wanted: set[str], posted: list[str]) -> str:
    found = preferences.by_id(web.store, subscriber_id)
    now = web.now()
    for newsletter in web.config.newsletters:
        held = found.newsletters.get(newsletter)
        if newsletter in wanted:
            categories = _categories(web, newsletter, posted)
            if held is None or tuple(held) != categories or found.status != "active":
                preferences.subscribe(web.store, subscriber_id, newsletter, categories, now)
        elif held is not None:
            preferences.unsubscribe(web.store, subscriber_id, newsletter, "preferences", now)
    return "Saved. Changes apply from the next issue; leaving applies at once."


async def preferences_save(request: Request) -> Response:
    web, claims = _web(request), verified(request, "preferences")
    form = await read_form(request)
    if claims is None:
        return bad_link(request)
    if not csrf_ok(request, form):
        return refuse(request, 403, "Please save again",
                      "This form had expired or did not come from this site. Reload the page and try again.")
    if claims.is_test:
        return test_copy(request)
    action, sid = field(form, "action"), claims.subscriber_id
    try:
        if action == "leave_all":
            left = await run_in_threadpool(preferences.leave_all, web.store, sid, "preferences", web.now())
            log.info("subscriber %d left %s (preferences)", sid, ", ".join(left) or "nothing")
            notice = "You have left every newsletter. Tick one and save to come back."
        elif action == "rejoin" and field(form, "newsletter") in web.config.newsletters:
            newsletter = web.config.newsletters[field(form, "newsletter")]
            await run_in_threadpool(preferences.rejoin, web.store, sid, newsletter.id, tuple(newsletter.categories),
                                    web.now())
            notice = f"Welcome back to {newsletter.title}."
        elif action == "save":
            notice = await run_in_threadpool(_save, web, sid, set(fields(form, "newsletters")),
                                             fields(form, "categories"))
        else:
            return refuse(request, 400, "Nothing was changed", "The form did not say what to do.")
    except preferences.Refused as err:
        log.warning("subscriber %d: preferences refused: %s", sid, err)
        return await _preferences_page(request, sid, str(err).capitalize() + ".", 409)
    return await _preferences_page(request, sid, notice)


# --- sign-up -----------------------------------------------------------------------------------------------

async def subscribe_page(request: Request) -> Response:
    web = _web(request)
    wanted = request.query_params.getlist("newsletter")
    newsletters = [{"id": n.id, "title": n.title, "description": n.description, "categories": n.categories,
                    "archive": n.archive, "checked": n.id in wanted or len(web.config.newsletters) == 1}
                   for n in web.config.newsletters.values()]
    return page(request, "web/subscribe.html.j2", form=True, newsletters=newsletters, email="", name="",
                action=f"{web.prefix}/subscribe", page_title="Subscribe")


def _sign_up(web: Web, form: FormData, ip: str) -> None:
    email, name, chosen = signup.check_form(web.config, field(form, "email"), field(form, "name"),
                                            fields(form, "newsletters"), fields(form, "categories"))
    now = web.now()
    recorded = signup.record(web.store, web.config, email, name, chosen, ip, now)
    if recorded is None:
        return
    url = f"{web.base}/confirm/{signup.confirmation_token(web.secret, recorded)}"
    signup.send_confirmation(web.config, web.provider_factory(), web.env, recorded, url, now)
    log.info("sign-up %d from %s: confirmation sent to %s", recorded.id, ip, signup.mask(email))


async def subscribe(request: Request) -> Response:
    """A sign-up from this site's form (CSRF token) or the blog's (its Origin); ends on "check your inbox", or
    on `next=` when that is on one of our own hosts. The answer is the same whether or not the address was
    subscribed already."""
    web = _web(request)
    form = await read_form(request)
    if form.get("website"):
        return refuse(request, 400, "Your sign-up was not accepted",
                      "A field that people leave empty was filled in, as robots do. If you are a person, please "
                      "use the form again without it.")
    origin = (request.headers.get("origin") or "").lower()
    if not csrf_ok(request, form) and origin not in web.origins:
        return refuse(request, 403, "Your sign-up was not accepted",
                      "The form did not come from this site or the blog. Please sign up from the blog's page.")
    try:
        await run_in_threadpool(_sign_up, web, form, client_ip(request))
    except signup.SignupRefused as err:
        return refuse(request, err.status, "Your sign-up was not accepted", str(err))
    target = safe_next(field(form, "next"), web.base, web.own_hosts) or f"{web.prefix}/subscribe/sent"
    return RedirectResponse(target, 303)


async def subscribe_sent(request: Request) -> Response:
    return message(request, 200, "Check your inbox",
                   "We have sent you an email with a link. Open it and press the button to confirm your "
                   "subscription; nothing is sent to you before that.")


async def _signup_for(request: Request):
    web = _web(request)
    return await run_in_threadpool(signup.find, web.store, web.secret, request.path_params["token"], web.config,
                                   web.now())


async def confirm_page(request: Request) -> Response:
    web = _web(request)
    try:
        found = await _signup_for(request)
    except signup.SignupRefused as err:
        return refuse(request, err.status, "This confirmation link cannot be used", str(err))
    if found.confirmed_at is not None:
        return message(request, 200, "Already confirmed", "This subscription is active.")
    newsletters = [{"title": web.config.newsletters[n].title, "categories": c}
                   for n, c in found.newsletters.items() if n in web.config.newsletters]
    return page(request, "web/confirm.html.j2", form=True, email=found.email, newsletters=newsletters,
                page_title="Confirm your subscription")


async def confirm(request: Request) -> Response:
    web = _web(request)
    form = await read_form(request)
    try:
        found = await _signup_for(request)
    except signup.SignupRefused as err:
        return refuse(request, err.status, "This confirmation link cannot be used", str(err))
    if not csrf_ok(request, form):
        return refuse(request, 403, "Please press the button again",
                      "This form had expired or did not come from this site. Reload the page and try again.")
    if found.confirmed_at is not None:
        return message(request, 200, "Already confirmed", "This subscription is active.")
    try:
        subscriber_id = await run_in_threadpool(signup.confirm, web.store, found, client_ip(request), web.now())
    except signup.SignupRefused as err:
        return refuse(request, err.status, "This subscription cannot be confirmed", str(err))
    log.info("sign-up %d confirmed: subscriber %d", found.id, subscriber_id)
    first = next(iter(found.newsletters))
    return message(request, 200, "You are subscribed",
                   "Thank you: you will get the next issue.",
                   back={"href": preferences_url(web, subscriber_id, first), "label": "Your preferences"})


# --- archive -----------------------------------------------------------------------------------------------

def _public(request: Request):
    newsletter = _web(request).config.newsletters.get(request.path_params["newsletter"])
    if newsletter is None or not newsletter.archive:
        raise HTTPException(404, "There is no public archive of this newsletter.")
    return newsletter


async def archive_list(request: Request) -> Response:
    web, newsletter = _web(request), _public(request)
    found = await run_in_threadpool(archive.entries, web.store, web.config, newsletter, web.env)
    response = HTMLResponse(archive.archive_page(web.env, web.config, newsletter, found, web.links))
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


async def archive_feed(request: Request) -> Response:
    web, newsletter = _web(request), _public(request)
    found = await run_in_threadpool(archive.entries, web.store, web.config, newsletter, web.env)
    body = archive.atom_feed(web.config, newsletter, found, web.links, web.links.feed(newsletter.id))
    return Response(body, media_type="application/atom+xml", headers={"Cache-Control": PUBLIC_CACHE})


async def archive_issue(request: Request) -> Response:
    """An issue as sent: the variant a signed `v=` names (private newsletters too), else the full issue."""
    web = _web(request)
    newsletter_id, period = request.path_params["newsletter"], request.path_params["period"]
    variant = request.query_params.get("v")
    if variant is not None:
        html = await run_in_threadpool(archive.variant_html, web.store, web.secret, newsletter_id, period, variant)
        if html is None:
            raise HTTPException(404, "There is no such issue.")
        return HTMLResponse(html, headers={"Content-Security-Policy": ISSUE_CSP, "Cache-Control": "no-store"})
    newsletter = _public(request)
    entry = await run_in_threadpool(archive.entry_for, web.store, web.config, newsletter, period, web.env)
    if entry is None:
        raise HTTPException(404, "There is no such issue.")
    return HTMLResponse(archive.issue_html(entry),
                        headers={"Content-Security-Policy": ISSUE_CSP, "Cache-Control": PUBLIC_CACHE})


async def stylesheet(request: Request) -> Response:
    return Response(archive.stylesheet(_web(request).config), media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600"})


# --- errors ------------------------------------------------------------------------------------------------

TITLES = {400: "The request could not be read", 404: "Not found", 405: "Not allowed",
          413: "The form is too large"}


async def http_error(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail if exc.status_code != 413 else "A sign-up form is a few hundred bytes; this one is not."
    if exc.status_code == 404 and exc.detail == "Not Found":
        detail = "There is no page here."
    return refuse(request, exc.status_code, TITLES.get(exc.status_code, "The request was refused"), detail)


# --- what providers report back ----------------------------------------------------------------------------

WEBHOOK_PATH = "/hooks/sendgrid"
#: SendGrid posts up to thousands of events at once
WEBHOOK_MAX_BODY = 8 * 1024 * 1024


async def sendgrid_hook(request: Request) -> Response:
    """SendGrid's signed Event Webhook: its ECDSA signature (not a CSRF token, not a cookie) is what makes a
    post genuine; anything unsigned, altered or stale gets 403 and changes nothing."""
    from ..webhooks import handle_sendgrid_webhook

    web = _web(request)
    status, message = await run_in_threadpool(handle_sendgrid_webhook, web.store, web.config, await request.body(),
                                              request.headers, clock=web.now)
    if status != 200:
        log.warning("SendGrid webhook refused (%d): %s", status, message)
    return PlainTextResponse(message + "\n", status_code=status)


from . import admin  # noqa: E402  (the editors' console; its handlers use the helpers above)

ROUTES = [
    Route("/", subscribe_page, methods=["GET"], name="home"),
    Route("/subscribe", subscribe_page, methods=["GET"], name="subscribe_page"),
    Route("/subscribe", subscribe, methods=["POST"], name="subscribe"),
    Route("/subscribe/sent", subscribe_sent, methods=["GET"], name="subscribe_sent"),
    Route("/confirm/{token}", confirm_page, methods=["GET"], name="confirm_page"),
    Route("/confirm/{token}", confirm, methods=["POST"], name="confirm"),
    Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"], name="unsubscribe_page"),
    Route("/unsubscribe/{token}", unsubscribe, methods=["POST"], name="unsubscribe"),
    Route("/preferences/{token}", preferences_page, methods=["GET"], name="preferences_page"),
    Route("/preferences/{token}", preferences_save, methods=["POST"], name="preferences_save"),
    Route("/archive/{newsletter}/", archive_list, methods=["GET"], name="archive"),
    Route("/archive/{newsletter}/feed.atom", archive_feed, methods=["GET"], name="feed"),
    Route("/archive/{newsletter}/{period}/", archive_issue, methods=["GET"], name="issue"),
    Route(f"/assets/{archive.CSS_NAME}", stylesheet, methods=["GET"], name="stylesheet"),
    Route(WEBHOOK_PATH, sendgrid_hook, methods=["POST"], name="sendgrid_hook"),
    Route("/admin/", admin.home, methods=["GET"], name="admin"),
    Route("/admin/login", admin.login_page, methods=["GET"], name="admin_login_page"),
    Route("/admin/login", admin.login, methods=["POST"], name="admin_login"),
    Route("/admin/logout", admin.logout, methods=["POST"], name="admin_logout"),
    Route("/admin/preview/{newsletter}", admin.preview, methods=["GET"], name="admin_preview"),
    Route("/admin/preview/{newsletter}/frame", admin.frame, methods=["GET"], name="admin_frame"),
    Route("/admin/preview/{newsletter}/test", admin.test_send, methods=["POST"], name="admin_test_send"),
    Route("/admin/issues/{newsletter}", admin.issues, methods=["GET"], name="admin_issues"),
    Route("/admin/issue/{issue:int}", admin.issue, methods=["GET"], name="admin_issue"),
    Route("/admin/issue/{issue:int}/retry-unknown", admin.retry, methods=["POST"], name="admin_retry"),
    Route("/admin/schedule/{newsletter}/pause", admin.pause, methods=["POST"], name="admin_pause"),
    Route("/admin/schedule/{newsletter}/resume", admin.pause, methods=["POST"], name="admin_resume"),
    Route("/admin/schedule/{newsletter}/one-off", admin.one_off, methods=["POST"], name="admin_one_off"),
    Route("/admin/one-off/{fire:int}/cancel", admin.cancel, methods=["POST"], name="admin_cancel"),
]


def create_app(config: Config, *, store: Store | None = None, clock: Callable[[], datetime] | None = None,
               provider_factory: Callable[[], object] | None = None) -> Starlette:
    """The app for `config`; `clock` gives the time (default: the real one), `provider_factory` the provider
    confirmation emails go through (default: `[delivery] provider`)."""
    from ..deliver import make_provider

    store = store or open_store(config.database_url)
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error})
    app.state.web = Web(config, store, clock or (lambda: datetime.now(timezone.utc)),
                        provider_factory or (lambda: make_provider(config)))
    app.add_middleware(BodyLimit, max_body=config.web.max_body, larger={WEBHOOK_PATH: WEBHOOK_MAX_BODY})
    app.add_middleware(SecurityHeaders)
    app.add_middleware(PathPrefix, prefix=app.state.web.prefix)  # added last: runs first
    return app
