"""When a CronJob should have run: its schedule read in its time zone, the
start times it missed since it last ran, and the next one to wake up for.

Pure functions of the schedule and the times given; the controller passes
its (injectable) clock's `now`.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from orchestrator.api.cron import CronSchedule

# Kubernetes warns (TooManyMissedTimes) past this many missed start times:
# a sign of clock skew or of a CronJob that was suspended or broken for long.
MAX_MISSED_START_TIMES = 100
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"

_MINUTE = timedelta(minutes=1)


class ZoneError(ValueError):
    """spec.timeZone names no zone this host knows."""


def resolve_zone(name: str | None) -> tzinfo:
    """The zone a schedule is read in. Unset means UTC: the control plane's
    own zone (what Kubernetes uses) would make a manifest mean different
    things on different hosts."""
    if not name:
        return UTC
    if name.lower() == "local":
        raise ZoneError(f'spec.timeZone "{name}": must be an explicit IANA time zone')
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ZoneError(f'spec.timeZone "{name}": unknown time zone') from None


@dataclass(frozen=True)
class MissedStarts:
    """Start times due in (earliest, now]: the most recent (None if none) and
    how many, counted up to MAX_MISSED_START_TIMES + 1."""

    most_recent: datetime | None
    count: int

    @property
    def too_many(self) -> bool:
        return self.count > MAX_MISSED_START_TIMES


def earliest_start(
    created: datetime, last_scheduled: datetime | None, starting_deadline: int | None, now: datetime
) -> datetime:
    """From when on missed start times still matter: the last run (or the
    CronJob's creation), but never further back than startingDeadlineSeconds."""
    earliest = last_scheduled or created
    if starting_deadline is not None:
        earliest = max(earliest, now - timedelta(seconds=starting_deadline))
    return earliest


def missed_starts(
    schedule: CronSchedule, zone: tzinfo, earliest: datetime, now: datetime
) -> MissedStarts:
    t = schedule.next_after(earliest.astimezone(zone))
    if t > now:
        return MissedStarts(None, 0)
    count = 0
    last = t
    while t <= now:
        count += 1
        last = t
        if count > MAX_MISSED_START_TIMES:
            return MissedStarts(_latest_start(schedule, zone, t, now), count)
        t = schedule.next_after(t)
    return MissedStarts(last, count)


def _latest_start(schedule: CronSchedule, zone: tzinfo, known: datetime, now: datetime) -> datetime:
    """The last start time at or before now, given one (known) that is.

    A bisection over whole minutes rather than a walk, so a CronJob that
    fires every minute and was stopped for a year costs ~20 steps, not
    half a million. next_after(s) <= now holds for s just before `known`
    and fails for s = now; the boundary minute s is the one just before
    the answer."""
    lo = _floor_minute(known) - _MINUTE
    hi = _floor_minute(now)
    while hi - lo > _MINUTE:
        steps = (hi - lo) // _MINUTE
        mid = lo + (steps // 2) * _MINUTE
        if schedule.next_after(mid.astimezone(zone)) <= now:
            lo = mid
        else:
            hi = mid
    return schedule.next_after(lo.astimezone(zone))


def _floor_minute(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


def next_start(schedule: CronSchedule, zone: tzinfo, now: datetime) -> datetime:
    return schedule.next_after(now.astimezone(zone))


def job_name(cronjob_name: str, scheduled: datetime) -> str:
    """`<cronjob>-<minutes since the epoch>`: one name per start time, so a
    retried creation finds the Job it already made instead of a second one."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def scheduled_timestamp(scheduled: datetime, zone: tzinfo) -> str:
    """RFC 3339 in the CronJob's zone, as Kubernetes writes the annotation."""
    text = scheduled.astimezone(zone).replace(microsecond=0).isoformat()
    if text.endswith("+00:00"):
        return text[: -len("+00:00")] + "Z"
    return text
