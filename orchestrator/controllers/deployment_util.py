"""The Deployment controller's decisions, as functions of state.

Kubernetes' deployment/util and the arithmetic of sync.go, rolling.go and
progress.go: which ReplicaSet is new, how far a rollout may surge and how
many pods may be unavailable, how many replicas each step moves, how a
resize mid-rollout is shared out, revision bookkeeping, history cleanup and
the status and conditions a Deployment reports. Plans are returned as
{ReplicaSet name: new spec.replicas}; the controller writes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from orchestrator.api.intorstr import resolve_scaled
from orchestrator.api.meta import parse_rfc3339
from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.api.pb import core_v1_pb2 as core

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Deployment annotations that are the controller's own, never copied to a ReplicaSet.
_NOT_COPIED = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
     "deprecated.deployment.rollback.to"}
)  # fmt: skip
MAX_REVISION_HISTORY_CHARS = 2000

RECREATE = "Recreate"
ROLLING_UPDATE = "RollingUpdate"

# Condition types and reasons, as Kubernetes spells them.
AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
MINIMUM_AVAILABLE = "MinimumReplicasAvailable"
MINIMUM_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_CREATE_ERROR = "ReplicaSetCreateError"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"

MAX_INT32 = 2**31 - 1

Plan = dict[str, int]


# -- reading objects -----------------------------------------------------------------


def replicas(obj: Any) -> int:
    """spec.replicas, 1 when unset (admission sets it; objects in tests may not)."""
    return obj.spec.replicas if obj.spec.HasField("replicas") else 1


def revision(rs: Any) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION, "0") or "0")
    except ValueError:
        return 0


def _int_annotation(rs: Any, key: str) -> int | None:
    raw = rs.metadata.annotations.get(key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def desired_replicas_annotation(rs: Any) -> int | None:
    return _int_annotation(rs, DESIRED_REPLICAS)


def max_replicas_annotation(rs: Any) -> int | None:
    return _int_annotation(rs, MAX_REPLICAS)


def _created(rs: Any) -> tuple[str, str]:
    # RFC 3339 in UTC with a fixed format sorts as text; the name breaks ties.
    return (rs.metadata.creation_timestamp, rs.metadata.name)


def by_creation(rss: Iterable[Any]) -> list[Any]:
    return sorted(rss, key=_created)


def active(rss: Iterable[Any | None]) -> list[Any]:
    """ReplicaSets that want pods (Kubernetes' FilterActiveReplicaSets)."""
    return [rs for rs in rss if rs is not None and rs.spec.replicas > 0]


def total_replicas(rss: Iterable[Any | None]) -> int:
    return sum(rs.spec.replicas for rs in rss if rs is not None)


def total_actual(rss: Iterable[Any | None]) -> int:
    return sum(rs.status.replicas for rs in rss if rs is not None)


def total_available(rss: Iterable[Any | None]) -> int:
    return sum(rs.status.available_replicas for rs in rss if rs is not None)


def total_ready(rss: Iterable[Any | None]) -> int:
    return sum(rs.status.ready_replicas for rs in rss if rs is not None)


# -- templates -----------------------------------------------------------------------


def template_without_hash(template: Any) -> Any:
    clone = core.PodTemplateSpec()
    clone.CopyFrom(template)
    clone.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    return clone


def equal_ignore_hash(a: Any, b: Any) -> bool:
    """Templates equal but for the pod-template-hash label (Kubernetes' EqualIgnoreHash)."""
    return bool(template_without_hash(a) == template_without_hash(b))


def find_new_rs(d: Any, rss: Sequence[Any]) -> Any | None:
    """The ReplicaSet running d's current template; the oldest if several do."""
    for rs in by_creation(rss):
        if equal_ignore_hash(rs.spec.template, d.spec.template):
            return rs
    return None


def old_rss(new_rs: Any | None, rss: Sequence[Any]) -> list[Any]:
    uid = new_rs.metadata.uid if new_rs is not None else None
    return [rs for rs in rss if rs.metadata.uid != uid]


def max_revision(rss: Iterable[Any]) -> int:
    return max((revision(rs) for rs in rss), default=0)


# -- surge and unavailability ----------------------------------------------------------


def resolve_fenceposts(
    max_surge: str | None, max_unavailable: str | None, desired: int
) -> tuple[int, int]:
    """(surge, unavailable) in pods: percentages of desired, surge rounded up and
    unavailable down; both zero would deadlock a rollout, so unavailable becomes 1."""
    surge = resolve_scaled(max_surge, desired, True, "25%")
    unavailable = resolve_scaled(max_unavailable, desired, False, "25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling(d: Any) -> tuple[str | None, str | None]:
    ru = d.spec.strategy.rolling_update
    surge = ru.max_surge if ru.HasField("max_surge") else None
    unavailable = ru.max_unavailable if ru.HasField("max_unavailable") else None
    return surge, unavailable


def is_rolling(d: Any) -> bool:
    return d.spec.strategy.type != RECREATE


def max_surge(d: Any) -> int:
    if not is_rolling(d):
        return 0
    surge, unavailable = _rolling(d)
    return resolve_fenceposts(surge, unavailable, replicas(d))[0]


def max_unavailable(d: Any) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    surge, unavailable = _rolling(d)
    return min(resolve_fenceposts(surge, unavailable, replicas(d))[1], replicas(d))


# -- rolling update steps ---------------------------------------------------------------


def new_rs_new_replicas(d: Any, all_rss: Sequence[Any | None], new_rs: Any | None) -> int:
    """How big the new ReplicaSet may be now (Kubernetes' NewRSNewReplicas)."""
    new_size = new_rs.spec.replicas if new_rs is not None else 0
    if not is_rolling(d):
        return replicas(d)
    current = total_replicas(all_rss)
    max_total = replicas(d) + max_surge(d)
    if current >= max_total:
        return new_size
    scale_up = min(max_total - current, replicas(d) - new_size)
    return new_size + scale_up


def plan_new_rs(d: Any, all_rss: Sequence[Any | None], new_rs: Any) -> int | None:
    """reconcileNewReplicaSet: the new ReplicaSet's next size, or None to leave it."""
    want = replicas(d)
    if new_rs.spec.replicas == want:
        return None
    if new_rs.spec.replicas > want:
        return want
    size = new_rs_new_replicas(d, all_rss, new_rs)
    return None if size == new_rs.spec.replicas else size


def plan_old_rss(d: Any, all_rss: Sequence[Any | None], old: Sequence[Any], new_rs: Any) -> Plan:
    """reconcileOldReplicaSets: how far old ReplicaSets shrink now.

    First unhealthy replicas go (they serve nothing), within what the
    unavailability budget allows; then healthy ones, while enough pods stay
    available overall."""
    old_count = total_replicas(old)
    if old_count == 0:
        return {}
    all_count = total_replicas(all_rss)
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = new_rs.spec.replicas - new_rs.status.available_replicas
    max_scaled_down = all_count - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    sizes = {rs.metadata.name: rs.spec.replicas for rs in old}
    plan: Plan = {}

    # cleanupUnhealthyReplicas
    cleaned = 0
    for rs in by_creation(old):
        if cleaned >= max_scaled_down:
            break
        size = sizes[rs.metadata.name]
        if size == 0 or size == rs.status.available_replicas:
            continue
        down = min(max_scaled_down - cleaned, size - rs.status.available_replicas)
        if down <= 0:
            continue
        sizes[rs.metadata.name] = size - down
        plan[rs.metadata.name] = size - down
        cleaned += down

    # scaleDownOldReplicaSetsForRollingUpdate
    available = total_available(all_rss)
    if available > min_available:
        budget = available - min_available
        scaled = 0
        for rs in by_creation(old):
            if scaled >= budget:
                break
            size = sizes[rs.metadata.name]
            if size == 0:
                continue
            down = min(size, budget - scaled)
            sizes[rs.metadata.name] = size - down
            plan[rs.metadata.name] = size - down
            scaled += down
    return plan


# -- proportional scaling ------------------------------------------------------------------


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def replica_set_fraction(rs: Any, d: Any) -> int:
    """How many replicas rs gains (or loses) when the Deployment is resized, in
    proportion to its share of the size it was last scaled for."""
    if replicas(d) == 0:
        return -rs.spec.replicas
    deployment_replicas = replicas(d) + max_surge(d)
    annotated = max_replicas_annotation(rs)
    if annotated is None:
        annotated = d.status.replicas
    if annotated <= 0:
        return 0
    new_size = rs.spec.replicas * deployment_replicas / annotated
    return _round_half_away(new_size) - rs.spec.replicas


def proportion(rs: Any, d: Any, to_add: int, added: int) -> int:
    if rs is None or rs.spec.replicas == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = replica_set_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def find_active_or_latest(new_rs: Any | None, old: Sequence[Any]) -> Any | None:
    if new_rs is None and not old:
        return None
    newest_first = sorted(old, key=_created, reverse=True)
    live = active([*newest_first, new_rs])
    if not live:
        return new_rs if new_rs is not None else newest_first[0]
    if len(live) == 1:
        return live[0]
    return None


def is_saturated(d: Any, rs: Any | None) -> bool:
    if rs is None:
        return False
    want = replicas(d)
    return (
        desired_replicas_annotation(rs) == want
        and rs.spec.replicas == want
        and rs.status.available_replicas == want
    )


def plan_scale(d: Any, new_rs: Any | None, old: Sequence[Any]) -> Plan:
    """Kubernetes' scale(): resize for a change of spec.replicas. One active
    ReplicaSet takes the new size; mid-rollout the change is shared out in
    proportion to each ReplicaSet's size, the rounding leftover going to the
    largest, so a rollout neither stalls nor overshoots its surge."""
    target = find_active_or_latest(new_rs, old)
    if target is not None:
        if target.spec.replicas == replicas(d):
            return {}
        return {target.metadata.name: replicas(d)}
    if is_saturated(d, new_rs):
        return {rs.metadata.name: 0 for rs in active(old)}
    if not is_rolling(d):
        return {}
    live = active([*old, new_rs])
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - total_replicas(live)
    if to_add > 0:
        # Larger first; on a tie the newer first.
        live = sorted(live, key=_created, reverse=True)
        live = sorted(live, key=lambda rs: rs.spec.replicas, reverse=True)
    elif to_add < 0:
        # Larger first; on a tie the older first.
        live = sorted(sorted(live, key=_created), key=lambda rs: rs.spec.replicas, reverse=True)
    sizes: Plan = {}
    added = 0
    for rs in live:
        if to_add != 0:
            share = proportion(rs, d, to_add, added)
            sizes[rs.metadata.name] = rs.spec.replicas + share
            added += share
        else:
            sizes[rs.metadata.name] = rs.spec.replicas
    if to_add != 0 and live:
        first = live[0].metadata.name
        sizes[first] = max(sizes[first] + to_add - added, 0)
    return {
        rs.metadata.name: sizes[rs.metadata.name]
        for rs in live
        if sizes[rs.metadata.name] != rs.spec.replicas or _annotations_stale(rs, d)
    }


def _annotations_stale(rs: Any, d: Any) -> bool:
    return desired_replicas_annotation(rs) != replicas(d) or max_replicas_annotation(rs) != (
        replicas(d) + max_surge(d)
    )


def is_scaling_event(d: Any, new_rs: Any | None, old: Sequence[Any]) -> bool:
    """spec.replicas changed since the active ReplicaSets were last sized for it."""
    for rs in active([*old, new_rs]):
        desired = desired_replicas_annotation(rs)
        if desired is not None and desired != replicas(d):
            return True
    return False


def set_replicas_annotations(rs: Any, desired: int, maximum: int) -> bool:
    ann = rs.metadata.annotations
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(maximum))):
        if ann.get(key) != value:
            ann[key] = value
            changed = True
    return changed


# -- revisions --------------------------------------------------------------------------------


def set_new_rs_annotations(d: Any, rs: Any, new_revision: int, exists: bool) -> bool:
    """Copy d's annotations to rs and give it new_revision; a ReplicaSet that
    comes back (a rollback) keeps the revisions it had in revision-history."""
    ann = rs.metadata.annotations
    changed = False
    for key, value in d.metadata.annotations.items():
        if key in _NOT_COPIED:
            continue
        if ann.get(key) != value:
            ann[key] = value
            changed = True
    old_text = ann.get(REVISION, "")
    old = revision(rs)
    if old < new_revision:
        ann[REVISION] = str(new_revision)
        changed = True
        if old_text:
            history = [h for h in ann.get(REVISION_HISTORY, "").split(",") if h]
            history.append(old_text)
            while len(",".join(history)) > MAX_REVISION_HISTORY_CHARS and len(history) > 1:
                history.pop(0)
            ann[REVISION_HISTORY] = ",".join(history)
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def rs_to_clean_up(d: Any, old: Sequence[Any]) -> list[Any]:
    """Old ReplicaSets beyond revisionHistoryLimit that may go: lowest revisions
    first, and only those fully scaled down and settled."""
    if not d.spec.HasField("revision_history_limit"):
        return []
    alive = [rs for rs in old if not rs.metadata.deletion_timestamp]
    diff = len(alive) - d.spec.revision_history_limit
    if diff <= 0:
        return []
    ordered = sorted(alive, key=lambda rs: (revision(rs), _created(rs)))
    doomed = []
    for rs in ordered[:diff]:
        if (
            rs.status.replicas != 0
            or rs.spec.replicas != 0
            or rs.metadata.generation > rs.status.observed_generation
        ):
            continue
        doomed.append(rs)
    return doomed


# -- status and conditions ---------------------------------------------------------------------


def get_condition(status: Any, type_: str) -> Any | None:
    for cond in status.conditions:
        if cond.type == type_:
            return cond
    return None


def new_condition(type_: str, status: str, reason: str, message: str, now: str) -> Any:
    return apps.DeploymentCondition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_update_time=now,
        last_transition_time=now,
    )


def set_condition(status: Any, cond: Any) -> None:
    """Kubernetes' SetDeploymentCondition: the same status and reason is no
    change at all; a new reason with the same status keeps the transition time."""
    current = get_condition(status, cond.type)
    if current is not None and current.status == cond.status and current.reason == cond.reason:
        return
    if current is not None and current.status == cond.status:
        cond.last_transition_time = current.last_transition_time
    remove_condition(status, cond.type)
    status.conditions.append(cond)


def remove_condition(status: Any, type_: str) -> None:
    kept = [c for c in status.conditions if c.type != type_]
    del status.conditions[:]
    status.conditions.extend(kept)


def has_progress_deadline(d: Any) -> bool:
    return d.spec.HasField("progress_deadline_seconds") and (
        d.spec.progress_deadline_seconds != MAX_INT32
    )


def calculate_status(d: Any, all_rss: Sequence[Any | None], new_rs: Any | None, now: str) -> Any:
    available = total_available(all_rss)
    status = apps.DeploymentStatus()
    status.observed_generation = d.metadata.generation
    status.replicas = total_actual(all_rss)
    status.updated_replicas = total_actual([new_rs])
    status.ready_replicas = total_ready(all_rss)
    status.available_replicas = available
    status.unavailable_replicas = max(total_replicas(all_rss) - available, 0)
    if d.status.HasField("collision_count"):
        status.collision_count = d.status.collision_count
    status.conditions.extend(d.status.conditions)
    if available >= replicas(d) - max_unavailable(d):
        cond = new_condition(
            AVAILABLE, "True", MINIMUM_AVAILABLE, "Deployment has minimum availability.", now
        )
    else:
        cond = new_condition(
            AVAILABLE,
            "False",
            MINIMUM_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    set_condition(status, cond)
    return status


def deployment_complete(d: Any, status: Any) -> bool:
    want = replicas(d)
    return (
        status.updated_replicas == want
        and status.replicas == want
        and status.available_replicas == want
        and status.observed_generation >= d.metadata.generation
    )


def deployment_progressing(d: Any, status: Any) -> bool:
    old = d.status
    return (
        status.updated_replicas > old.updated_replicas
        or (status.replicas - status.updated_replicas) < (old.replicas - old.updated_replicas)
        or status.ready_replicas > old.ready_replicas
        or status.available_replicas > old.available_replicas
    )


def _parse(ts: str) -> datetime | None:
    try:
        return parse_rfc3339(ts) if ts else None
    except ValueError:
        return None


def deployment_timed_out(d: Any, status: Any, now: datetime) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    since = _parse(cond.last_update_time)
    if since is None:
        return False
    return since + timedelta(seconds=d.spec.progress_deadline_seconds) < now


def rollout_status(
    d: Any, all_rss: Sequence[Any | None], new_rs: Any | None, now: datetime, now_text: str
) -> Any:
    """syncRolloutStatus: the status with Progressing and ReplicaFailure decided."""
    status = calculate_status(d, all_rss, new_rs, now_text)
    if not has_progress_deadline(d):
        remove_condition(status, PROGRESSING)
    current = get_condition(d.status, PROGRESSING)
    complete_before = (
        status.replicas == status.updated_replicas
        and current is not None
        and current.reason == NEW_RS_AVAILABLE
    )
    if has_progress_deadline(d) and not complete_before:
        subject = (
            f'ReplicaSet "{new_rs.metadata.name}"'
            if new_rs is not None
            else (f'Deployment "{d.metadata.name}"')
        )
        if deployment_complete(d, status):
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_AVAILABLE,
                    f"{subject} has successfully progressed.",
                    now_text,
                ),
            )
        elif deployment_progressing(d, status):
            cond = new_condition(
                PROGRESSING, "True", RS_UPDATED, f"{subject} is progressing.", now_text
            )
            if current is not None:
                if current.status == "True":
                    cond.last_transition_time = current.last_transition_time
                remove_condition(status, PROGRESSING)
            set_condition(status, cond)
        elif deployment_timed_out(d, status, now):
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "False",
                    TIMED_OUT,
                    f"{subject} has timed out progressing.",
                    now_text,
                ),
            )
    failure = replica_failure(all_rss, new_rs)
    if failure is not None:
        set_condition(
            status,
            new_condition(
                REPLICA_FAILURE, failure.status, failure.reason, failure.message, now_text
            ),
        )
    else:
        remove_condition(status, REPLICA_FAILURE)
    return status


def replica_failure(all_rss: Sequence[Any | None], new_rs: Any | None) -> Any | None:
    """The ReplicaFailure condition of the new ReplicaSet, else of any other."""
    ordered = [new_rs, *(rs for rs in all_rss if rs is not new_rs)]
    for rs in ordered:
        if rs is None:
            continue
        for cond in rs.status.conditions:
            if cond.type == REPLICA_FAILURE:
                return cond
    return None


def requeue_after(d: Any, status: Any, now: datetime) -> float | None:
    """When to look again so a stuck rollout is seen to pass its deadline."""
    cond = get_condition(status, PROGRESSING)
    if not has_progress_deadline(d) or cond is None:
        return None
    if deployment_complete(d, status) or cond.reason == TIMED_OUT:
        return None
    since = _parse(cond.last_update_time)
    if since is None:
        return None
    after = (since + timedelta(seconds=d.spec.progress_deadline_seconds) - now).total_seconds()
    return max(after, 0.0) + 1.0


def paused_condition(d: Any, now: str) -> Any | None:
    """The Progressing condition to record when a Deployment is paused or
    resumed, or None when nothing changes."""
    if not has_progress_deadline(d):
        return None
    cond = get_condition(d.status, PROGRESSING)
    if cond is not None and cond.reason == TIMED_OUT:
        return None
    paused_recorded = cond is not None and cond.reason == PAUSED
    if d.spec.paused and not paused_recorded:
        return new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", now)
    if not d.spec.paused and paused_recorded:
        return new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", now)
    return None
