"""`newsletter serve` and `newsletter archive`: the subscribers' web pages, and the archive as static files."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .cli import State, cli
from .errors import UnknownNameError


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="The port.")
@click.pass_obj
def serve(state: State, host: str, port: int) -> None:
    """Serve unsubscribe, preferences, sign-up, the archive and the editors' console (/admin/) at [web] base_url
    (behind a reverse proxy).

    Several processes may serve one PostgreSQL database: every piece of state is in it. Request lines are
    logged without tokens; uvicorn's own access log, which prints paths, is off.
    """
    import uvicorn

    from .store import engine_safe
    from .web.app import create_app

    config = state.config()
    store = state.store(config)
    clock = None
    if state.now_text is not None:
        moment = state.now(config)
        clock = lambda: moment  # noqa: E731  (a pinned --now, for demos and tests)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.web_base_url_set:
        click.echo(f"warning: [web] base_url is not set; links in emails point at {config.web_base_url}", err=True)
    app = create_app(config, store=store, clock=clock)
    click.echo(f"editors' console at {config.web_base_url}/admin/ ("
               + ("signed in with [web] admin_password_hash)" if config.web.admin_password_hash else
                  "no password set: it answers only on 127.0.0.1 and ::1, without a proxy)"), err=True)
    click.echo(f"serving {config.web_base_url} on http://{host}:{port} (database "
               f"{engine_safe(config.database_url)})", err=True)
    uvicorn.run(app, host=host, port=port, access_log=False, proxy_headers=True,
                forwarded_allow_ips=config.web.forwarded_allow_ips, log_level="info", server_header=False)


@cli.command(name="archive")
@click.argument("newsletter_id", metavar="NEWSLETTER", required=False)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The folder to write into, e.g. a folder of the Jekyll site that it copies unchanged.")
@click.pass_obj
def archive_command(state: State, newsletter_id: str | None, out: Path) -> None:
    """Write the archive pages and Atom feed of NEWSLETTER (default: every public one) as static files with
    relative links; a re-run writes only the files that changed. Newsletters with archive = false are private."""
    from .render import template_environment
    from .web.archive import write_static

    config = state.config()
    if newsletter_id is not None:
        chosen = [config.newsletter(newsletter_id)]
        if not chosen[0].archive:
            raise UnknownNameError(f"{config.where}: newsletter {newsletter_id!r} has archive = false (private); "
                                   "set archive = true under [newsletters." + newsletter_id + "] to publish it")
    else:
        chosen = [n for n in config.newsletters.values() if n.archive]
    report = write_static(state.store(config), config, chosen, out, template_environment(config.templates))
    for path in report.written:
        click.echo(f"wrote {path}")
    click.echo(f"{out}: {len(report.written)} file(s) written, {report.unchanged} unchanged", err=True)


def status_lines(store, config, now) -> list[str]:
    """For `newsletter status`: sign-ups awaiting confirmation and the latest unsubscribes, with when."""
    from . import preferences, signup

    waiting = signup.pending(store, config, now)
    total, latest = preferences.recent_departures(store)
    if not waiting and not total:
        return []  # nothing from the web yet: `status` stays as it was
    lines = [f"sign-ups awaiting confirmation: {len(waiting)}"]
    lines += [f"  {s.email}\tsigned up {s.created_at.isoformat(timespec='seconds')} from {s.ip or 'unknown IP'}\t"
              f"{', '.join(s.newsletters)}" for s in waiting[-10:]]
    lines.append(f"unsubscribes on record: {total}" + (" (latest first)" if latest else ""))
    lines += [f"  {email}\tleft {d.newsletter} {d.at.isoformat(timespec='seconds')} ({d.how})"
              + (f", rejoined {d.rejoined_at.isoformat(timespec='seconds')}" if d.rejoined_at else "")
              for email, d in latest]
    return lines


def subscriber_record(store, address: str) -> dict:
    """For `subscribers show`: the address's unsubscribes and sign-ups (with the consent evidence)."""
    from . import preferences, signup
    from .subscribers import find

    found = find(store, address)
    left = preferences.departures(store, found.id) if found else []
    return {
        "unsubscribes": [{"newsletter": d.newsletter, "at": d.at.isoformat(), "how": d.how,
                          "rejoined_at": d.rejoined_at.isoformat() if d.rejoined_at else None} for d in left],
        "signups": [{"newsletters": list(s.newsletters), "at": s.created_at.isoformat(), "ip": s.ip,
                     "confirmed_at": s.confirmed_at.isoformat() if s.confirmed_at else None}
                    for s in signup.of_address(store, address)],
    }
