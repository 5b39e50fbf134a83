"""newsletter.toml: one documented schema with defaults, every problem reported at once.

Paths are relative to the config file. When `[site] source` is a Jekyll site, the keys Jekyll owns
(timezone, url, baseurl, permalink, excerpt_separator, future, title) are read from its `_config.yml`
unless newsletter.toml sets them. Secrets never live here: they come from the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from . import permalink as permalink_module
from .clock import parse_duration
from .errors import ConfigError, Problem, UnknownNameError
from .frontyaml import ImpossibleValue, load_yaml

NEWSLETTER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_SUBJECT = "{{ newsletter.title }}: {{ issue.date.strftime('%-d %B %Y') }}"

# Every key the file may hold, with its default; None means "derived" (see the README's table).
SITE_KEYS = {
    "title": None,
    "url": None,
    "baseurl": None,
    "source": ".",
    "timezone": None,
    "permalink": None,
    "excerpt_separator": None,
    "future": None,
    "cache": ".newsletter-cache",
}
NEWSLETTER_KEYS = {
    "title": None,
    "description": "",
    "categories": [],
    "exclude_categories": [],
    "max_posts": 10,
    "window": "7d",
    "subject": DEFAULT_SUBJECT,
    "template": "digest",
    "schedule": None,
    "timezone": None,
    "catch_up": "6h",
    "max_lookback": "4w",
    "archive": True,
}
DELIVERY_KEYS = {
    "from": None,
    "reply_to": None,
    "provider": "outbox",
    "outbox": "outbox",
    "batch_size": 100,
    "max_attempts": 5,
    "retry_delay": 30.0,
    "deadline": "1h",
    "soft_bounce_limit": 3,
    "smtp": {},
    "sendgrid": {},
    "dkim": {},
}
SMTP_KEYS = {"host": "localhost", "port": None, "security": "starttls", "username": None, "connections": 2,
             "timeout": 30.0, "ca_file": None, "bounce_address": None}
SENDGRID_KEYS = {"api_host": "https://api.sendgrid.com", "timeout": 30.0, "batch_size": 1000, "requests_in_flight": 3,
                 "webhook_public_key": None, "webhook_tolerance": "10m"}
DKIM_KEYS = {"domain": None, "selector": None, "key_file": None}
DKIM_KEY_VARIABLE = "NEWSLETTER_DKIM_PRIVATE_KEY"
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
DATABASE_KEYS = {"url": None}
RENDER_KEYS = {"templates": "templates"}
WEB_KEYS = {
    "base_url": None,
    "unsubscribe_mailto": None,
    "confirm_expiry": "7d",
    "signup_limit_address": 5,
    "signup_limit_ip": 20,
    "signup_limit_window": "1h",
    "max_body": 16384,
    "allowed_origins": [],
    "forwarded_allow_ips": "127.0.0.1",
    "admin_password_hash": None,
    "admin_login_limit": 5,
    "admin_login_window": "15m",
}
SECTIONS = {"site": SITE_KEYS, "delivery": DELIVERY_KEYS, "database": DATABASE_KEYS, "render": RENDER_KEYS,
            "web": WEB_KEYS}
PROVIDERS = ("outbox", "smtp", "sendgrid")
SUBSCRIBER_STATUSES = ("active", "unsubscribed", "bounced", "complained")
SECURITY = {"none": 25, "starttls": 587, "ssl": 465}
JEKYLL_DEFAULTS = {
    "title": "",
    "url": "",
    "baseurl": "",
    "timezone": "UTC",
    "permalink": "date",
    "excerpt_separator": "\n\n",
    "future": False,
}


@dataclass(frozen=True)
class SiteConfig:
    title: str
    url: str
    baseurl: str
    source: Path
    timezone: ZoneInfo
    permalink: str
    excerpt_separator: str
    future: bool
    is_jekyll: bool
    exclude: tuple[str, ...] = ()
    #: Jekyll's `defaults:` entries that may apply to posts, in the order listed, as (scope path as written,
    #: whether the scope names a type, values); which apply to a post and in what order is site.py's job
    defaults: tuple[tuple[str, bool, dict], ...] = field(default=(), compare=False)
    #: the folder of the post cache (see postcache.py); None reads every post file every time
    cache: Path | None = field(default=None, compare=False)

    @property
    def absolute_base(self) -> str:
        """The site's URL with its baseurl, without a trailing slash: what post URLs are appended to."""
        return (self.url.rstrip("/") + "/" + self.baseurl.strip("/")).rstrip("/")


@dataclass(frozen=True)
class NewsletterConfig:
    id: str
    title: str
    description: str
    categories: tuple[str, ...]
    exclude_categories: tuple[str, ...]
    max_posts: int
    window: timedelta
    subject: str
    template: str
    #: the zone `schedule` is read in and a manual send's day is taken in (default: the site's)
    timezone: ZoneInfo = ZoneInfo("UTC")
    #: 5-field cron expressions; empty: only ever sent by hand
    schedule: tuple[str, ...] = ()
    #: how late a missed fire may still go out
    catch_up: timedelta = timedelta(hours=6)
    #: how far back an issue may reach when the previous one was long ago
    max_lookback: timedelta = timedelta(weeks=4)
    #: whether its past issues are public (`/archive/<id>/`, the Atom feed, `newsletter archive`)
    archive: bool = True


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    connections: int = 2
    timeout: float = 30.0
    ca_file: Path | None = None
    #: the envelope sender bounces come back to, made per delivery as `local+<signed id>@domain` (VERP)
    bounce_address: str | None = None


@dataclass(frozen=True)
class SendgridConfig:
    api_host: str = "https://api.sendgrid.com"
    timeout: float = 30.0
    batch_size: int = 1000
    #: how many Mail Send requests may be out at once: the next batch is prepared while they are answered
    requests_in_flight: int = 3
    #: the base64 ECDSA public key SendGrid shows for its signed Event Webhook
    webhook_public_key: str | None = None
    #: how old a webhook post's signed timestamp may be
    webhook_tolerance: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class DkimConfig:
    """Who signs: d= and s= of the signature. The private key is read from `key_file`, or else from the
    environment variable NEWSLETTER_DKIM_PRIVATE_KEY (see dkim.py); it is never kept here."""

    domain: str
    selector: str
    key_file: Path | None = None


@dataclass(frozen=True)
class DeliveryConfig:
    from_addr: str
    reply_to: str | None
    provider: str = "outbox"
    outbox: Path = Path("outbox")
    batch_size: int = 100
    max_attempts: int = 5
    retry_delay: float = 30.0
    #: how long a send may wait out rate limits and retries before it stops with the rest pending
    deadline: timedelta = timedelta(hours=1)
    #: soft bounces in a row (one per delivery) after which a subscriber counts as bounced
    soft_bounce_limit: int = 3
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    sendgrid: SendgridConfig = field(default_factory=SendgridConfig)
    #: DKIM signing of the messages the outbox and SMTP send; None when [delivery.dkim] is not set
    dkim: DkimConfig | None = None


@dataclass(frozen=True)
class WebConfig:
    """`newsletter serve`: sign-up limits, the confirmation link's lifetime, the origins forms may come from."""

    confirm_expiry: timedelta = timedelta(days=7)
    signup_limit_address: int = 5
    signup_limit_ip: int = 20
    signup_limit_window: timedelta = timedelta(hours=1)
    max_body: int = 16384
    allowed_origins: tuple[str, ...] = ()
    forwarded_allow_ips: str = "127.0.0.1"
    #: the argon2 hash of the editors' console password (`newsletter admin hash-password`); None: the console
    #: answers only on loopback
    admin_password_hash: str | None = None
    #: failed console sign-ins one client IP may make per admin_login_window
    admin_login_limit: int = 5
    admin_login_window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Config:
    path: Path | None
    site: SiteConfig
    newsletters: dict[str, NewsletterConfig]
    delivery: DeliveryConfig
    templates: Path
    web_base_url: str
    database_url: str = "sqlite://"
    web_base_url_set: bool = False
    warnings: list[Problem] = field(default_factory=list)
    #: the mailbox List-Unsubscribe offers as a mailto: target too, when set
    unsubscribe_mailto: str | None = None
    web: WebConfig = field(default_factory=WebConfig)

    def newsletter(self, newsletter_id: str) -> NewsletterConfig:
        try:
            return self.newsletters[newsletter_id]
        except KeyError:
            known = ", ".join(sorted(self.newsletters)) or "none are configured"
            raise UnknownNameError(
                f"{self.where} has no newsletter {newsletter_id!r} under [newsletters] (known: {known})"
            ) from None

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "newsletter.toml"


class _Collector:
    """Gathers problems while the config is read, so all of them are reported together."""

    def __init__(self, where: str):
        self.where = where
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, key: str, message: str) -> None:
        self.errors.append(Problem(self.where, f"{key}: {message}"))

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(Problem(self.where, f"{key}: {message}"))

    def typed(self, table: dict, section: str, key: str, kind: type | tuple, default: Any) -> Any:
        value = table.get(key, default)
        if value is not default and not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.error(f"{section}.{key}", f"must be a {names}, not {type(value).__name__} {value!r}")
            return default
        return value

    def unknown(self, table: dict, section: str, known: dict) -> None:
        for key in table:
            if key not in known:
                self.warn(f"{section}.{key}", f"unknown key, ignored (known keys: {', '.join(known)})")


def load_config(path: Path | None, *, source_override: Path | None = None) -> Config:
    """Read and check newsletter.toml; with `path` None, use defaults (a bare `--source` is enough)."""
    raw: dict[str, Any] = {}
    base = Path.cwd()
    where = "newsletter.toml"
    if path is not None:
        where = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([Problem(where, "no such config file; pass --config PATH or --source PATH")]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError([Problem(where, f"not valid TOML: {err}")]) from err
        base = path.resolve().parent
    check = _Collector(where)
    tables = {}
    for section, known in SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            check.error(section, "must be a table like [" + section + "]")
            table = {}
        check.unknown(table, section, known)
        tables[section] = table
    for key in raw:
        if key not in SECTIONS and key != "newsletters":
            check.warn(key, f"unknown section or key, ignored (known: {', '.join([*SECTIONS, 'newsletters'])})")

    site = _read_site(tables["site"], base, source_override, check)
    newsletters = _read_newsletters(raw.get("newsletters", {}), site, check)
    delivery = _read_delivery(tables["delivery"], site, base, check)
    templates = base / check.typed(tables["render"], "render", "templates", str, "templates")
    web_base_url = os.environ.get("NEWSLETTER_WEB_BASE_URL") or check.typed(tables["web"], "web", "base_url", str,
                                                                             None)
    if web_base_url and not re.match(r"^https?://[^/\s]+", web_base_url):
        check.error("web.base_url", f"{web_base_url!r} must be an absolute http(s) URL")
    unsubscribe_mailto = _mailbox(tables["web"], "web", "unsubscribe_mailto", check)
    database_url = os.environ.get("NEWSLETTER_DATABASE_URL") or check.typed(
        tables["database"], "database", "url", str, None) or f"sqlite:///{base / 'newsletter.db'}"
    web = _read_web(tables["web"], check)
    if check.errors:
        raise ConfigError(check.errors + check.warnings)
    return Config(path, site, newsletters, delivery, templates, (web_base_url or site.absolute_base).rstrip("/"),
                  database_url, bool(web_base_url), check.warnings, unsubscribe_mailto, web)


def _jekyll_config(source: Path, check: _Collector) -> dict[str, Any] | None:
    config_file = source / "_config.yml"
    if not config_file.is_file():
        return None
    try:
        data = load_yaml(config_file.read_text(encoding="utf-8-sig")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        check.error("site.source", f"{config_file} cannot be read: {err}")
        return {}
    except ImpossibleValue as err:  # an impossible date
        where = f" (line {err.line - 1})" if err.line else ""  # the reader counts the front matter's opening ---
        check.error("site.source", f"{config_file}{where} cannot be used: {err}")
        return {}
    if not isinstance(data, dict):
        check.error("site.source", f"{config_file} is not a YAML mapping")
        return {}
    return data


def _read_site(table: dict, base: Path, source_override: Path | None, check: _Collector) -> SiteConfig:
    source_text = check.typed(table, "site", "source", str, ".")
    source = source_override.resolve() if source_override else (base / source_text).resolve()
    if not source.is_dir():
        check.error("site.source", f"{source} is not a folder of posts or a Jekyll site")
    jekyll = _jekyll_config(source, check) if source.is_dir() else None
    is_jekyll = jekyll is not None or (source / "_posts").is_dir()
    inherited = {**JEKYLL_DEFAULTS, **{k: v for k, v in (jekyll or {}).items() if k in JEKYLL_DEFAULTS}}

    def value(key: str, kind: type | tuple) -> Any:
        if key in table:
            return check.typed(table, "site", key, kind, JEKYLL_DEFAULTS[key])
        found = inherited[key]
        if found is None:
            return JEKYLL_DEFAULTS[key]
        if not isinstance(found, kind):
            check.error(f"site.{key}", f"{key} in {source / '_config.yml'} must be a {kind}, not {found!r}")
            return JEKYLL_DEFAULTS[key]
        return found

    zone = _zone(value("timezone", str), "site.timezone", check, ZoneInfo("UTC"))
    url = value("url", str)
    if url and not re.match(r"^https?://[^/\s]+", url):
        check.error("site.url", f"{url!r} must be an absolute http(s) URL, like https://blog.example.org")
    permalink = value("permalink", str)
    if not permalink:
        check.error("site.permalink", "must not be empty; use date, pretty, ordinal, none or a pattern")
    elif unknown := permalink_module.unknown_placeholders(permalink_module.template_for(permalink)):
        check.error("site.permalink", f"{permalink!r} uses :{', :'.join(unknown)}, which Jekyll does not know")
    return SiteConfig(
        title=value("title", str) or source.name,
        url=url.rstrip("/"),
        baseurl=value("baseurl", str),
        source=source,
        timezone=zone,
        permalink=permalink or "date",
        excerpt_separator=value("excerpt_separator", str),
        future=value("future", bool),
        is_jekyll=is_jekyll,
        exclude=_jekyll_exclude(jekyll, source, check),
        defaults=_jekyll_post_defaults(jekyll),
        cache=_cache_folder(table, base, check),
    )


def _cache_folder(table: dict, base: Path, check: _Collector) -> Path | None:
    """[site] cache, relative to the config file; NEWSLETTER_CACHE_DIR overrides it; empty turns it off."""
    folder = os.environ.get("NEWSLETTER_CACHE_DIR")
    if folder is None:
        folder = check.typed(table, "site", "cache", str, SITE_KEYS["cache"])
    return base / folder if folder else None


def _jekyll_post_defaults(jekyll: dict[str, Any] | None) -> tuple[tuple[str, bool, dict], ...]:
    """The `defaults:` sets Jekyll would consider for posts: a mapping of values, scoped to no type, or to
    `posts` (or the deprecated `post`). Sets Jekyll refuses (values not a mapping) are left out as it does."""
    found = []
    for entry in (jekyll or {}).get("defaults") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
            continue
        scope = entry.get("scope") if isinstance(entry.get("scope"), dict) else {}
        kind = scope.get("type")
        if kind is not None and str(kind) not in ("posts", "post"):
            continue
        path = scope.get("path")
        found.append((path if isinstance(path, str) else "", kind is not None, entry["values"]))
    return tuple(found)


def _jekyll_exclude(jekyll: dict[str, Any] | None, source: Path, check: _Collector) -> tuple[str, ...]:
    """Jekyll's `exclude` list (paths or globs relative to the site), less what `include` brings back."""
    if not jekyll:
        return ()
    listed = jekyll.get("exclude") or []
    kept = jekyll.get("include") or []
    if not isinstance(listed, list) or not isinstance(kept, list):
        check.error("site.source", f"exclude and include in {source / '_config.yml'} must be lists")
        return ()
    return tuple(str(p).strip("/") for p in listed if p not in kept and str(p).strip("/"))


def _string_list(table: dict, section: str, key: str, check: _Collector) -> tuple[str, ...]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        check.error(f"{section}.{key}", f"must be a list of strings, like [\"Technology\"], not {value!r}")
        return ()
    return tuple(str(v) for v in value)


def _read_newsletters(raw: Any, site: SiteConfig, check: _Collector) -> dict[str, NewsletterConfig]:
    if not isinstance(raw, dict):
        check.error("newsletters", "must be tables like [newsletters.weekly]")
        return {}
    found = {}
    for newsletter_id, table in raw.items():
        section = f"newsletters.{newsletter_id}"
        if not isinstance(table, dict):
            check.error(section, "must be a table")
            continue
        if not NEWSLETTER_ID.match(newsletter_id):
            check.error(section, "the id must be lower-case letters, digits, '-' or '_' (it names files)")
        check.unknown(table, section, NEWSLETTER_KEYS)
        max_posts = check.typed(table, section, "max_posts", int, 10)
        if max_posts < 1:
            check.error(f"{section}.max_posts", f"must be at least 1, not {max_posts}")
        window = _duration(table, section, "window", "7d", check)
        subject = check.typed(table, section, "subject", str, DEFAULT_SUBJECT)
        zone = _zone(check.typed(table, section, "timezone", str, None), f"{section}.timezone", check,
                     site.timezone)
        catch_up = _duration(table, section, "catch_up", "6h", check)
        max_lookback = _duration(table, section, "max_lookback", "4w", check)
        if max_lookback < window:
            check.error(f"{section}.max_lookback", f"must be at least the window ({table.get('window', '7d')})")
        schedule = _schedule(table, section, zone, check)
        template = check.typed(table, section, "template", str, "digest")
        if "/" in template or "\\" in template or template.startswith("."):
            check.error(f"{section}.template", f"{template!r} must be a template name under templates/")
        found[newsletter_id] = NewsletterConfig(
            id=newsletter_id,
            title=check.typed(table, section, "title", str, None) or site.title,
            description=check.typed(table, section, "description", str, ""),
            categories=_string_list(table, section, "categories", check),
            exclude_categories=_string_list(table, section, "exclude_categories", check),
            max_posts=max_posts,
            window=window,
            subject=subject,
            template=template,
            timezone=zone,
            schedule=schedule,
            catch_up=catch_up,
            max_lookback=max_lookback,
            archive=check.typed(table, section, "archive", bool, True),
        )
    return found


def _read_web(table: dict, check: _Collector) -> WebConfig:
    origins = _string_list(table, "web", "allowed_origins", check)
    for origin in origins:
        if not re.match(r"^https?://[^/\s]+$", origin):
            check.error("web.allowed_origins", f"{origin!r} must be an origin like https://blog.example.org "
                                               "(scheme and host, no path)")
    return WebConfig(
        confirm_expiry=_duration(table, "web", "confirm_expiry", "7d", check),
        signup_limit_address=_number(table, "web", "signup_limit_address", 5, check, high=10_000),
        signup_limit_ip=_number(table, "web", "signup_limit_ip", 20, check, high=100_000),
        signup_limit_window=_duration(table, "web", "signup_limit_window", "1h", check),
        max_body=_number(table, "web", "max_body", 16384, check, low=1024, high=10_000_000),
        allowed_origins=tuple(o.rstrip("/") for o in origins),
        forwarded_allow_ips=check.typed(table, "web", "forwarded_allow_ips", str, "127.0.0.1"),
        admin_password_hash=_admin_hash(table, check),
        admin_login_limit=_number(table, "web", "admin_login_limit", 5, check, high=1000),
        admin_login_window=_duration(table, "web", "admin_login_window", "15m", check),
    )


def _admin_hash(table: dict, check: _Collector) -> str | None:
    """[web] admin_password_hash, or NEWSLETTER_ADMIN_PASSWORD_HASH (which wins): an argon2 hash, checked now
    rather than at the first sign-in."""
    from .web.signin import HASH_VARIABLE, hash_problem

    from_environment = os.environ.get(HASH_VARIABLE)
    value = from_environment or check.typed(table, "web", "admin_password_hash", str, None)
    if not value:
        return None
    value = value.strip()
    if why := hash_problem(value):
        check.error("web.admin_password_hash", (f"(from {HASH_VARIABLE}) " if from_environment else "") + why)
        return None
    return value


def _zone(name: str | None, key: str, check: _Collector, default: ZoneInfo) -> ZoneInfo:
    if name is None:
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        check.error(key, f"{name!r} is not an IANA time zone name, like Europe/Paris or UTC")
        return default


def _duration(table: dict, section: str, key: str, default: str, check: _Collector) -> timedelta:
    try:
        return parse_duration(check.typed(table, section, key, str, default))
    except ValueError as err:
        check.error(f"{section}.{key}", str(err))
        return parse_duration(default)


def _schedule(table: dict, section: str, zone: ZoneInfo, check: _Collector) -> tuple[str, ...]:
    """The newsletter's cron expressions, each checked by APScheduler's own parser."""
    value = table.get("schedule")
    if value is None:
        return ()
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not listed or not all(isinstance(v, str) for v in listed):
        check.error(f"{section}.schedule", f"must be a cron expression like \"0 8 * * mon\", or a list of them, "
                                           f"not {value!r}")
        return ()
    from apscheduler.triggers.cron import CronTrigger

    found = []
    for expression in listed:
        if len(expression.split()) != 5:
            check.error(f"{section}.schedule", f"{expression!r} must have 5 fields: minute hour day month "
                                               "day-of-week, like \"0 8 * * mon\"")
            continue
        try:
            CronTrigger.from_crontab(expression, timezone=zone)
        except ValueError as err:
            check.error(f"{section}.schedule", f"{expression!r} is not a cron expression: {err}")
            continue
        found.append(" ".join(expression.split()))
    return tuple(found)


def check_address(text: str) -> str | None:
    """Return why `text` ("Name <addr>" or "addr") is not one usable address, or None when it is. It is parsed
    as an RFC 5322 header would be, so a name with a comma must be quoted."""
    from email.headerregistry import HeaderRegistry

    from email_validator import EmailNotValidError, validate_email

    if "\r" in text or "\n" in text:
        return "must not contain a line break"
    parsed = HeaderRegistry()("From", text)
    found = [a for a in parsed.addresses if a.username or a.domain]
    if len(found) > 1:
        return (f"{text!r} holds {len(found)} addresses; give exactly one, and quote a name with a comma or other "
                'punctuation, like "\\"Harbour, Light\\" <news@example.org>"')
    if len(found) != 1 or not found[0].domain or parsed.defects:
        return f"{text!r} is not an address like \"Blog <news@example.org>\""
    address = found[0].addr_spec
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as err:
        return f"{address!r} is not a valid address: {err}"
    return None


def _number(table: dict, section: str, key: str, default: Any, check: _Collector, kind: type = int,
            low: float = 1, high: float | None = None) -> Any:
    value = check.typed(table, section, key, (int, float) if kind is float else int, default)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        check.error(f"{section}.{key}", f"must be {bound}, not {value}")
        return default
    return kind(value)


def _ca_file(table: dict, base: Path, check: _Collector) -> Path | None:
    value = check.typed(table, "delivery.smtp", "ca_file", str, None)
    if value is None:
        return None
    path = base / value
    if not path.is_file():
        check.error("delivery.smtp.ca_file", f"{path} is not a file of PEM certificates")
    return path


def _read_delivery(table: dict, site: SiteConfig, base: Path, check: _Collector) -> DeliveryConfig:
    def default_sender() -> tuple[str, str | None]:
        """The From used when [delivery] from is not set: the site's title as the display name (quoted as RFC 5322
        needs, line breaks folded) and newsletter@ the host of the site's URL; and why it is not usable, or None.
        Without a URL (or with localhost) the address is newsletter@localhost, good for the outbox only."""
        from email.headerregistry import Address
        from urllib.parse import urlsplit

        try:
            host = urlsplit(site.url).hostname or ""
        except ValueError as err:
            return "", f"no From address can be made from site.url {site.url!r}: {err}"
        name = " ".join(site.title.split())
        try:
            sender = str(Address(display_name=name, username="newsletter", domain=host or "localhost"))
        except (ValueError, IndexError) as err:
            return "", f"no From address can be made from site.url {site.url!r}: {err}"
        if host in ("", "localhost"):
            return sender, None
        why = check_address(sender)
        return sender, None if why is None else f"no From address can be made from site.url {site.url!r} ({why})"

    sender = check.typed(table, "delivery", "from", str, None)
    reply_to = check.typed(table, "delivery", "reply_to", str, None)
    for key, value in (("from", sender), ("reply_to", reply_to)):
        if value is not None and (why := check_address(value)):
            check.error(f"delivery.{key}", why)
    if sender is None:
        sender, why = default_sender()
        if why:
            check.error("delivery.from", f"is not set, and {why}; set it, like from = \"Blog <news@example.org>\"")
    provider = check.typed(table, "delivery", "provider", str, "outbox")
    if provider not in PROVIDERS:
        check.error("delivery.provider", f"{provider!r} is not a provider; use one of {', '.join(PROVIDERS)}")
    smtp_table = check.typed(table, "delivery", "smtp", dict, {})
    sendgrid_table = check.typed(table, "delivery", "sendgrid", dict, {})
    check.unknown(smtp_table, "delivery.smtp", SMTP_KEYS)
    check.unknown(sendgrid_table, "delivery.sendgrid", SENDGRID_KEYS)
    dkim = _read_dkim(check.typed(table, "delivery", "dkim", dict, {}), base, check)
    security = check.typed(smtp_table, "delivery.smtp", "security", str, "starttls")
    if security not in SECURITY:
        check.error("delivery.smtp.security", f"{security!r} must be one of none, starttls, ssl")
        security = "starttls"
    api_host = check.typed(sendgrid_table, "delivery.sendgrid", "api_host", str, SENDGRID_KEYS["api_host"])
    if not re.match(r"^https?://[^/\s]+", api_host):
        check.error("delivery.sendgrid.api_host", f"{api_host!r} must be an http(s) URL")
    return DeliveryConfig(
        from_addr=sender,
        reply_to=reply_to,
        provider=provider,
        outbox=base / check.typed(table, "delivery", "outbox", str, "outbox"),
        batch_size=_number(table, "delivery", "batch_size", 100, check, high=10_000),
        max_attempts=_number(table, "delivery", "max_attempts", 5, check, high=100),
        retry_delay=_number(table, "delivery", "retry_delay", 30.0, check, kind=float, low=0),
        deadline=_duration(table, "delivery", "deadline", "1h", check),
        soft_bounce_limit=_number(table, "delivery", "soft_bounce_limit", 3, check, high=100),
        smtp=SmtpConfig(
            host=check.typed(smtp_table, "delivery.smtp", "host", str, "localhost"),
            port=_number(smtp_table, "delivery.smtp", "port", SECURITY[security], check, high=65535),
            security=security,
            username=check.typed(smtp_table, "delivery.smtp", "username", str, None),
            connections=_number(smtp_table, "delivery.smtp", "connections", 2, check, high=64),
            timeout=_number(smtp_table, "delivery.smtp", "timeout", 30.0, check, kind=float, low=0.1),
            ca_file=_ca_file(smtp_table, base, check),
            bounce_address=_bounce_address(smtp_table, check),
        ),
        sendgrid=SendgridConfig(
            api_host=api_host.rstrip("/"),
            timeout=_number(sendgrid_table, "delivery.sendgrid", "timeout", 30.0, check, kind=float, low=0.1),
            batch_size=_number(sendgrid_table, "delivery.sendgrid", "batch_size", 1000, check, high=1000),
            requests_in_flight=_number(sendgrid_table, "delivery.sendgrid", "requests_in_flight", 3, check, high=8),
            webhook_public_key=_webhook_key(sendgrid_table, check),
            webhook_tolerance=_duration(sendgrid_table, "delivery.sendgrid", "webhook_tolerance", "10m", check),
        ),
        dkim=dkim,
    )


def _mailbox(table: dict, section: str, key: str, check: _Collector) -> str | None:
    """A bare address (no display name), such as the mailto: target of List-Unsubscribe."""
    value = check.typed(table, section, key, str, None)
    if value is None:
        return None
    why = f"{value!r} must be a bare address, like unsubscribe@example.org" if "<" in value else None
    if why or (why := check_address(value)):
        check.error(f"{section}.{key}", why)
        return None
    return value.strip()


def _read_dkim(table: dict, base: Path, check: _Collector) -> DkimConfig | None:
    """[delivery.dkim]: domain and selector, and the key from key_file or NEWSLETTER_DKIM_PRIVATE_KEY."""
    check.unknown(table, "delivery.dkim", DKIM_KEYS)
    if not table:
        return None
    found = {}
    for key in ("domain", "selector"):
        value = check.typed(table, "delivery.dkim", key, str, None)
        if not value:
            check.error(f"delivery.dkim.{key}", "is needed to sign messages (or remove [delivery.dkim])")
        elif not all(_DNS_LABEL.match(label) for label in value.rstrip(".").split(".")):
            check.error(f"delivery.dkim.{key}", f"{value!r} is not a DNS name")
        found[key] = value
    key_file = check.typed(table, "delivery.dkim", "key_file", str, None)
    path = base / key_file if key_file else None
    if path is not None and not path.is_file():
        check.error("delivery.dkim.key_file", f"{path} is not a file (a PEM private key)")
    if path is None and not os.environ.get(DKIM_KEY_VARIABLE):
        check.error("delivery.dkim.key_file", f"set it to a PEM private key file, or put the key in the "
                                              f"environment variable {DKIM_KEY_VARIABLE}")
    if not found.get("domain") or not found.get("selector"):
        return None
    return DkimConfig(domain=found["domain"].rstrip(".").lower(), selector=found["selector"], key_file=path)


def _bounce_address(table: dict, check: _Collector) -> str | None:
    """[delivery.smtp] bounce_address: a bare address whose local part can take a `+<signed id>` tag."""
    value = check.typed(table, "delivery.smtp", "bounce_address", str, None)
    if value is None:
        return None
    local, at, domain = value.strip().rpartition("@")
    why = check_address(value.strip()) if at else None
    if not at or "<" in value or "+" in local or why:
        check.error("delivery.smtp.bounce_address", f"{value!r} must be a bare address without a '+' tag, like "
                                                    "\"bounces@news.example.org\"" + (f" ({why})" if why else ""))
        return None
    return f"{local}@{domain.lower()}"


def _webhook_key(table: dict, check: _Collector) -> str | None:
    """[delivery.sendgrid] webhook_public_key: the base64 key SendGrid shows; checked now, not at the first post."""
    value = check.typed(table, "delivery.sendgrid", "webhook_public_key", str, None)
    if value is None:
        return None
    from .webhooks import load_public_key

    try:
        load_public_key(value)
    except ValueError as err:
        check.error("delivery.sendgrid.webhook_public_key", f"{err}; paste the key SendGrid shows under Settings, "
                                                            "Mail Settings, Signed Event Webhook Requests")
        return None
    return "".join(value.split())
