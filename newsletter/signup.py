"""Sign-up with double opt-in: nothing is active until the address confirms through a signed, expiring link.

A sign-up is recorded with its time and client IP (the consent evidence `subscribers export` writes) and a
random nonce; the confirmation link signs the sign-up's id and nonce with itsdangerous, and expires
`[web] confirm_expiry` after the sign-up (measured on the clock passed in, never the machine's). Signing up
again with the same address, in any case, never makes a second subscriber and never tells the person at the
form whether the address was subscribed already: every valid sign-up gets the same answer. An address that
bounced or complained is never mailed: its sign-up is recorded, refused quietly, and logged.

Rate limits count in the database, so every `serve` process on one database agrees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from itsdangerous import BadSignature, Signer

from . import preferences
from .config import Config
from .errors import NewsletterError
from .store import Store, as_utc, rate_events, signups, subscribers
from .subscribers import RowChecker, email_key, normalise_email

log = logging.getLogger("newsletter.signup")
NAME_LIMIT = 200


class SignupRefused(NewsletterError):
    """A sign-up or confirmation that is refused, with the HTTP status a page answers it with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Signup:
    id: int
    email: str
    name: str
    newsletters: dict[str, tuple[str, ...]]
    nonce: str
    created_at: datetime
    ip: str
    confirmed_at: datetime | None = None


def _signer(secret: str) -> Signer:
    return Signer(secret, salt="newsletter-confirm", digest_method=hashlib.sha256)


def confirmation_token(secret: str, signup: Signup) -> str:
    return _signer(secret).sign(f"{signup.id}.{signup.nonce}").decode("ascii")


def mask(address: str) -> str:
    """An address fit for a log line: enough to tell cases apart, not enough to harvest."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


def check_form(config: Config, email: str, name: str, newsletters: list[str], categories: list[str]) -> tuple[
        str, str, dict[str, tuple[str, ...]]]:
    """The normalised address, the name and the chosen newsletters with their categories; SignupRefused says
    what is wrong otherwise (with the same rules as a row of an import)."""
    if not email.strip():
        raise SignupRefused("Please give your email address.")
    if len(name) > NAME_LIMIT:
        raise SignupRefused(f"The name is longer than {NAME_LIMIT} characters.")
    chosen = [n for n in dict.fromkeys(n.strip() for n in newsletters) if n]
    if not chosen:
        if len(config.newsletters) != 1:
            raise SignupRefused("Please choose at least one newsletter.")
        chosen = list(config.newsletters)
    unknown = [n for n in chosen if n not in config.newsletters]
    if unknown:
        raise SignupRefused(f"There is no newsletter called {unknown[0]!r}.")
    # a category ticked under a newsletter that was not ticked is dropped, as the form shows it
    kept = [c for c in categories if c.strip() and (":" not in c or c.rpartition(":")[0].strip() in chosen)]
    row = RowChecker(config).check(0, {"email": email, "name": name, "newsletters": ";".join(chosen),
                                       "categories": ";".join(kept)})
    if isinstance(row, str):
        raise SignupRefused(f"This sign-up cannot be accepted: {row}.")
    return row.email, row.name, row.newsletters


def over_limit(store: Store, bucket: str, limit: int, window: timedelta, now: datetime) -> bool:
    """Count one request in `bucket` and say whether the bucket is over `limit` within `window`. Every
    attempt counts, refused ones too, so that hammering keeps a client limited."""
    key = hashlib.sha256(bucket.encode("utf-8")).hexdigest()
    with store.engine.begin() as conn:
        conn.execute(rate_events.delete().where((rate_events.c.bucket == key) & (rate_events.c.at <= now - window)))
        conn.execute(rate_events.insert().values(bucket=key, at=now))
        count = conn.execute(sa.select(sa.func.count()).select_from(rate_events).where(
            (rate_events.c.bucket == key) & (rate_events.c.at > now - window))).scalar_one()
    return count > limit


def recent_count(store: Store, bucket: str, window: timedelta, now: datetime) -> int:
    """How many requests `over_limit` counted in `bucket` within `window`, counting none: for limits that count
    only failures (the editors' console sign-in), checked before the attempt."""
    key = hashlib.sha256(bucket.encode("utf-8")).hexdigest()
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(rate_events).where(
            (rate_events.c.bucket == key) & (rate_events.c.at > now - window))).scalar_one()


def record(store: Store, config: Config, email: str, name: str, newsletters: dict[str, tuple[str, ...]],
           ip: str, now: datetime) -> Signup | None:
    """Check the limits and record a sign-up awaiting confirmation. Returns None when the address must not be
    mailed (it bounced or complained): the caller answers exactly as for a sign-up that was accepted."""
    web = config.web
    if over_limit(store, f"ip:{ip}", web.signup_limit_ip, web.signup_limit_window, now):
        log.warning("sign-up refused: client %s is over %d sign-ups per %s", ip, web.signup_limit_ip,
                    web.signup_limit_window)
        raise SignupRefused("Too many sign-ups from your network; please try again in an hour.", 429)
    if over_limit(store, f"email:{email_key(email)}", web.signup_limit_address, web.signup_limit_window, now):
        log.warning("sign-up refused: %s is over %d sign-ups per %s", mask(email), web.signup_limit_address,
                    web.signup_limit_window)
        raise SignupRefused("Too many sign-ups for this address; please try again in an hour.", 429)
    nonce = secrets.token_hex(16)
    with store.engine.begin() as conn:
        status = conn.execute(sa.select(subscribers.c.status)
                              .where(subscribers.c.email_key == email_key(email))).scalar()
        signup_id = conn.execute(signups.insert().values(
            email=email, email_key=email_key(email), name=name, nonce=nonce, created_at=now, ip=ip,
            newsletters=json.dumps({n: list(c) for n, c in newsletters.items()})).returning(signups.c.id)).scalar_one()
    if status in preferences.BLOCKED:
        log.warning("sign-up %d not mailed: %s is %s", signup_id, mask(email), status)
        return None
    return Signup(signup_id, email, name, newsletters, nonce, now, ip)


def _row(row) -> Signup:
    return Signup(row.id, row.email, row.name, {n: tuple(c) for n, c in json.loads(row.newsletters).items()},
                  row.nonce, as_utc(row.created_at), row.ip, as_utc(row.confirmed_at))


def find(store: Store, secret: str, token: str, config: Config, now: datetime) -> Signup:
    """The sign-up a confirmation token names; SignupRefused (4xx) when the token is forged, altered, for a
    sign-up that no longer exists, or expired."""
    try:
        payload = _signer(secret).unsign(token).decode("ascii")
    except (BadSignature, UnicodeError):
        raise SignupRefused("This confirmation link is not valid: check that it was copied whole.", 400) from None
    signup_id, _, nonce = payload.partition(".")
    if not signup_id.isdigit():
        raise SignupRefused("This confirmation link is not valid.", 400)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(signups).where(signups.c.id == int(signup_id))).first()
    if row is None or not secrets.compare_digest(row.nonce, nonce):
        raise SignupRefused("This confirmation link is not valid.", 400)
    signup = _row(row)
    if signup.confirmed_at is None and now - signup.created_at > config.web.confirm_expiry:
        raise SignupRefused("This confirmation link has expired; please sign up again.", 410)
    return signup


def confirm(store: Store, signup: Signup, ip: str, now: datetime) -> int:
    """Make the sign-up's subscriptions active; returns the subscriber's id. One subscriber per address:
    an existing one (any case) gets the newsletters added or rejoined. Refused for a bounced or complained one."""
    key = email_key(signup.email)
    with store.engine.begin() as conn:
        found = conn.execute(sa.select(subscribers.c.id, subscribers.c.status)
                             .where(subscribers.c.email_key == key)).first()
        if found is None:
            try:
                with conn.begin_nested():
                    subscriber_id = conn.execute(subscribers.insert().values(
                        email=signup.email, email_key=key, name=signup.name, status="active", source="web",
                        created_at=now, updated_at=now).returning(subscribers.c.id)).scalar_one()
            except sa.exc.IntegrityError:  # confirmed twice at once: the other request made them
                subscriber_id = conn.execute(sa.select(subscribers.c.id)
                                             .where(subscribers.c.email_key == key)).scalar_one()
        else:
            subscriber_id = found.id
            if found.status in preferences.BLOCKED:
                raise SignupRefused(preferences.refusal(found.status).capitalize() + ".", 409)
    try:
        for newsletter, categories in signup.newsletters.items():
            preferences.subscribe(store, subscriber_id, newsletter, categories, now)
    except preferences.Refused as err:  # it bounced or complained since the check above
        raise SignupRefused(str(err).capitalize() + ".", 409) from err
    with store.engine.begin() as conn:
        conn.execute(signups.update().where((signups.c.id == signup.id) & signups.c.confirmed_at.is_(None))
                     .values(confirmed_at=now, confirmed_ip=ip))
    return subscriber_id


def pending(store: Store, config: Config, now: datetime) -> list[Signup]:
    """Sign-ups awaiting confirmation whose link has not expired, oldest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(signups).where(
            signups.c.confirmed_at.is_(None) & (signups.c.created_at > now - config.web.confirm_expiry))
            .order_by(signups.c.created_at, signups.c.id)).all()
    return [_row(r) for r in rows]


def of_address(store: Store, address: str) -> list[Signup]:
    """Every sign-up of one address, oldest first: the consent evidence."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(signups).where(signups.c.email_key == email_key(address))
                            .order_by(signups.c.created_at, signups.c.id)).all()
    return [_row(r) for r in rows]


def consent(store: Store) -> dict[str, tuple[datetime, str]]:
    """For each address, the time and IP of its latest confirmed sign-up (for `subscribers export`)."""
    from .subscribers import consent_on_record

    with store.engine.connect() as conn:
        return consent_on_record(conn)


def normalised(address: str) -> str:
    try:
        return normalise_email(address)
    except ValueError:
        return address.strip()


def send_confirmation(config: Config, provider, env, signup: Signup, confirm_url: str, now: datetime) -> None:
    """Mail the confirmation link through the configured provider (the outbox in the demo), reusing the message
    builder of the digests: a one-recipient batch whose "digest" is the confirmation message."""
    from .deliver.base import Batch, Envelope, RetryBatch, StopSend
    from .render import Digest, IssueInfo, Recipient
    from .select import Selection

    first = config.newsletter(next(iter(signup.newsletters)))
    context = {
        "site": {"title": config.site.title, "url": config.site.absolute_base},
        "newsletters": [{"id": n, "title": config.newsletter(n).title, "categories": list(c)}
                        for n, c in signup.newsletters.items()],
        "name": signup.name,
        "confirm_url": confirm_url,
        "expires_days": max(1, config.web.confirm_expiry.days),
    }
    subject = " ".join(env.get_template("web/confirm_email_subject.txt.j2").render(context).split())
    digest = Digest(first.id, IssueInfo(0, now, "signup", ""), Selection((), (), now, now), subject,
                    env.get_template("web/confirm_email.html.j2").render(context),
                    env.get_template("web/confirm_email.txt.j2").render(context), ())
    batch = Batch(0, "signup", first.id, first.title, digest,
                  (Envelope(signup.id, Recipient(signup.email, signup.name)),), config.delivery.from_addr,
                  config.delivery.reply_to, now)
    try:
        with provider:
            outcome = provider.send(batch)[0]
    except (RetryBatch, StopSend) as err:
        log.error("sign-up %d: the confirmation could not be sent through %s: %s", signup.id, provider.name, err)
        raise SignupRefused("The confirmation email could not be sent just now; please try again later.",
                            503) from err
    if outcome.status != "sent":
        log.error("sign-up %d: %s did not send the confirmation: %s", signup.id, provider.name, outcome.detail)
        raise SignupRefused("The confirmation email could not be sent to this address.", 503)
