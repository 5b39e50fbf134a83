"""Reading moments and durations the way users write them.

The clock itself is never read here: callers pass the reference time (`--now`) down, so every stage is
repeatable in tests and previews.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

_DURATION = re.compile(r"^\s*(\d+)\s*(w|d|h|m)\s*$", re.IGNORECASE)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
_UNIT_MINUTES = {"w": 7 * 24 * 60, "d": 24 * 60, "h": 60, "m": 1}
# A century: longer windows would reach before any date a post can have, and overflow date arithmetic.
LONGEST_DAYS = 36500
# The forms Ruby's Time.parse (which Jekyll reads a quoted date with) accepts beyond ISO 8601: one-digit month,
# day and hour, a space before the offset, an offset without a colon or without minutes, UTC and GMT.
_RUBY_MOMENT = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:(?:T|\s+)(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(?:(Z|UTC|GMT)|([+-])(\d{2}):?(\d{2})?)?$",
    re.IGNORECASE,
)


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
    """Parse an ISO 8601 date or datetime (offset optional, naive means `zone`) into an aware datetime; also
    the looser forms Ruby's Time.parse reads, like "2025-07-22 9:30 +0100". ValueError names what is wrong."""
    raw = str(text).strip()
    try:
        parsed: datetime | date = datetime.fromisoformat(raw)
    except ValueError:
        parsed = _ruby_moment(raw, text)
    return localize(parsed, zone)


def _ruby_moment(raw: str, text: str) -> datetime:
    match = _RUBY_MOMENT.match(raw)
    if not match:
        raise ValueError(
            f"{text!r} is not an ISO 8601 date or time, like 2026-01-05 or 2026-01-05T07:00:00+00:00"
        ) from None
    year, month, day, hour, minute, second, fraction, utc, sign, off_hours, off_minutes = match.groups()
    zone = None
    if utc:
        zone = timezone.utc
    elif sign:
        offset = timedelta(hours=int(off_hours), minutes=int(off_minutes or 0))
        zone = timezone(-offset if sign == "-" else offset)  # ValueError past 24 hours
    return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                    int((fraction or "0")[:6].ljust(6, "0")), tzinfo=zone)
