"""Job conditions and timestamps, shared by the Job, CronJob and
TTL-after-finished controllers so all three agree on when a Job is finished
and when it finished."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.pb import batch_v1_pb2 as batch

COMPLETE = "Complete"
FAILED = "Failed"
SUSPENDED = "Suspended"


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC, whole seconds: the form every timestamp in the API takes."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> datetime | None:
    """An API timestamp as an aware datetime, or None when unset or malformed
    (a malformed time must not wedge a controller; it is treated as unknown)."""
    if not s:
        return None
    try:
        t = parse_rfc3339(s)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def find_condition(status: Any, type_: str) -> Any | None:
    for cond in status.conditions:
        if cond.type == type_:
            return cond
    return None


def condition_true(status: Any, type_: str) -> bool:
    cond = find_condition(status, type_)
    return cond is not None and cond.status == "True"


def finished_type(job: Any) -> str | None:
    """COMPLETE or FAILED once the Job has finished, else None."""
    for cond in job.status.conditions:
        if cond.type in (COMPLETE, FAILED) and cond.status == "True":
            return str(cond.type)
    return None


def finish_time(job: Any) -> datetime | None:
    """When the Job finished: its finishing condition's transition time, as
    Kubernetes' TTL controller reads it (completionTime is only set for
    Complete). None for unfinished Jobs or a condition without a time."""
    for cond in job.status.conditions:
        if cond.type in (COMPLETE, FAILED) and cond.status == "True":
            return parse_time(cond.last_transition_time) or parse_time(job.status.completion_time)
    return None


def set_condition(
    status: Any, type_: str, value: str, reason: str, message: str, now: datetime
) -> bool:
    """Set a condition on a JobStatus; the transition time moves only when the
    value changes. Returns whether anything changed."""
    stamp = format_time(now)
    cond = find_condition(status, type_)
    if cond is None:
        status.conditions.append(
            batch.JobCondition(
                type=type_,
                status=value,
                reason=reason,
                message=message,
                last_probe_time=stamp,
                last_transition_time=stamp,
            )
        )
        return True
    if cond.status == value and cond.reason == reason and cond.message == message:
        return False
    if cond.status != value:
        cond.last_transition_time = stamp
    cond.status = value
    cond.reason = reason
    cond.message = message
    cond.last_probe_time = stamp
    return True
