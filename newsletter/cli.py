"""The command line: parse arguments, call the library, turn its errors into messages and exit codes.

Exit status: 0 success; 1 a command failed (a database or file that cannot be used, a bug), or warnings
under --strict; 2 a usage or configuration error, or an unknown newsletter, issue or subscriber; 3 a send left
deliveries whose outcome is unknown. Bad input never shows a traceback: only a bug does, with a request to
report it.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import click

from . import __version__
from .clock import format_duration, parse_moment
from .config import Config, load_config
from .errors import ConfigError, NewsletterError, Problem
from .posts import Post

EXIT_STRICT = 1
EXIT_FAILED = 1
# The moments --now and --since accept: far enough inside datetime's range that a window before them or a
# conversion to any time zone still fits.
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9998, 12, 31, tzinfo=timezone.utc)


def parse_option_moment(text: str, zone, option: str) -> datetime:
    """A moment given on the command line, or a usage error naming the option and the accepted range."""
    try:
        moment = parse_moment(text, zone)
        in_range = EARLIEST <= moment <= LATEST
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=option) from err
    except OverflowError:
        in_range = False
    if not in_range:
        raise click.BadParameter(f"{text!r} is out of range: give a moment between {EARLIEST:%Y-%m-%d} and "
                                 f"{LATEST:%Y-%m-%d}", param_hint=option)
    return moment


@dataclass
class State:
    config_path: Path
    config_given: bool
    now_text: str | None
    strict: bool
    no_cache: bool = False
    warnings: list[Problem] = field(default_factory=list)
    exit_code: int = 0

    def config(self, source: Path | None = None) -> Config:
        path: Path | None = self.config_path
        if source is not None and not self.config_given and not self.config_path.exists():
            path = None
        config = load_config(path, source_override=source)
        if self.no_cache:
            config = dataclasses.replace(config, site=dataclasses.replace(config.site, cache=None))
        self.warn(config.warnings)
        return config

    def now(self, config: Config) -> datetime:
        if self.now_text is None:
            return datetime.now(timezone.utc).astimezone(config.site.timezone)
        return parse_option_moment(self.now_text, config.site.timezone, "--now")

    def posts(self, config: Config, now: datetime) -> list[Post]:
        from .site import read_site

        result = read_site(config, now)
        if _process_runs_one_command:
            # the posts live until the process exits, so the collector need not walk them again (its first
            # pass after the read went over every object the read made: a tenth of a warm `posts`); objects
            # made later are collected as usual
            gc.freeze()
        self.warn(result.problems)
        return result.posts

    def store(self, config: Config, *, create: bool = True):
        """The subscriber store and ledger; with `create` False, None when the SQLite file does not exist yet."""
        from .store import open_store

        if not create and config.database_url.startswith("sqlite:///"):
            if not Path(config.database_url[len("sqlite:///"):]).exists():
                return None
        return open_store(config.database_url)

    def warn(self, problems: list[Problem]) -> None:
        for problem in problems:
            click.echo(f"warning: {problem}", err=True)
        self.warnings.extend(problems)


class NewsletterGroup(click.Group):
    """Turns the library's errors into a message on stderr and the exit status they carry.

    Bad input (a configuration, a file, a database, an argument) is one line saying what and where. Anything
    else is a bug: it is shown with its traceback and a request to report it."""

    def invoke(self, ctx: click.Context):
        try:
            result = super().invoke(ctx)
        except ConfigError as err:
            click.echo("error: the configuration cannot be used:", err=True)
            for problem in err.problems:
                click.echo(f"  {problem}", err=True)
            ctx.exit(err.exit_code)
        except NewsletterError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # the reader of our output went away (`... | head`): nothing to say, and no one to say it to
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the final flush is quiet
            except (OSError, ValueError):
                pass  # standard output is not a file (a test runner's buffer)
            ctx.exit(EXIT_FAILED)
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"error: {where}{err.strerror or err}", err=True)
            ctx.exit(EXIT_FAILED)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            click.echo(f"error: this is a bug in newsletter {__version__}, not a problem with your input; please "
                       "report it with the traceback above and the command you ran", err=True)
            ctx.exit(EXIT_FAILED)
        state = ctx.find_object(State)
        if state is not None and state.strict and state.warnings:
            click.echo(f"error: {len(state.warnings)} warning(s) and --strict was given", err=True)
            ctx.exit(EXIT_STRICT)
        if state is not None and state.exit_code:
            ctx.exit(state.exit_code)
        return result


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="The config file [default: ./newsletter.toml].")
@click.option("--now", "now_text", metavar="DATETIME",
              help="The reference time, ISO 8601 (naive means the site's time zone) [default: now].")
@click.option("--strict", is_flag=True, help="Fail (exit 1) when any warning was reported, for CI.")
@click.option("--no-cache", is_flag=True, help="Parse every post file, without reading or writing the post cache.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, now_text: str | None, strict: bool, no_cache: bool) -> None:
    """Turn a blog's Markdown posts into email digests."""
    ctx.obj = State(config_path or Path("newsletter.toml"), config_path is not None, now_text, strict, no_cache)


@cli.command()
@click.option("--source", type=click.Path(path_type=Path, file_okay=False),
              help="Read this site or folder instead of [site] source.")
@click.option("--category", "categories", multiple=True, help="Only posts in this category (repeatable).")
@click.option("--since", metavar="DATETIME", help="Only posts dated after this moment.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.pass_obj
def posts(state: State, source: Path | None, categories: tuple[str, ...], since: str | None, as_json: bool) -> None:
    """List the posts the reader sees, newest first."""
    config = state.config(source)
    now = state.now(config)
    found = state.posts(config, now)
    if categories:
        wanted = {c.casefold() for c in categories}
        found = [p for p in found if p.in_categories(wanted)]
    if since:
        moment = parse_option_moment(since, config.site.timezone, "--since")
        found = [p for p in found if p.date > moment]
    if as_json:
        click.echo(json.dumps([p.as_json() for p in found], indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(found)} posts in {config.site.source}")
    for column in ("date", "title", "categories", "url"):
        table.add_column(column, overflow="fold", no_wrap=column == "date")
    for post in found:
        table.add_row(post.date.strftime("%Y-%m-%d %H:%M"), post.title, ", ".join(post.categories), post.url)
    Console(soft_wrap=not sys.stdout.isatty()).print(table)


@cli.command()
@click.argument("newsletter_id", metavar="NEWSLETTER", required=False)
@click.option("--categories", multiple=True, help="Preview as a subscriber of only these categories.")
@click.option("--as", "as_email", metavar="EMAIL", help="Preview as this subscriber.")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("previews"), show_default=True,
              help="A folder (one file per newsletter), a file, or - for standard output.")
@click.option("--open", "open_browser", is_flag=True, help="Open the HTML preview in the web browser.")
@click.pass_obj
def preview(state: State, newsletter_id: str | None, categories: tuple[str, ...], as_email: str | None,
            fmt: str, out: Path, open_browser: bool) -> None:
    """Write exactly what would be sent at --now, and report what may look wrong in mail clients.

    Without NEWSLETTER, previews every configured newsletter. With a subscriber store, the preview leaves out
    posts earlier issues carried, as the send will, and --as previews a stored subscriber's own copy.
    """
    from .digest import compose, preview_recipient, preview_variant
    from .render import personalise

    config = state.config()
    now = state.now(config)
    ids = [newsletter_id] if newsletter_id else sorted(config.newsletters)
    if not ids:
        raise ConfigError([Problem(config.where, "no [newsletters.<id>] table: add one to preview it")])
    newsletters = [config.newsletter(i) for i in ids]
    all_posts = state.posts(config, now)
    store = state.store(config, create=False)
    for newsletter in newsletters:
        recipient, chosen, warning = preview_recipient(config, store, newsletter.id, as_email)
        state.warn([warning] if warning else [])
        record, digest = preview_variant(store, config, newsletter, all_posts, now, categories or chosen)
        if digest is None:
            click.echo(f"{newsletter.id}: nothing new in the last {format_duration(newsletter.window)}"
                       f"{' in these categories' if categories or chosen else ''}; the issue would be skipped",
                       err=True)
            continue
        state.warn(list(digest.checks))
        if fmt == "eml":
            payload = compose(config, digest, recipient, now)
        else:
            personal = personalise(digest, recipient)
            payload = (personal.html if fmt == "html" else personal.text).encode("utf-8")
        target = _write(payload, out, newsletter.id, fmt, several=len(newsletters) > 1)
        selection = digest.selection
        sections = ", ".join(f"{s.category} ({len(s.posts)})" for s in selection.sections)
        click.echo(f"{newsletter.id}: issue {record.number}, {len(selection.posts)} post(s), sections: {sections}; "
                   f"subject: {digest.subject}", err=True)
        click.echo(f"{newsletter.id}: wrote {'standard output' if target is None else target}", err=True)
        if open_browser and target is not None and fmt == "html":
            import webbrowser

            webbrowser.open(target.resolve().as_uri())


def _write(payload: bytes, out: Path, newsletter_id: str, fmt: str, several: bool) -> Path | None:
    if str(out) == "-":
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return None
    suffix = {"html": ".html", "text": ".txt", "eml": ".eml"}[fmt]
    target = out / f"{newsletter_id}{suffix}" if several or out.suffix == "" else out
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    return target


@cli.command()
@click.option("--dns", "look_up", is_flag=True,
              help="Also look the DKIM, SPF and DMARC records up in DNS (needs the network).")
@click.pass_obj
def check(state: State, look_up: bool) -> None:
    """Check the configuration, read every post, and render every newsletter's subject and templates against a
    sample issue, reporting every problem found."""
    from .digest import check_newsletters

    config = state.config()
    now = state.now(config)
    found = state.posts(config, now)
    problems = check_newsletters(config, found, now)
    if problems:
        raise ConfigError(problems)
    click.echo(f"{config.where}: {len(config.newsletters)} newsletter(s), {len(found)} post(s) in "
               f"{config.site.source}, {len(state.warnings)} warning(s)")
    from .dkim import dns_advice
    from .schedule import next_fires

    for newsletter in config.newsletters.values():
        if not newsletter.schedule:
            click.echo(f"{newsletter.id}: no schedule (sent by hand or one-off)")
            continue
        fire = next_fires(newsletter, now, 1)
        when = f"{fire[0].isoformat()} ({fire[0].astimezone(timezone.utc).isoformat()})" if fire else "never"
        click.echo(f"{newsletter.id}: {'; '.join(newsletter.schedule)} in {newsletter.timezone.key}, next fire {when}")
    for line in dns_advice(config):  # what to publish in DNS for the From domain
        click.echo(line)
    if look_up:
        from .dkim import DnsLookupError, check_dns

        try:
            found = check_dns(config)
        except DnsLookupError as err:
            state.warn([Problem("dns", f"could not look the records up ({err}); is this machine online?")])
            return
        for ok, line in found:
            if ok:
                click.echo(f"dns: {line}")
            else:
                state.warn([Problem("dns", line)])


_process_runs_one_command = False


def main() -> None:
    global _process_runs_one_command
    _process_runs_one_command = True  # not so for a test that invokes `cli` again and again in one process
    cli(prog_name="newsletter")


from . import cli_admin, cli_events, cli_schedule, cli_send, cli_subscribers, cli_web  # noqa: E402, F401  (importing them adds their commands to `cli`)

if __name__ == "__main__":
    main()
