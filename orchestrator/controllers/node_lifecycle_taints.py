"""Pure decisions about node taints and pod tolerations, as Kubernetes' node
lifecycle controller (TaintNodesByCondition, TaintBasedEvictions) and its
NoExecute taint manager make them.

Nothing here talks to the API or reads a clock: callers pass `now` in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.pb import core_v1_pb2 as core

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
PID_PRESSURE = "node.kubernetes.io/pid-pressure"
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"

# Condition (type, status) -> the NoSchedule taint it implies (TaintNodesByCondition).
CONDITION_TAINTS: dict[tuple[str, str], str] = {
    ("Ready", "False"): NOT_READY,
    ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): MEMORY_PRESSURE,
    ("DiskPressure", "True"): DISK_PRESSURE,
    ("PIDPressure", "True"): PID_PRESSURE,
    ("NetworkUnavailable", "True"): NETWORK_UNAVAILABLE,
}
# The NoSchedule taints this controller owns: it adds and removes exactly these.
OWNED_NO_SCHEDULE = frozenset({*CONDITION_TAINTS.values(), UNSCHEDULABLE})
# The NoExecute taints it owns (TaintBasedEvictions).
OWNED_NO_EXECUTE = frozenset({NOT_READY, UNREACHABLE})


def condition(node: Any, ctype: str) -> Any | None:
    for c in node.status.conditions:
        if c.type == ctype:
            return c
    return None


def ready_status(node: Any) -> str:
    """ "True", "False" or "Unknown" ("Unknown" too when never reported)."""
    c = condition(node, "Ready")
    return str(c.status) if c is not None and c.status else "Unknown"


def desired_no_schedule(node: Any) -> set[str]:
    """Keys of the NoSchedule taints the node's conditions and spec call for."""
    keys = {
        CONDITION_TAINTS[(c.type, c.status)]
        for c in node.status.conditions
        if (c.type, c.status) in CONDITION_TAINTS
    }
    if node.spec.unschedulable:
        keys.add(UNSCHEDULABLE)
    return keys


def no_execute_for(ready: str) -> str | None:
    """The NoExecute taint a Ready status calls for, if any."""
    if ready == "True":
        return None
    return NOT_READY if ready == "False" else UNREACHABLE


def reconcile_taints(
    taints: Sequence[Any],
    *,
    no_schedule: set[str],
    no_execute: str | None,
    now: str,
    manage_no_execute: bool = True,
) -> list[core.Taint] | None:
    """The node's taint list with the controller-owned ones made to match, or
    None when nothing changes. Taints other parties set are kept as they are;
    an owned taint that stays keeps its timeAdded (eviction deadlines count
    from it). With manage_no_execute False the NoExecute taints are left alone
    (they are rate-limited and decided elsewhere)."""
    result: list[core.Taint] = []
    present: set[tuple[str, str]] = set()
    changed = False
    for t in taints:
        if t.effect == NO_SCHEDULE and t.key in OWNED_NO_SCHEDULE and t.key not in no_schedule:
            changed = True
            continue
        if (
            manage_no_execute
            and t.effect == NO_EXECUTE
            and t.key in OWNED_NO_EXECUTE
            and t.key != no_execute
        ):
            changed = True
            continue
        kept = core.Taint()
        kept.CopyFrom(t)
        result.append(kept)
        present.add((t.key, t.effect))
    for key in sorted(no_schedule):
        if (key, NO_SCHEDULE) not in present:
            result.append(core.Taint(key=key, effect=NO_SCHEDULE))
            changed = True
    if manage_no_execute and no_execute is not None and (no_execute, NO_EXECUTE) not in present:
        # timeAdded only on NoExecute taints, as Kubernetes sets it.
        result.append(core.Taint(key=no_execute, effect=NO_EXECUTE, time_added=now))
        changed = True
    return result if changed else None


def owned_no_execute(taints: Iterable[Any]) -> set[str]:
    return {t.key for t in taints if t.effect == NO_EXECUTE and t.key in OWNED_NO_EXECUTE}


# -- tolerations ----------------------------------------------------------------------


def tolerates(toleration: Any, taint: Any) -> bool:
    """Kubernetes' Toleration.ToleratesTaint: an empty effect or key matches
    any; Exists ignores the value; an empty operator means Equal."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator == "Exists":
        return True
    if toleration.operator in ("", "Equal"):
        return bool(toleration.value == taint.value)
    return False


def _matching(taint: Any, tolerations: Sequence[Any]) -> Any | None:
    for tol in tolerations:
        if tolerates(tol, taint):
            return tol
    return None


def _time_added(taint: Any, first_seen: datetime) -> datetime:
    if taint.time_added:
        try:
            return parse_rfc3339(taint.time_added)
        except ValueError:
            pass
    return first_seen


@dataclass(frozen=True)
class EvictionDecision:
    """When a pod must go because of its node's NoExecute taints.

    due None: it may stay (no NoExecute taint, or every one is tolerated
    forever). Otherwise it goes at `due` (at once when that has passed)."""

    due: datetime | None
    reason: str


def eviction_due(
    tolerations: Sequence[Any], taints: Sequence[Any], first_seen: datetime
) -> EvictionDecision:
    """As the NoExecute taint manager decides: an untolerated NoExecute taint
    evicts at once; otherwise the pod stays for the shortest tolerationSeconds
    among the tolerations it relies on, counted from when each taint was added
    (a toleration without seconds tolerates forever; a negative one is zero).

    Counting from the taint's timeAdded rather than from when this process
    first saw it keeps the deadline across controller restarts. `first_seen`
    stands in for a taint without timeAdded."""
    no_execute = [t for t in taints if t.effect == NO_EXECUTE]
    if not no_execute:
        return EvictionDecision(None, "")
    due: datetime | None = None
    reason = ""
    for taint in no_execute:
        added = _time_added(taint, first_seen)
        tol = _matching(taint, tolerations)
        if tol is None:
            return EvictionDecision(added, f"taint {taint.key}:{NO_EXECUTE} is not tolerated")
        if not tol.HasField("toleration_seconds"):
            continue
        seconds = max(0, int(tol.toleration_seconds))
        deadline = datetime.fromtimestamp(added.timestamp() + seconds, tz=added.tzinfo)
        if due is None or deadline < due:
            due = deadline
            reason = f"taint {taint.key}:{NO_EXECUTE} tolerated for {seconds}s"
    return EvictionDecision(due, reason)
