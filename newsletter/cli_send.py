"""`newsletter send` and `newsletter status`: send an issue exactly once, and see how it went."""

from __future__ import annotations

import json
import sys
import time

import click

from .cli import State, cli
from .clock import format_duration
from .config import PROVIDERS
from .errors import NewsletterError, Problem, UnknownNameError


class Progress:
    """A progress bar on a terminal (sent, failed, rate, time left); plain log lines otherwise."""

    def __init__(self, label: str, total: int, done: int):
        self.label, self.total, self.done = label, total, done
        self.tally = {"sent": 0, "failed": 0, "skipped": 0, "unknown": 0}
        self.started = time.monotonic()
        self.last_line = 0.0
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[detail]}"),
                                    TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(label, total=total, completed=done, detail="")
            self.bar.start()

    def __call__(self, marks) -> None:
        if not marks:
            return
        final = 0
        for mark in marks:
            if mark.status in self.tally:
                self.tally[mark.status] += 1
                final += 1
        self.done += final
        rate = sum(self.tally.values()) / max(time.monotonic() - self.started, 1e-6)
        detail = (f"sent {self.tally['sent']}, failed {self.tally['failed']}, unknown {self.tally['unknown']}, "
                  f"{rate:.0f}/s")
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, detail=detail)
        elif time.monotonic() - self.last_line >= 2 or self.done >= self.total:
            self.last_line = time.monotonic()
            click.echo(f"{self.label}: {self.done}/{self.total} done; {detail}", err=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@cli.command()
@click.argument("newsletter_id", metavar="NEWSLETTER")
@click.option("--provider", type=click.Choice(PROVIDERS), help="Override [delivery] provider.")
@click.option("--dry-run", is_flag=True, help="Plan and render as a send would; send and record nothing.")
@click.option("--to", "to_address", metavar="EMAIL",
              help="Send one test copy of the full digest to EMAIL (its links unsubscribe nobody); the ledger "
                   "is untouched.")
@click.option("--retry-unknown", is_flag=True,
              help="Send again the deliveries whose outcome is unknown (after checking they did not arrive).")
@click.pass_obj
def send(state: State, newsletter_id: str, provider: str | None, dry_run: bool, to_address: str | None,
         retry_unknown: bool) -> None:
    """Send the issue of NEWSLETTER for the day of --now, or resume it: nobody gets two copies.

    Exit status: 0 when every delivery is final (sent, skipped or failed), 3 when some are unknown.
    """
    from .deliver import make_provider
    from .deliver.run import dry_run as plan_dry
    from .deliver.run import send_newsletter, send_test_copy
    from .ledger import counts
    from .plan import period_of
    from .store import engine_safe
    from .subscribers import normalise_email

    config = state.config()
    now = state.now(config)
    newsletter = config.newsletter(newsletter_id)
    store = state.store(config)
    posts = state.posts(config, now)
    if dry_run:
        report = plan_dry(store, config, newsletter, posts, now)
        _print_plan(report)
        return
    chosen = make_provider(config, provider, store)
    if not to_address:
        from .events import last_issue_warnings

        state.warn([Problem(newsletter.id, warning) for warning in last_issue_warnings(store, newsletter.id)])
    if to_address:
        try:
            address = normalise_email(to_address)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--to") from err
        report = send_test_copy(store, config, newsletter, posts, now, chosen, address)
        if report.skipped_issue:
            click.echo(f"{newsletter.id}: nothing new for {report.period}; no test copy sent")
        else:
            click.echo(f"{newsletter.id}: test copy of {report.period} ({report.posts} post(s)) sent to {address} "
                       f"through {chosen.name}")
        return
    wanted = period_of(now, config, newsletter)
    progress: list[Progress] = []

    def starting(record, created):
        if record.period != wanted:
            click.echo(f"{newsletter.id}: the issue for {record.period} was left unfinished; resuming it before "
                       f"the issue for {wanted}", err=True)
        if record.status == "skipped":
            return None
        before = counts(store, record.id)
        click.echo(f"{newsletter.id}: {'planned' if created else 'resuming'} issue {record.number} (id {record.id}) "
                   f"for {record.period}: {len(record.posts)} post(s), {sum(before.values())} delivery(ies), "
                   f"through {chosen.name}; database {engine_safe(config.database_url)}", err=True)
        final = sum(n for status, n in before.items() if status in ("sent", "failed", "skipped"))
        progress.append(Progress(f"{newsletter.id} {record.period}", sum(before.values()), final))
        return progress[-1]

    def finished(report):
        if progress:
            progress.pop().stop()
        state.exit_code = max(state.exit_code, _print_report(report, newsletter, config, chosen, now))

    def checks(warnings):
        state.warn([Problem(newsletter.id, warning) for warning in warnings])
        if warnings and state.strict:
            raise NewsletterError(f"{newsletter.id}: {len(warnings)} warning(s) before sending and --strict was "
                                  "given; nothing was sent, the issue stays planned")

    try:
        send_newsletter(store, config, newsletter, chosen, posts, now, retry_unknown=retry_unknown,
                        starting=starting, finished=finished, checks=checks)
    finally:
        for bar in progress:
            bar.stop()


def _print_report(report, newsletter, config, chosen, now) -> int:
    """What one issue's send did; returns the exit status it calls for."""
    if report.skipped_issue:
        click.echo(f"{newsletter.id}: issue for {report.period} skipped: nothing in the last "
                   f"{format_duration(newsletter.window)} that an earlier issue did not carry")
        return 0
    if report.recovered:
        click.echo(f"warning: {report.recovered} delivery(ies) were in flight when an earlier send stopped; they "
                   "are now unknown and were not sent again", err=True)
    _print_counts(report.counts)
    if report.counts.get("unknown"):
        click.echo(f"{report.counts['unknown']} delivery(ies) are unknown: the provider may or may not have sent "
                   f"them. See `newsletter status {report.issue_id}`; once you know they did not arrive, send them "
                   f"with `newsletter send {newsletter.id} --now {now.isoformat()} --retry-unknown`.", err=True)
    if chosen.name == "outbox":
        click.echo(f"messages are in {config.delivery.outbox / f'{newsletter.id}-{report.period}'}", err=True)
    return report.exit_code


def _print_counts(counts) -> None:
    order = ("sent", "failed", "unknown", "skipped", "pending", "sending")
    from rich.console import Console
    from rich.table import Table

    table = Table("status", "deliveries")
    for status in order:
        if counts.get(status):
            table.add_row(status, str(counts[status]))
    table.add_row("total", str(sum(counts.values())))
    Console(soft_wrap=True).print(table)


def _print_plan(report) -> None:
    if report.skipped_issue:
        click.echo(f"{report.newsletter}: dry run: nothing new for {report.period}; the issue would be skipped")
        return
    click.echo(f"{report.newsletter}: dry run for {report.period}: issue {report.number}, {report.posts} post(s), "
               f"{report.variants} variant(s); would send {report.counts.get('would send', 0)}, would skip "
               f"{report.counts.get('would skip', 0)} (no posts in their categories); nothing sent or recorded")


@cli.command()
@click.argument("issue_id", metavar="ISSUE", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(state: State, issue_id: int | None, as_json: bool) -> None:
    """Issues with their counts per delivery status; with ISSUE, its failures and unknowns with reasons."""
    from . import events, ledger

    store = state.store(state.config())
    issues = ledger.list_issues(store)
    if issue_id is None:
        if as_json:
            click.echo(json.dumps([{k: i[k] for k in ("id", "newsletter", "period", "status", "counts")} for i in issues],
                                  indent=2))
            return
        for issue in issues:
            tally = ", ".join(f"{s} {n}" for s, n in sorted(issue["counts"].items())) or "no deliveries"
            click.echo(f"{issue['id']}\t{issue['newsletter']}\t{issue['period']}\t#{issue['number']}\t"
                       f"{issue['status']}\t{tally}")
        from .schedule import list_fires

        for fire in list_fires(store, statuses=["missed"], limit=20):
            click.echo(f"missed fire\t{fire.newsletter}\t{fire.fire_time.isoformat()}\t{fire.period}")
        from .cli_web import status_lines

        for line in status_lines(store, state.config(), state.now(state.config())):
            click.echo(line)
        return
    found = next((i for i in issues if i["id"] == issue_id), None)
    if found is None:
        raise UnknownNameError(f"no issue {issue_id}; `newsletter status` lists them")
    rows = ledger.open_deliveries(store, issue_id)
    reported, health = events.event_counts(store, issue_id), events.issue_health(store, issue_id)
    if as_json:
        click.echo(json.dumps({**{k: found[k] for k in ("id", "newsletter", "period", "status", "counts")},
                               "events": reported, "rates": health.as_json(),
                               "deliveries": [{k: r[k] for k in ("email", "status", "error")} for r in rows]},
                              indent=2, ensure_ascii=False))
        return
    tally = ", ".join(f"{s} {n}" for s, n in sorted(found["counts"].items())) or "no deliveries"
    click.echo(f"issue {found['id']}: {found['newsletter']} {found['period']} #{found['number']} "
               f"({found['status']}): {tally}")
    if reported:
        click.echo(f"reported: {', '.join(f'{k} {n}' for k, n in reported.items())}; {events.outcome_line(health)}")
    for row in rows:
        if row["status"] != "skipped" or row["error"]:
            click.echo(f"{row['status']}\t{row['email']}\t{row['error'] or ''}")

