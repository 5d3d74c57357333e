"""Cron schedules in a time zone: validation and the UTC instants a schedule fires at, across DST.

A schedule is 5 cron fields (minute hour day-of-month month day-of-week) read as WALL-CLOCK times in
the config's IANA time zone; each matching wall time fires once, at an instant stored in UTC:

- A wall time that does not exist (spring forward, e.g. 02:30 on the night Europe/Berlin jumps from
  02:00 to 03:00) fires once at the first valid instant after the gap: the moment the clocks jump
  (03:00 local). Several matches in the gap (`*/15 2 * * *`) fire once, together, at that instant.
- A wall time that happens twice (fall back, e.g. 02:30 on the night Berlin goes from 03:00 back to
  02:00) fires once, at its first occurrence (summer time). An hourly schedule therefore fires 23 times
  on the short day (its 02:00 and 03:00 are one instant) and 24 on the long one: never twice at one
  wall time.

croniter iterates naive wall times (no DST arithmetic of its own); this module maps them to UTC.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

from tenants_app.services.errors import ValidationFailed

CRON_FIELDS = 5
MAX_CRON_LENGTH = 200
# A schedule must fire at least once in this window, or it never will (e.g. 30 February).
NEVER_HORIZON = timedelta(days=5 * 366)
# Random (`R`) and hashed (`H`) fields are croniter extensions whose slots are not reproducible.
_NONDETERMINISTIC = re.compile(r"(?:^|[,/-])[RH](?:$|[,/(-])", re.IGNORECASE)


def cron_validate(expression: object) -> str:
    """The expression with single spaces, or ValidationFailed on `schedule_cron` saying why."""
    if not isinstance(expression, str) or not expression.strip():
        raise _bad_cron("Enter a cron expression such as '30 2 * * *'.")
    if len(expression) > MAX_CRON_LENGTH:
        raise _bad_cron(f"Use at most {MAX_CRON_LENGTH} characters.")
    if expression.strip().startswith("@"):
        raise _bad_cron(
            "Use 5 fields (minute hour day-of-month month day-of-week), not a macro such as @daily."
        )
    fields = expression.split()
    if len(fields) != CRON_FIELDS:
        raise _bad_cron(
            f"Use exactly 5 fields (minute hour day-of-month month day-of-week); got {len(fields)}. "
            "Seconds and years are not supported."
        )
    if any(_NONDETERMINISTIC.search(field) for field in fields):
        raise _bad_cron("Random (R) and hashed (H) fields are not supported.")
    normalized = " ".join(fields)
    try:
        valid = croniter.is_valid(normalized)
    except (CroniterError, ValueError, TypeError):
        valid = False
    if not valid:
        raise _bad_cron(f"'{normalized}' is not a valid cron expression.")
    try:
        croniter(normalized, datetime(2000, 1, 1), max_years_between_matches=5).get_next(datetime)
    except CroniterBadDateError:
        raise _bad_cron("This schedule never fires (no such date).") from None
    except CroniterBadCronError as exc:
        raise _bad_cron(f"'{normalized}' is not a valid cron expression ({exc}).") from None
    return normalized


def timezone_validate(name: object) -> str:
    """The IANA time-zone name (`_zone_names`), or ValidationFailed on `timezone`."""
    if not isinstance(name, str) or name not in _zone_names():
        raise ValidationFailed(
            "invalid time zone",
            errors={
                "timezone": [
                    "Use an IANA time-zone name such as 'Europe/Berlin' or 'UTC' (not 'localtime', "
                    "'Factory', a file path or a posix/ or right/ name)."
                ]
            },
        )
    return name


def cron_next(*, expression: str, timezone: str, after: datetime) -> datetime:
    """The first instant (UTC) strictly after `after` at which the schedule fires."""
    return next(cron_iter(expression=expression, timezone=timezone, after=after))


def cron_iter(*, expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The instants (UTC, increasing, no repeats) strictly after `after` at which the schedule fires."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = _zone(timezone)
    after = after.astimezone(UTC)
    # Start early enough in wall time: when clocks go back, wall times before `after`'s own can map to
    # instants after it. Zones without a change nearby (and UTC) start right at `after`'s wall time.
    start = after.astimezone(zone).replace(tzinfo=None) - _shift(zone, after)
    walls = croniter(expression, start, max_years_between_matches=5)
    previous = after
    while True:
        wall = walls.get_next(datetime)
        instant = _instant(wall, zone)
        if instant > previous:
            previous = instant
            yield instant


def cron_prev(*, expression: str, timezone: str, before: datetime, count: int) -> list[datetime]:
    """The last `count` instants (UTC, increasing) at or before `before` at which the schedule fires."""
    zone = _zone(timezone)
    before = before.astimezone(UTC)
    start = before.astimezone(zone).replace(tzinfo=None) + _shift(zone, before) + timedelta(minutes=1)
    walls = croniter(expression, start, max_years_between_matches=5)
    found: list[datetime] = []
    while len(found) < count:
        try:
            instant = _instant(walls.get_prev(datetime), zone)
        except CroniterBadDateError:
            break
        if instant <= before and (not found or instant < found[-1]):
            found.append(instant)
    return sorted(found)


def _instant(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time: first occurrence if repeated, end of the gap if skipped."""
    first = wall.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # The wall time falls in a gap. fold=1 reads it with the offset after the jump, giving an instant
    # before the transition; fold=0 with the offset before, giving one after. The transition lies in
    # between: bisect for it on whole seconds (UTC offsets are whole seconds).
    offset_after = instant.astimezone(zone).utcoffset()
    low = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    high = int(instant.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _shift(zone: zoneinfo.ZoneInfo, instant: datetime) -> timedelta:
    """How far UTC offsets within a day of `instant` differ: 0 away from any clock change."""
    offsets = [(instant + timedelta(days=days)).astimezone(zone).utcoffset() for days in (-1, 0, 1)]
    return max(offsets) - min(offsets)  # type: ignore[type-var, operator]


@functools.cache
def _zone_names() -> frozenset[str]:
    """The zones of the `tzdata` package (a dependency): one catalogue on every host.

    Not `zoneinfo.available_timezones()`, which also walks the host's own zone files: there
    `localtime` is the machine's system zone, so a schedule in it would fire at different instants on
    different hosts. `Factory` is tzdata's placeholder for "zone unknown" (UTC, shown as -00): no place.
    """
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(listed) - {"Factory"}


def _zone(name: str) -> zoneinfo.ZoneInfo:
    # The same rule as input validation: a stored name from before it (`localtime`) is unusable, and
    # the scheduler reports its config as invalid instead of firing it at a host-dependent instant.
    return zoneinfo.ZoneInfo(timezone_validate(name))


def _bad_cron(reason: str) -> ValidationFailed:
    return ValidationFailed("invalid cron expression", errors={"schedule_cron": [reason]})
