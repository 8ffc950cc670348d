"""The ReplicaSet controller's decisions: which pods go first, batches,
expectations, ownership and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers import replicaset_util as util
from orchestrator.controllers.claims import classify, label_selector
from orchestrator.controllers.podtemplate import controller_ref

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    *,
    node: str = "",
    phase: str = "Pending",
    ready_for: float | None = None,
    restarts: int = 0,
    age: float = 100,
    labels: dict[str, str] | None = None,
    deleting: bool = False,
) -> Any:
    p = core.Pod(api_version="v1", kind="Pod")
    p.metadata.name = name
    p.metadata.namespace = "ns"
    p.metadata.creation_timestamp = ts(age)
    p.metadata.labels.update(labels if labels is not None else {"app": "web"})
    if deleting:
        p.metadata.deletion_timestamp = ts(0)
    p.spec.node_name = node
    p.status.phase = phase
    if ready_for is not None:
        p.status.conditions.add(type="Ready", status="True", last_transition_time=ts(ready_for))
    elif phase == "Running":
        p.status.conditions.add(type="Ready", status="False", last_transition_time=ts(1))
    if restarts:
        p.status.container_statuses.add(name="main", restart_count=restarts)
    return p


def rs(replicas: int = 3, min_ready: int = 0, uid: str = "rs-uid") -> Any:
    r = apps.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    r.metadata.name = "web"
    r.metadata.namespace = "ns"
    r.metadata.uid = uid
    r.metadata.generation = 4
    r.spec.replicas = replicas
    r.spec.min_ready_seconds = min_ready
    r.spec.selector.match_labels["app"] = "web"
    r.spec.template.metadata.labels.update({"app": "web", "tier": "front"})
    return r


# -- deletion order ---------------------------------------------------------------------------


def test_deletion_prefers_unscheduled_then_pending_then_not_ready() -> None:
    pods = [
        pod("ready", node="n1", phase="Running", ready_for=50),
        pod("running-not-ready", node="n2", phase="Running"),
        pod("pending-on-node", node="n3", phase="Pending"),
        pod("unscheduled", phase="Pending"),
    ]
    order = [p.metadata.name for p in util.pods_to_delete(pods, 4)]
    assert order == ["unscheduled", "pending-on-node", "running-not-ready", "ready"]


def test_deletion_among_ready_pods() -> None:
    # Doubled-up nodes first; then shorter ready time; then more restarts; then newer.
    doubled = [
        pod("lonely", node="a", phase="Running", ready_for=10),
        pod("pair-1", node="b", phase="Running", ready_for=100),
        pod("pair-2", node="b", phase="Running", ready_for=100, age=50),
    ]
    assert [p.metadata.name for p in util.pods_to_delete(doubled, 2)] == ["pair-2", "pair-1"]

    by_ready_time = [
        pod("old-ready", node="a", phase="Running", ready_for=300),
        pod("new-ready", node="b", phase="Running", ready_for=5),
    ]
    assert util.pods_to_delete(by_ready_time, 1)[0].metadata.name == "new-ready"

    by_restarts = [
        pod("calm", node="a", phase="Running", ready_for=60),
        pod("flappy", node="b", phase="Running", ready_for=60, restarts=7),
    ]
    assert util.pods_to_delete(by_restarts, 1)[0].metadata.name == "flappy"

    by_age = [
        pod("older", node="a", phase="Running", ready_for=60, age=500),
        pod("newer", node="b", phase="Running", ready_for=60, age=20),
    ]
    assert util.pods_to_delete(by_age, 1)[0].metadata.name == "newer"


def test_deleting_nothing() -> None:
    assert util.pods_to_delete([pod("a")], 0) == []


def test_active_pods_exclude_finished_and_deleting() -> None:
    assert util.is_pod_active(pod("a", phase="Running"))
    assert not util.is_pod_active(pod("b", phase="Succeeded"))
    assert not util.is_pod_active(pod("c", phase="Failed"))
    assert not util.is_pod_active(pod("d", phase="Running", deleting=True))


# -- batches and expectations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "batches"),
    [(0, []), (1, [1]), (3, [1, 2]), (10, [1, 2, 4, 3]), (16, [1, 2, 4, 8, 1])],
)
def test_slow_start_batches(count: int, batches: list[int]) -> None:
    assert util.slow_start_batches(count) == batches
    assert sum(batches) == count


def test_expectations_hold_a_sync_until_the_cache_catches_up() -> None:
    clock = [0.0]
    exp = util.Expectations(clock=lambda: clock[0], ttl=300)
    assert exp.satisfied("ns/web")
    exp.expect_creations("ns/web", 2)
    assert not exp.satisfied("ns/web")
    exp.creation_observed("ns/web")
    assert not exp.satisfied("ns/web")
    exp.creation_observed("ns/web")
    assert exp.satisfied("ns/web")

    exp.expect_deletions("ns/web", ["ns/a", "ns/b"])
    exp.deletion_observed("ns/web", "ns/a")
    exp.deletion_observed("ns/web", "ns/a")  # a repeat does not count twice
    assert exp.pending("ns/web") == (0, 1)
    assert not exp.satisfied("ns/web")
    # A lost watch event must not wedge the ReplicaSet forever.
    clock[0] = 301
    assert exp.satisfied("ns/web")
    exp.forget("ns/web")
    assert exp.pending("ns/web") == (0, 0)


def test_backoff_grows_and_resets() -> None:
    b = util.Backoff(base=1, maximum=5)
    assert [b.next("k") for _ in range(5)] == [1, 2, 4, 5, 5]
    b.reset("k")
    assert b.next("k") == 1


# -- ownership ------------------------------------------------------------------------------


def test_claims_adopt_orphans_release_strays_and_ignore_others() -> None:
    owner = rs()
    mine = pod("mine")
    mine.metadata.owner_references.append(controller_ref(owner))
    relabelled = pod("relabelled", labels={"app": "other"})
    relabelled.metadata.owner_references.append(controller_ref(owner))
    orphan = pod("orphan")
    unrelated_orphan = pod("unrelated", labels={"app": "db"})
    deleting_orphan = pod("deleting", deleting=True)
    foreign = pod("foreign")
    other = rs(uid="other-uid")
    foreign.metadata.owner_references.append(controller_ref(other))

    claims = classify(
        owner,
        label_selector(owner.spec.selector),
        [mine, relabelled, orphan, unrelated_orphan, deleting_orphan, foreign],
    )
    assert [p.metadata.name for p in claims.owned] == ["mine"]
    assert [p.metadata.name for p in claims.adopt] == ["orphan"]
    assert [p.metadata.name for p in claims.release] == ["relabelled"]


def test_a_deleting_owner_adopts_and_releases_nothing() -> None:
    owner = rs()
    owner.metadata.deletion_timestamp = ts(0)
    relabelled = pod("relabelled", labels={"app": "other"})
    relabelled.metadata.owner_references.append(controller_ref(owner))
    claims = classify(owner, label_selector(owner.spec.selector), [pod("orphan"), relabelled])
    assert claims.adopt == [] and claims.release == [] and claims.owned == []


def test_an_empty_selector_selects_nothing() -> None:
    owner = rs()
    owner.spec.selector.Clear()
    assert label_selector(owner.spec.selector) is None
    assert classify(owner, None, [pod("orphan")]).adopt == []


# -- status ------------------------------------------------------------------------------------


def test_status_counts_ready_available_and_fully_labeled() -> None:
    r = rs(replicas=4, min_ready=30)
    pods = [
        pod("long-ready", phase="Running", ready_for=60, labels={"app": "web", "tier": "front"}),
        pod("just-ready", phase="Running", ready_for=10, labels={"app": "web", "tier": "front"}),
        pod("not-ready", phase="Running"),
        pod("pending"),
    ]
    status = util.calculate_status(r, pods, NOW, None, ts(0))
    assert status.replicas == 4
    assert status.ready_replicas == 2
    assert status.available_replicas == 1  # ready for 30s only once
    assert status.fully_labeled_replicas == 2
    assert status.observed_generation == 4
    assert list(status.conditions) == []
    # The just-ready pod becomes available 20s from now: look again then.
    wait = util.next_availability_check(pods, 30, NOW)
    assert wait is not None and 20 <= wait <= 21
    assert util.next_availability_check(pods, 0, NOW) is None


def test_replica_failure_condition_comes_and_goes() -> None:
    r = rs()
    failed = util.calculate_status(r, [], NOW, ("FailedCreate", "quota exceeded"), ts(0))
    (cond,) = failed.conditions
    assert (cond.type, cond.status, cond.reason, cond.message) == (
        "ReplicaFailure",
        "True",
        "FailedCreate",
        "quota exceeded",
    )
    r.status.CopyFrom(failed)
    # A second failure keeps the first transition time.
    again = util.calculate_status(r, [], NOW + timedelta(minutes=1), ("FailedCreate", "x"), "later")
    assert again.conditions[0].last_transition_time == ts(0)
    healed = util.calculate_status(r, [], NOW, None, ts(0))
    assert list(healed.conditions) == []
