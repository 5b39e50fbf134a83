"""`newsletter admin`: what the editors' console at /admin/ of `newsletter serve` needs set up."""

from __future__ import annotations

import sys

import click

from .cli import cli


@cli.group()
def admin() -> None:
    """The editors' console (/admin/ of `newsletter serve`)."""


@admin.command(name="hash-password")
def hash_password_command() -> None:
    """Print the argon2 hash of a console password, for [web] admin_password_hash or
    NEWSLETTER_ADMIN_PASSWORD_HASH. On a terminal it asks twice without echo; otherwise it reads the first line
    of standard input. Only the hash is printed."""
    from .web.signin import hash_password

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise click.UsageError("the two passwords differ; nothing was printed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.UsageError("the password is empty; nothing was printed")
    click.echo(hash_password(password))
