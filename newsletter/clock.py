"""Reading moments and durations the way users write them.

The clock itself is never read here: callers pass the reference time (`--now`) down, so every stage is
repeatable in tests and previews.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo

_DURATION = re.compile(r"^\s*(\d+)\s*(w|d|h|m)\s*$", re.IGNORECASE)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
_UNIT_MINUTES = {"w": 7 * 24 * 60, "d": 24 * 60, "h": 60, "m": 1}
# A century: longer windows would reach before any date a post can have, and overflow date arithmetic.
LONGEST_DAYS = 36500
# Ruby's Time.parse accepts "2024-01-02 10:00:00 +0100", which fromisoformat does not.
_SPACED_OFFSET = re.compile(r"^(\d{4}-\d{1,2}-\d{1,2})[ T](\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*([+-]\d{2}:?\d{2}|Z)?$")


def parse_duration(text: str) -> timedelta:
    """Parse "7d", "2w", "12h" or "90m"; raise ValueError with the accepted forms otherwise."""
    match = _DURATION.match(str(text))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration; write a positive number and a unit, like 7d, 2w or 12h")
    if int(match.group(1)) * _UNIT_MINUTES[match.group(2).lower()] > LONGEST_DAYS * 24 * 60:
        raise ValueError(f"{text!r} is longer than {LONGEST_DAYS}d (a century); write a shorter duration")
    return timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})


def format_duration(span: timedelta) -> str:
    """A span in the forms parse_duration reads, in whole days, hours or minutes: 7d, 12h, 90m."""
    minutes = int(span.total_seconds() // 60)
    for unit, size in (("d", 24 * 60), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def localize(value: datetime | date, zone: tzinfo) -> datetime:
    """Make a date or datetime aware: naive values are wall-clock time in `zone`, aware ones are converted."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value.astimezone(zone)


def parse_moment(text: str, zone: tzinfo) -> datetime:
    """Parse an ISO 8601 date or datetime (offset optional, naive means `zone`) into an aware datetime."""
    raw = str(text).strip()
    try:
        parsed: datetime | date = datetime.fromisoformat(raw)
    except ValueError:
        match = _SPACED_OFFSET.match(raw)
        if not match:
            raise ValueError(
                f"{text!r} is not an ISO 8601 date or time, like 2026-01-05 or 2026-01-05T07:00:00+00:00"
            ) from None
        day, clock, offset = match.groups()
        year, month, dom = (int(part) for part in day.split("-"))
        iso = f"{year:04d}-{month:02d}-{dom:02d}T{clock.zfill(8) if clock.count(':') == 2 else clock}"
        if offset:
            iso += "+00:00" if offset == "Z" else f"{offset[:3]}:{offset[-2:]}"
        parsed = datetime.fromisoformat(iso)
    return localize(parsed, zone)
