"""Cron schedules as a Kubernetes CronJob's `spec.schedule` accepts them.

Five fields (minute, hour, day of month, month, day of week), each a list of
`*`, `?`, values, ranges `a-b` and steps `*/n`, `a-b/n`, `a/n` (= `a-max/n`);
months and weekdays may be written as JAN-DEC and SUN-SAT; weekday 7 is also
Sunday. The macros @yearly, @annually, @monthly, @weekly, @daily, @midnight
and @hourly stand for their five-field forms.

Day of month and day of week combine as in Vixie cron (and robfig/cron,
which Kubernetes uses): when either field is unrestricted (`*` or `?`) a day
must match both; when both are restricted, matching either is enough.

`TZ=` and `CRON_TZ=` prefixes are rejected as Kubernetes rejects them: the
zone belongs in `spec.timeZone`, so it is visible and validated.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

__all__ = ["CronError", "CronSchedule", "parse_schedule"]


class CronError(ValueError):
    """A schedule that is not a valid cron expression."""


_MONTH_NAMES: Final = {
    name: i + 1
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
    )
}
_WEEKDAY_NAMES: Final = {
    name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}

_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS: Final = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day of week", 0, 7, _WEEKDAY_NAMES),
)

# ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
_DIGITS: Final = re.compile("[0-9]+")

# Feb 29 may be years away (2096 -> 2104 skips a leap year); anything that
# has not fired in this long never will.
_SEARCH_YEARS: Final = 10


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule. Times are wall-clock times in the zone of the datetime given."""

    source: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_unrestricted: bool
    weekdays_unrestricted: bool

    def _day_matches(self, t: datetime) -> bool:
        day_ok = t.day in self.days
        # Python's Monday=0 -> cron's Sunday=0.
        weekday_ok = (t.weekday() + 1) % 7 in self.weekdays
        if self.days_unrestricted or self.weekdays_unrestricted:
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def matches(self, t: datetime) -> bool:
        """Whether the schedule fires at the wall-clock minute of ``t``."""
        return (
            t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self._day_matches(t)
        )

    def next_after(self, t: datetime) -> datetime:
        """The first time strictly after ``t`` at which the schedule fires.

        ``t`` must be timezone-aware; the schedule is read in ``t``'s zone and
        the answer carries the same tzinfo. Wall-clock times skipped by a
        daylight-saving jump do not fire that day; a repeated hour fires once.
        """
        zone = t.tzinfo
        if zone is None or t.utcoffset() is None:
            raise ValueError("next_after needs a timezone-aware datetime")
        after = t.astimezone(UTC)
        wall = t.replace(tzinfo=None, second=0, microsecond=0, fold=0) + timedelta(minutes=1)
        last_year = wall.year + _SEARCH_YEARS
        while wall.year <= last_year:
            if wall.month not in self.months:
                wall = _first_of_next_month(wall)
            elif not self._day_matches(wall):
                wall = (wall + timedelta(days=1)).replace(hour=0, minute=0)
            elif wall.hour not in self.hours:
                wall = (wall + timedelta(hours=1)).replace(minute=0)
            elif wall.minute not in self.minutes:
                wall += timedelta(minutes=1)
            else:
                candidate = wall.replace(tzinfo=zone)
                if _exists(candidate, zone) and candidate.astimezone(UTC) > after:
                    return candidate
                wall += timedelta(minutes=1)
        raise CronError(
            f'schedule "{self.source}" does not fire in the {_SEARCH_YEARS} years '
            f"after {t.isoformat()}"
        )

    def __str__(self) -> str:
        return self.source


def _first_of_next_month(t: datetime) -> datetime:
    if t.month == 12:
        return t.replace(year=t.year + 1, month=1, day=1, hour=0, minute=0)
    return t.replace(month=t.month + 1, day=1, hour=0, minute=0)


def _exists(aware: datetime, zone: tzinfo) -> bool:
    """False for wall-clock times inside a daylight-saving gap."""
    back = aware.astimezone(UTC).astimezone(zone)
    return back.replace(tzinfo=None) == aware.replace(tzinfo=None)


def parse_schedule(s: str) -> CronSchedule:
    """Parse a five-field cron expression or macro, or raise CronError saying why not."""
    text = s.strip()
    if not text:
        raise CronError("empty schedule")
    if text.startswith(("TZ=", "CRON_TZ=")):
        raise CronError("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    if text.startswith("@"):
        expanded = _MACROS.get(text)
        if expanded is None:
            known = ", ".join(_MACROS)
            raise CronError(f'unrecognized descriptor "{text}" (expected one of {known})')
        fields = expanded.split()
    else:
        fields = text.split()
    if len(fields) != len(_FIELDS):
        raise CronError(f'expected exactly 5 fields, found {len(fields)}: "{text}"')
    parsed = [_parse_field(f, spec) for f, spec in zip(fields, _FIELDS, strict=True)]
    (minutes, _), (hours, _), (days, days_any), (months, _), (weekdays, weekdays_any) = parsed
    # Day of week 7 is another spelling of Sunday.
    weekdays = frozenset(d % 7 for d in weekdays)
    schedule = CronSchedule(
        source=s,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        days_unrestricted=days_any,
        weekdays_unrestricted=weekdays_any,
    )
    _check_reachable(schedule)
    return schedule


def _check_reachable(schedule: CronSchedule) -> None:
    # Only a restricted day of month combined with an unrestricted day of week
    # can ask for a date that never exists ("30 2": February 30th).
    if schedule.days_unrestricted or not schedule.weekdays_unrestricted:
        return
    for month in schedule.months:
        longest = calendar.monthrange(2024, month)[1]  # a leap year: Feb 29 counts
        if any(day <= longest for day in schedule.days):
            return
    raise CronError(f'schedule "{schedule.source}" names days that never occur in its months')


def _parse_field(text: str, spec: _Field) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    unrestricted = False
    for part in text.split(","):
        if not part:
            raise CronError(f'empty list item in {spec.name} field "{text}"')
        part_values, part_any = _parse_part(part, spec)
        values |= part_values
        unrestricted = unrestricted or part_any
    return frozenset(values), unrestricted


def _parse_part(part: str, spec: _Field) -> tuple[set[int], bool]:
    range_text, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not _DIGITS.fullmatch(step_text) or int(step_text) == 0:
            raise CronError(
                f'step "{step_text}" in {spec.name} field "{part}" must be a positive number'
            )
        step = int(step_text)
    if range_text in ("*", "?"):
        # A stepped star ("*/2") restricts the field; a bare one does not.
        return set(range(spec.low, _open_end(spec) + 1, step)), step == 1
    start_text, dash, end_text = range_text.partition("-")
    low = _value(start_text, spec, part)
    if dash:
        high = _value(end_text, spec, part)
    else:
        high = _open_end(spec) if slash else low  # "a/n" means "a-max/n"
    if low > high:
        raise CronError(
            f'beginning of range ({low}) beyond end of range ({high}) in {spec.name} field "{part}"'
        )
    return set(range(low, high + 1, step)), False


def _open_end(spec: _Field) -> int:
    """Where "*" and "a/n" stop: weekday 7 is only an alias of Sunday, so a
    range left open ends at Saturday (as robfig/cron's bounds do), else
    "1/2" would fire on Sunday too."""
    return 6 if spec.name == "day of week" else spec.high


def _value(text: str, spec: _Field, part: str) -> int:
    named = spec.names.get(text.upper())
    if named is not None:
        return named
    if not _DIGITS.fullmatch(text) or len(text) > 4:
        raise CronError(f'invalid value "{text}" in {spec.name} field "{part}"')
    number = int(text)
    if not spec.low <= number <= spec.high:
        raise CronError(
            f'value {number} out of range {spec.low}-{spec.high} in {spec.name} field "{part}"'
        )
    return number
