"""`newsletter subscribers ...`: import, export, add, remove, list and show subscribers."""

from __future__ import annotations

import codecs
import io
import json
import os
import sys
from pathlib import Path

import click

from .cli import State, cli
from .config import SUBSCRIBER_STATUSES
from .errors import NewsletterError, UnknownNameError


@cli.group()
def subscribers() -> None:
    """Manage the subscriber store."""


@subscribers.command(name="import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--newsletter", metavar="ID", help="Subscribe rows whose newsletters cell is empty to this one.")
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows even when some are invalid.")
@click.option("--resubscribe", is_flag=True,
              help="Make people who unsubscribed, bounced or complained active again when a row says active.")
@click.pass_obj
def import_command(state: State, file: Path, newsletter: str | None, skip_invalid: bool, resubscribe: bool) -> None:
    """Import (add or update) subscribers from a CSV file with a header row.

    Columns: email, name, newsletters (ids separated by ;), categories (separated by ;, either a bare category
    or newsletter:category; empty means all), status (active, unsubscribed, bounced, complained), and the
    consent evidence an export writes: signed_up_at (ISO 8601 with its UTC offset) and signup_ip.
    Nothing is imported when any row is invalid, unless --skip-invalid.
    """
    from .subscribers import ImportRejected, import_csv

    config = state.config()
    now = state.now(config)
    text = _read_text(file)
    store = state.store(config)
    try:
        report = import_csv(store, config, io.StringIO(text, newline=""), str(file), now,
                            newsletter=newsletter, skip_invalid=skip_invalid, resubscribe=resubscribe)
    except ImportRejected as err:
        for problem in err.problems:
            click.echo(f"invalid: {problem}", err=True)
        raise
    state.warn(report.invalid)
    click.echo(f"{file}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
               f"{len(report.kept_unsubscribed)} kept unsubscribed, {len(report.invalid)} invalid row(s) skipped")
    for address in report.kept_unsubscribed:
        click.echo(f"  kept unsubscribed: {address} (pass --resubscribe to make them active again)")


def _read_text(file: Path) -> str:
    """A subscriber file's text: UTF-8, with or without a byte-order mark; anything else is named precisely."""
    try:
        data = file.read_bytes()
    except OSError as err:
        raise NewsletterError(f"cannot read {file}: {err.strerror}") from err
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise NewsletterError(f"{file} is UTF-16 text; save it as UTF-8 (in Excel: CSV UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise NewsletterError(f"{file}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as UTF-8 "
                              "(in Excel: CSV UTF-8)") from err


@subscribers.command()
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="Write to this file [default: stdout].")
@click.option("--excel-safe", is_flag=True,
              help="Put a ' before names a spreadsheet would run as a formula (=, +, -, @ first); for opening in "
                   "a spreadsheet, not for importing back.")
@click.pass_obj
def export(state: State, out: Path | None, excel_safe: bool) -> None:
    """Export every subscriber as CSV, in the columns import reads (statuses included)."""
    from .subscribers import export_csv

    store = state.store(state.config())
    if out is None:
        count = export_csv(store, sys.stdout, excel_safe_names=excel_safe)
    else:
        count = _export_to(store, out, excel_safe)
    click.echo(f"exported {count} subscriber(s)" + (f" to {out}" if out else ""), err=True)


def _export_to(store, out: Path, excel_safe: bool) -> int:
    """Export to a file written whole or not at all (a temporary file renamed over it)."""
    from .subscribers import export_csv

    if not out.parent.is_dir():
        raise NewsletterError(f"cannot write {out}: the folder {out.parent} does not exist; create it first")
    temporary = out.with_name(out.name + ".tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            count = export_csv(store, stream, excel_safe_names=excel_safe)
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(out)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise NewsletterError(f"cannot write {err.filename or out}: {err.strerror}") from err
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


@subscribers.command(name="add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name.")
@click.option("--newsletter", "newsletters", multiple=True, metavar="ID", required=True,
              help="Subscribe to this newsletter (repeatable).")
@click.option("--category", "categories", multiple=True,
              help="Only these categories (repeatable; newsletter:category for one newsletter).")
@click.option("--resubscribe", is_flag=True, help="Make someone who had left active again.")
@click.pass_obj
def add_command(state: State, email: str, name: str, newsletters: tuple[str, ...], categories: tuple[str, ...],
                resubscribe: bool) -> None:
    """Add a subscriber, or update their newsletters and categories."""
    from .subscribers import add

    config = state.config()
    for newsletter in newsletters:
        config.newsletter(newsletter)
    report = add(state.store(config), config, email, name, newsletters, categories, state.now(config),
                 resubscribe=resubscribe)
    if report.kept_unsubscribed:
        raise NewsletterError(f"{email} had left; pass --resubscribe to make them active again")
    click.echo(f"{'added' if report.added else 'updated' if report.updated else 'unchanged'}: {email}")


@subscribers.command()
@click.argument("email")
@click.pass_obj
def remove(state: State, email: str) -> None:
    """Unsubscribe someone from every newsletter: they are never emailed again, and each departure is recorded
    (how: operator), so no import re-adds them without --resubscribe."""
    from .subscribers import find, remove

    config = state.config()
    store = state.store(config)
    if find(store, email) is None:
        raise UnknownNameError(f"no subscriber {email!r}; `newsletter subscribers list` lists them")
    found = remove(store, email, state.now(config))
    click.echo(f"unsubscribed: {found.email}")


def _as_json(subscriber) -> dict:
    return {"email": subscriber.email, "name": subscriber.name, "status": subscriber.status,
            "newsletters": {n: list(c) for n, c in subscriber.newsletters.items()}, "source": subscriber.source,
            "created_at": subscriber.created_at.isoformat(), "updated_at": subscriber.updated_at.isoformat()}


@subscribers.command(name="list")
@click.option("--newsletter", metavar="ID", help="Only subscribers of this newsletter.")
@click.option("--status", type=click.Choice(SUBSCRIBER_STATUSES), help="Only subscribers with this status.")
@click.option("--category", help="Only subscribers who receive this category.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines, one subscriber each.")
@click.pass_obj
def list_command(state: State, newsletter: str | None, status: str | None, category: str | None,
                 as_json: bool) -> None:
    """List subscribers, one a line."""
    from .subscribers import iter_subscribers

    config = state.config()
    if newsletter:
        config.newsletter(newsletter)
    for subscriber in iter_subscribers(state.store(config), newsletter=newsletter, status=status, category=category):
        if as_json:
            click.echo(json.dumps(_as_json(subscriber), ensure_ascii=False))
            continue
        held = "; ".join(f"{n}: {', '.join(c) or 'all'}" for n, c in subscriber.newsletters.items())
        click.echo(f"{subscriber.email}\t{subscriber.name}\t{subscriber.status}\t{held}")


@subscribers.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(state: State, email: str, as_json: bool) -> None:
    """Show one subscriber: status, newsletters and categories, dates."""
    from .subscribers import find

    store = state.store(state.config())
    found = find(store, email)
    if found is None:
        raise UnknownNameError(f"no subscriber {email!r}; `newsletter subscribers list` lists them")
    from .cli_web import subscriber_record

    data = {**_as_json(found), **subscriber_record(store, email)}
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for key in ("email", "name", "status", "source", "created_at", "updated_at"):
        click.echo(f"{key}: {data[key]}")
    for newsletter, categories in found.newsletters.items():
        click.echo(f"newsletter {newsletter}: {', '.join(categories) or 'all categories'}")
    for left in data["unsubscribes"]:
        click.echo(f"unsubscribed from {left['newsletter']}: {left['at']} ({left['how']})"
                   + (f", rejoined {left['rejoined_at']}" if left["rejoined_at"] else ""))
    for sign in data["signups"]:
        click.echo(f"signed up for {', '.join(sign['newsletters'])}: {sign['at']} from {sign['ip'] or 'unknown IP'}, "
                   + (f"confirmed {sign['confirmed_at']}" if sign["confirmed_at"] else "awaiting confirmation"))
