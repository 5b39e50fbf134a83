"""Errors and warnings that a person can act on.

Every stage reports bad input as a `Problem` naming where (file and line, or config key) and what is wrong,
and goes on with the valid rest. Errors that stop a command carry every problem at once, not only the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One piece of bad input: where it is and what is wrong with it."""

    where: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        place = f"{self.where}:{self.line}" if self.line else self.where
        return f"{place}: {self.message}"


def display_path(path: Path) -> str:
    """A path as the user can open it: relative to the working folder when it is below it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


class NewsletterError(Exception):
    """Base of the errors the command line turns into a message and an exit status."""

    exit_code = 1


class ConfigError(NewsletterError):
    """The configuration cannot be used; `problems` lists every reason found."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UnknownNameError(NewsletterError):
    """A name given on the command line (a newsletter, an issue) that does not exist."""

    exit_code = 2


class RenderError(NewsletterError):
    """A template failed to render; the message names the template and line."""
