"""`newsletter run` (the scheduler daemon) and `newsletter schedule` (see it, pause, resume, one-off sends).

Operator commands only write to the database; a running daemon reads it at every poll (5 s), so they take
effect within seconds, without a restart.
"""

from __future__ import annotations

import json
import sys

import click

from .cli import State, cli
from .config import PROVIDERS


@cli.command()
@click.option("--provider", type=click.Choice(PROVIDERS), help="Override [delivery] provider.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line, for log collectors.")
@click.option("--lease", "lease_seconds", type=click.IntRange(1, 60), default=30, show_default=True,
              help="Seconds without a heartbeat after which a standby takes over from the active daemon.")
@click.option("--poll", type=click.FloatRange(0.1, 15), default=5.0, show_default=True,
              help="Seconds between looks at the schedule, operator commands and newsletter.toml.")
@click.pass_obj
def run(state: State, provider: str | None, log_json: bool, lease_seconds: int, poll: float) -> None:
    """Send every newsletter's issues on its schedule, and one-off sends, until stopped.

    One daemon per database is active; another one started on the same database stands by and takes over
    when the active one stops beating. SIGTERM or Ctrl-C stops after the batch in hand (twice: at once);
    SIGHUP reloads newsletter.toml, which is also picked up within seconds when it changes. With --now, the
    daemon's clock starts there and runs at real speed (to rehearse a schedule).
    """
    from .daemon import Clock, Daemon, setup_logging

    config = state.config()
    start = state.now(config) if state.now_text else None
    store = state.store(config)
    setup_logging(log_json, sys.stderr)
    daemon = Daemon(store, lambda: state.config(), config.path, Clock(start), lease_seconds=lease_seconds,
                    poll=poll, provider_name=provider)
    state.exit_code = daemon.run()


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedule(ctx: click.Context, as_json: bool) -> None:
    """Each newsletter's schedule, state, next fires, last issue and missed fires; and the daemons."""
    if ctx.invoked_subcommand is not None:
        return
    state: State = ctx.obj
    config = state.config()
    now = state.now(config)
    overview = _overview(state, config, now)
    if as_json:
        click.echo(json.dumps(overview, indent=2, ensure_ascii=False))
        return
    for item in overview["newsletters"]:
        rules = "; ".join(item["schedule"]) or "none (sent by hand or one-off)"
        click.echo(f"{item['id']}: {rules} in {item['timezone']}, {item['state']}, catch_up {item['catch_up']}")
        for fire in item["next"]:
            click.echo(f"  next {fire['local']} ({fire['utc']})")
        last = item["last_issue"]
        if last:
            click.echo(f"  last issue {last['id']}: #{last['number']} {last['period']} {last['status']}, "
                       + (", ".join(f"{s} {n}" for s, n in sorted(last["counts"].items())) or "no deliveries"))
        for fire in item["one_offs"]:
            click.echo(f"  one-off {fire['id']} at {fire['fire_time']}: {fire['status']}")
        for fire in item["missed"]:
            click.echo(f"  missed {fire['fire_time']} ({fire['period']}): {fire['detail']}")
    daemons = overview["daemons"]
    if not daemons:
        click.echo("daemon: none running (start one with `newsletter run`)")
    for daemon in daemons:
        click.echo(f"daemon {daemon['role']}: {daemon['host']} pid {daemon['pid']}, since {daemon['started_at']}, "
                   f"last heartbeat {daemon['heartbeat_age']} s ago")


def _overview(state: State, config, now) -> dict:
    from . import ledger
    from . import schedule as sched
    from .clock import format_duration

    store = state.store(config)
    issues = ledger.list_issues(store)
    found = []
    for newsletter in config.newsletters.values():
        paused = sched.get_state(store, newsletter.id)
        fires = sched.list_fires(store, newsletter=newsletter.id, limit=200)
        last = next((i for i in issues if i["newsletter"] == newsletter.id), None)
        found.append({
            "id": newsletter.id,
            "schedule": list(newsletter.schedule),
            "timezone": newsletter.timezone.key,
            "catch_up": format_duration(newsletter.catch_up),
            "state": "paused" if paused and paused.paused else "active",
            "next": [{"local": f.isoformat(), "utc": f.astimezone(sched.UTC).isoformat()}
                     for f in sched.next_fires(newsletter, now, 3)],
            "last_issue": last,
            "one_offs": [_fire_json(f) for f in fires if f.kind == "one-off" and f.status == "scheduled"],
            "missed": [_fire_json(f) for f in fires if f.status == "missed"][:10],
            "recent": [_fire_json(f) for f in fires[:10]],
        })
    return {"newsletters": found, "daemons": sched.list_daemons(store)}


def _fire_json(fire) -> dict:
    return {"id": fire.id, "kind": fire.kind, "fire_time": fire.fire_time.isoformat(), "period": fire.period,
            "status": fire.status, "issue": fire.issue_id, "detail": fire.detail}


@schedule.command()
@click.argument("newsletter_id", metavar="NEWSLETTER")
@click.pass_obj
def pause(state: State, newsletter_id: str) -> None:
    """Record NEWSLETTER's fires as paused instead of sending them (they are not caught up on resume)."""
    from .schedule import set_paused

    config = state.config()
    changed = set_paused(state.store(config), config, newsletter_id, True, state.now(config))
    click.echo(f"{newsletter_id}: paused" if changed else f"{newsletter_id}: already paused")


@schedule.command()
@click.argument("newsletter_id", metavar="NEWSLETTER")
@click.pass_obj
def resume(state: State, newsletter_id: str) -> None:
    """Send NEWSLETTER's fires again from its next one on."""
    from .schedule import set_paused

    config = state.config()
    changed = set_paused(state.store(config), config, newsletter_id, False, state.now(config))
    click.echo(f"{newsletter_id}: resumed" if changed else f"{newsletter_id}: not paused")


@schedule.command()
@click.argument("newsletter_id", metavar="NEWSLETTER")
@click.argument("when", metavar="DATETIME")
@click.pass_obj
def at(state: State, newsletter_id: str, when: str) -> None:
    """Send NEWSLETTER's issue once at DATETIME (ISO 8601; without an offset, in the newsletter's zone)."""
    from .clock import parse_moment
    from .schedule import add_one_off, get_state

    config = state.config()
    newsletter = config.newsletter(newsletter_id)
    try:
        moment = parse_moment(when, newsletter.timezone)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="DATETIME") from err
    store = state.store(config)
    fire_id = add_one_off(store, config, newsletter_id, moment, state.now(config))
    click.echo(f"one-off {fire_id}: {newsletter_id} at {moment.isoformat()}; a running `newsletter run` sends it "
               f"then (cancel with `newsletter schedule cancel {fire_id}`)")
    paused = get_state(store, newsletter_id)
    if paused and paused.paused:
        click.echo(f"warning: {newsletter_id} is paused: the one-off will be recorded as paused unless you "
                   f"`newsletter schedule resume {newsletter_id}` first", err=True)


@schedule.command()
@click.argument("fire_id", metavar="ID", type=int)
@click.pass_obj
def cancel(state: State, fire_id: int) -> None:
    """Cancel the one-off send ID before it fires."""
    from .schedule import cancel_one_off

    config = state.config()
    fire = cancel_one_off(state.store(config), fire_id)
    click.echo(f"one-off {fire_id} ({fire.newsletter} at {fire.fire_time.isoformat()}) cancelled")

