"""Back-off between re-creations of a Job's failed pods, as Kubernetes does it:
10 s after the first failure since the last success, doubling with each
further one, capped at 6 minutes.

Derived from the pods themselves (a Job's finished pods stay until the Job
goes), so a restarted controller waits exactly as long as the old one would
have, with no state of its own to lose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.controllers.job_conditions import parse_time

BACKOFF_BASE = 10.0
BACKOFF_MAX = 360.0


@dataclass(frozen=True)
class BackoffRecord:
    failures_after_success: int
    last_failure: datetime | None


def pod_finished_at(pod: Any) -> datetime | None:
    """When a finished pod finished: the latest container termination, else
    the Ready condition's last change, else (a pod failed before any
    container ran) its deletion or creation time."""
    latest: datetime | None = None
    for cs in (*pod.status.init_container_statuses, *pod.status.container_statuses):
        t = parse_time(cs.state.terminated.finished_at)
        if t is not None and (latest is None or t > latest):
            latest = t
    if latest is not None:
        return latest
    for cond in pod.status.conditions:
        if cond.type == "Ready" and cond.status == "False":
            t = parse_time(cond.last_transition_time)
            if t is not None:
                return t
    return parse_time(pod.metadata.deletion_timestamp) or parse_time(
        pod.metadata.creation_timestamp
    )


def backoff_record(pods: Iterable[Any]) -> BackoffRecord:
    """Failures since the most recent success, and when the last one happened."""
    successes: list[datetime] = []
    failures: list[datetime] = []
    for pod in pods:
        phase = pod.status.phase
        if phase not in ("Succeeded", "Failed"):
            continue
        t = pod_finished_at(pod)
        if t is None:
            continue
        (successes if phase == "Succeeded" else failures).append(t)
    last_success = max(successes, default=None)
    after = [t for t in failures if last_success is None or t > last_success]
    return BackoffRecord(len(after), max(after, default=None))


def backoff_delay(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """How long after the n-th consecutive failure a replacement may start."""
    if failures <= 0:
        return 0.0
    # 2**n overflows nothing in Python, but the cap is reached long before.
    return min(base * 2 ** min(failures - 1, 32), cap)


def backoff_remaining(
    record: BackoffRecord, now: datetime, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX
) -> float:
    """Seconds still to wait before creating a pod; 0 when free to go."""
    if record.last_failure is None or record.failures_after_success <= 0:
        return 0.0
    delay = backoff_delay(record.failures_after_success, base, cap)
    remaining = delay - (now - record.last_failure).total_seconds()
    # A clock step backwards must not stretch the wait beyond one full delay.
    return max(0.0, min(remaining, delay))
