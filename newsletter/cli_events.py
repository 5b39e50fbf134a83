"""`newsletter events` and `newsletter bounces`: what providers reported about an issue, and reading a bounce
mailbox into the same record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .cli import State, cli
from .errors import ConfigError, Problem, UnknownNameError


@cli.command()
@click.argument("issue_id", metavar="ISSUE", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def events(state: State, issue_id: int, as_json: bool) -> None:
    """List what providers reported about ISSUE's deliveries, oldest first, with counts and rates."""
    from . import events as library
    from .ledger import get_issue

    store = state.store(state.config())
    if get_issue(store, issue_id) is None:
        raise UnknownNameError(f"no issue {issue_id}; `newsletter status` lists them")
    found = library.issue_events(store, issue_id)
    counts = library.event_counts(store, issue_id)
    health = library.issue_health(store, issue_id)
    if as_json:
        click.echo(json.dumps({"issue": issue_id, "counts": counts, **health.as_json(), "events": found},
                              indent=2, ensure_ascii=False))
        return
    for item in found:
        kind = item["event"] + (f" ({item['classification']})" if item["classification"] else "")
        click.echo(f"{item['occurred_at']}\t{kind}\t{item['email']}\t{item['source']}\t{item['detail'] or ''}")
    tally = ", ".join(f"{k} {n}" for k, n in counts.items()) or "no events"
    click.echo(f"issue {issue_id}: {tally}; {library.outcome_line(health)}")


@cli.command()
@click.option("--mbox", type=click.Path(path_type=Path, dir_okay=False), help="An mbox file of bounces.")
@click.option("--maildir", type=click.Path(path_type=Path, file_okay=False), help="A Maildir of bounces.")
@click.option("--imap", metavar="URL", help="An IMAP folder, imaps://user@host[:port]/Folder; the password comes "
                                           "from NEWSLETTER_IMAP_PASSWORD.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def bounces(state: State, mbox: Path | None, maildir: Path | None, imap: str | None, as_json: bool) -> None:
    """Read bounces and complaint reports sent back to [delivery.smtp] bounce_address, and apply them.

    The mailbox is only read: nothing is moved, flagged or deleted.

    Each report is matched to its delivery only through the signed address it came back to; reports that
    match none are listed and change nothing. Reading the same mailbox again records nothing twice.
    """
    from .bounces import IMAP_PASSWORD_VARIABLE, process_bounces, read_imap, read_maildir, read_mbox
    from .verp import BounceAddresses

    if sum(x is not None for x in (mbox, maildir, imap)) != 1:
        raise click.UsageError("give one of --mbox FILE, --maildir DIR or --imap URL")
    config = state.config()
    if not config.delivery.smtp.bounce_address:
        raise ConfigError([Problem(config.where, "delivery.smtp.bounce_address is not set: bounces are matched by "
                                                 "the address SMTP sends carry, like bounces@news.example.org")])
    store = state.store(config)
    addresses = BounceAddresses(config.delivery.smtp.bounce_address, store.secret())
    if imap is not None:
        messages = read_imap(imap, os.environ.get(IMAP_PASSWORD_VARIABLE))
    else:
        messages = read_mbox(mbox) if mbox is not None else read_maildir(maildir)
    now = state.now(config)
    report = process_bounces(store, messages, addresses, now, soft_bounce_limit=config.delivery.soft_bounce_limit)
    applied = {"bounced": report.events.bounced, "complained": report.events.complained}
    if as_json:
        click.echo(json.dumps({
            "messages": len(report.readings), "recorded": report.events.recorded,
            "duplicates": report.events.duplicates, **applied,
            "unmatched": [{"where": p.where, "problem": p.message} for p in report.problems]}, indent=2))
    else:
        for status, addresses_changed in applied.items():
            for address in addresses_changed:
                click.echo(f"{status}\t{address}")
        done = report.events
        click.echo(f"{len(report.readings)} message(s): recorded {done.recorded}, already recorded "
                   f"{done.duplicates}; bounced {len(done.bounced)}, complained {len(done.complained)}; "
                   f"{len(report.problems)} not applied (listed below)")
    state.warn(report.problems)
