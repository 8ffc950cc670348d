"""The Deployment controller's arithmetic: surge and unavailability, rollout
steps, proportional scaling, revisions, cleanup and conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.controllers import deployment_util as du

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float = 0) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def must(value: Any | None) -> Any:
    assert value is not None
    return value


def deployment(
    replicas: int = 3,
    surge: str | None = "25%",
    unavailable: str | None = "25%",
    strategy: str = "RollingUpdate",
    image: str = "web:1",
) -> Any:
    d = apps.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name = "web"
    d.metadata.namespace = "ns"
    d.metadata.uid = "d-uid"
    d.metadata.generation = 1
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.metadata.labels["app"] = "web"
    d.spec.template.spec.containers.add(name="main", image=image)
    d.spec.strategy.type = strategy
    if strategy == "RollingUpdate":
        if surge is not None:
            d.spec.strategy.rolling_update.max_surge = surge
        if unavailable is not None:
            d.spec.strategy.rolling_update.max_unavailable = unavailable
    d.spec.progress_deadline_seconds = 600
    d.spec.revision_history_limit = 10
    d.status.observed_generation = 1
    return d


def replicaset(
    name: str,
    replicas: int,
    *,
    available: int | None = None,
    revision: int = 1,
    created: float = 100,
    image: str = "web:1",
    max_replicas: int | None = None,
    desired: int | None = None,
) -> Any:
    rs = apps.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name = name
    rs.metadata.namespace = "ns"
    rs.metadata.uid = f"uid-{name}"
    rs.metadata.creation_timestamp = ts(created)
    rs.metadata.annotations[du.REVISION] = str(revision)
    if max_replicas is not None:
        rs.metadata.annotations[du.MAX_REPLICAS] = str(max_replicas)
    if desired is not None:
        rs.metadata.annotations[du.DESIRED_REPLICAS] = str(desired)
    rs.spec.replicas = replicas
    rs.spec.template.metadata.labels.update({"app": "web", du.POD_TEMPLATE_HASH: name})
    rs.spec.template.spec.containers.add(name="main", image=image)
    rs.status.replicas = replicas
    rs.status.available_replicas = replicas if available is None else available
    rs.status.ready_replicas = rs.status.available_replicas
    return rs


# -- surge and unavailability ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        ("25%", "25%", 10, (3, 2)),  # surge rounds up, unavailable down
        ("25%", "25%", 1, (1, 0)),
        ("0", "0", 5, (0, 1)),  # both zero would never progress
        ("0%", "0%", 3, (0, 1)),
        ("2", "30%", 10, (2, 3)),
        ("100%", "0", 4, (4, 0)),
        (None, None, 8, (2, 2)),  # Kubernetes' defaults
    ],
)
def test_resolve_fenceposts(
    surge: str | None, unavailable: str | None, desired: int, expected: tuple[int, int]
) -> None:
    assert du.resolve_fenceposts(surge, unavailable, desired) == expected


def test_max_unavailable_is_capped_and_zero_for_recreate() -> None:
    assert du.max_unavailable(deployment(2, "0", "5")) == 2
    assert du.max_unavailable(deployment(0)) == 0
    assert du.max_unavailable(deployment(3, strategy="Recreate")) == 0
    assert du.max_surge(deployment(3, strategy="Recreate")) == 0


# -- rollout steps -------------------------------------------------------------------------------


def simulate(d: Any, old: Any, *, steps: int = 50) -> list[tuple[int, int]]:
    """Run rolling-update decisions, making new pods ready after each step;
    returns (old, new) sizes after every decision."""
    new = replicaset("new", 0, revision=2, created=0, image="web:2")
    new.spec.replicas = du.new_rs_new_replicas(d, [old, new], new)
    new.status.replicas = new.spec.replicas
    history = [(old.spec.replicas, new.spec.replicas)]
    max_total = du.replicas(d) + du.max_surge(d)
    min_available = du.replicas(d) - du.max_unavailable(d)
    for _ in range(steps):
        size = du.plan_new_rs(d, [old, new], new)
        if size is not None:
            new.spec.replicas = new.status.replicas = size
        else:
            plan = du.plan_old_rss(d, [old, new], du.active([old]), new)
            if not plan:
                # Nothing to do until pods get ready: the kubelet reports.
                if new.status.available_replicas == new.spec.replicas:
                    break
                new.status.available_replicas = new.spec.replicas
                continue
            old.spec.replicas = old.status.replicas = plan["old"]
            old.status.available_replicas = min(old.status.available_replicas, old.spec.replicas)
        assert old.spec.replicas + new.spec.replicas <= max_total
        assert old.status.available_replicas + new.status.available_replicas >= min_available
        history.append((old.spec.replicas, new.spec.replicas))
    return history


def test_rolling_update_one_at_a_time_without_unavailability() -> None:
    d = deployment(3, "1", "0", image="web:2")
    steps = simulate(d, replicaset("old", 3))
    assert steps == [(3, 1), (2, 1), (2, 2), (1, 2), (1, 3), (0, 3)]


def test_rolling_update_with_default_percentages() -> None:
    # 10 replicas, 25%/25%: surge 3, unavailable 2.
    d = deployment(10, image="web:2")
    steps = simulate(d, replicaset("old", 10))
    assert steps[0] == (10, 3)  # surge first
    assert steps[1] == (8, 3)  # then two old ones may go at once
    assert steps[2] == (8, 5)
    assert steps[-1] == (0, 10)


def test_unhealthy_old_replicas_go_first_within_budget() -> None:
    d = deployment(4, "1", "1", image="web:2")
    old = replicaset("old", 4, available=1)  # three old pods never became ready
    new = replicaset("new", 1, available=0, revision=2, created=0, image="web:2")
    plan = du.plan_old_rss(d, [old, new], [old], new)
    # all 5 - minAvailable 3 - new unavailable 1 = 1 may go, taken from the unhealthy.
    assert plan == {"old": 3}


def test_new_replicaset_shrinks_to_a_smaller_deployment() -> None:
    d = deployment(2)
    new = replicaset("new", 5)
    assert du.plan_new_rs(d, [new], new) == 2
    assert du.plan_new_rs(deployment(5), [new], new) is None


def test_recreate_sizes_new_replicaset_to_replicas_at_once() -> None:
    d = deployment(4, strategy="Recreate")
    new = replicaset("new", 0)
    assert du.new_rs_new_replicas(d, [new], new) == 4


# -- proportional scaling -------------------------------------------------------------------------


def test_scale_up_mid_rollout_is_shared_in_proportion() -> None:
    d = deployment(15, "3", "2", image="web:2")
    old = replicaset("old", 8, max_replicas=13, desired=10, created=100)
    new = replicaset("new", 5, available=0, max_replicas=13, desired=10, created=0, image="web:2")
    assert du.is_scaling_event(d, new, [old])
    # 15 + 3 surge = 18 allowed, 13 now: +5 shared 8:5.
    assert du.plan_scale(d, new, [old]) == {"old": 11, "new": 7}


def test_scale_down_mid_rollout_is_shared_in_proportion() -> None:
    d = deployment(5, "3", "2", image="web:2")
    old = replicaset("old", 8, max_replicas=13, desired=10, created=100)
    new = replicaset("new", 5, available=0, max_replicas=13, desired=10, created=0, image="web:2")
    assert du.plan_scale(d, new, [old]) == {"old": 5, "new": 3}


def test_rounding_leftover_goes_to_the_largest() -> None:
    d = deployment(4, "0", "1", image="web:2")
    a = replicaset("a", 1, max_replicas=3, desired=3, created=300)
    b = replicaset("b", 1, max_replicas=3, desired=3, created=200)
    c = replicaset("c", 1, max_replicas=3, desired=3, created=100)
    # +1 to share: each third rounds to 0, the leftover goes to the first
    # (equal sizes: the newest first when growing).
    plan = du.plan_scale(d, None, [a, b, c])
    assert sum(plan.get(rs.metadata.name, 1) for rs in (a, b, c)) == 4
    assert plan["c"] == 2


def test_scale_with_one_active_replicaset_just_resizes_it() -> None:
    d = deployment(6)
    new = replicaset("new", 3, desired=3)
    old = replicaset("old", 0, created=500)
    assert du.plan_scale(d, new, [old]) == {"new": 6}
    assert du.plan_scale(deployment(3), new, [old]) == {}


def test_saturated_new_replicaset_scales_old_ones_to_zero() -> None:
    d = deployment(3)
    new = replicaset("new", 3, desired=3, created=0)
    old = replicaset("old", 2, desired=3, created=100)
    assert du.plan_scale(d, new, [old]) == {"old": 0}


def test_no_scaling_event_when_sizes_were_set_for_this_size() -> None:
    d = deployment(3)
    assert not du.is_scaling_event(d, replicaset("new", 3, desired=3), [])
    assert du.is_scaling_event(deployment(4), replicaset("new", 3, desired=3), [])
    assert not du.is_scaling_event(d, replicaset("new", 3), [])  # no annotation yet


# -- new ReplicaSet, revisions and history ------------------------------------------------------


def test_new_replicaset_is_found_whatever_its_hash_label() -> None:
    d = deployment(image="web:2")
    old = replicaset("old", 3, image="web:1")
    new = replicaset("new", 0, image="web:2", created=10)
    newer_twin = replicaset("twin", 0, image="web:2", created=5)
    assert du.find_new_rs(d, [old, newer_twin, new]) is new
    assert du.find_new_rs(deployment(image="web:3"), [old, new]) is None
    assert du.old_rss(new, [old, new]) == [old]


def test_new_replicaset_annotations() -> None:
    d = deployment(4, "1", "1")
    d.metadata.annotations[du.CHANGE_CAUSE] = "upgrade"
    d.metadata.annotations[du.LAST_APPLIED] = "{}"
    rs = apps.ReplicaSet()
    assert du.set_new_rs_annotations(d, rs, 3, exists=False)
    assert dict(rs.metadata.annotations) == {
        du.CHANGE_CAUSE: "upgrade",
        du.REVISION: "3",
        du.DESIRED_REPLICAS: "4",
        du.MAX_REPLICAS: "5",
    }
    assert not du.set_new_rs_annotations(d, rs, 3, exists=True)


def test_rolled_back_replicaset_takes_a_new_revision_and_remembers_the_old() -> None:
    d = deployment()
    rs = replicaset("back", 0, revision=1)
    rs.metadata.annotations[du.REVISION_HISTORY] = "0"
    assert du.set_new_rs_annotations(d, rs, 4, exists=True)
    assert rs.metadata.annotations[du.REVISION] == "4"
    assert rs.metadata.annotations[du.REVISION_HISTORY] == "0,1"
    assert du.max_revision([rs, replicaset("x", 0, revision=2)]) == 4


def test_history_cleanup_keeps_the_limit_and_spares_busy_replicasets() -> None:
    d = deployment()
    d.spec.revision_history_limit = 1
    old = [
        replicaset("r1", 0, revision=1),
        replicaset("r2", 1, revision=2),  # still has a pod: kept
        replicaset("r3", 0, revision=3),
    ]
    old[2].metadata.generation = 2  # not yet observed by its controller: kept
    assert du.rs_to_clean_up(d, old) == [old[0]]
    d.spec.revision_history_limit = 5
    assert du.rs_to_clean_up(d, old) == []
    d.spec.ClearField("revision_history_limit")
    assert du.rs_to_clean_up(d, old) == []


# -- status and conditions ------------------------------------------------------------------------


def test_status_counts_and_availability() -> None:
    d = deployment(4, "1", "1")
    old = replicaset("old", 2, available=2)
    new = replicaset("new", 2, available=1, created=0)
    status = du.calculate_status(d, [old, new], new, ts())
    assert (status.replicas, status.updated_replicas) == (4, 2)
    assert (status.available_replicas, status.unavailable_replicas) == (3, 1)
    assert status.observed_generation == 1
    available = must(du.get_condition(status, du.AVAILABLE))
    assert (available.status, available.reason) == ("True", du.MINIMUM_AVAILABLE)
    low = du.calculate_status(d, [replicaset("new", 4, available=2)], None, ts())
    assert must(du.get_condition(low, du.AVAILABLE)).reason == du.MINIMUM_UNAVAILABLE


def test_progressing_then_complete() -> None:
    d = deployment(2)
    d.status.conditions.add(
        type=du.PROGRESSING,
        status="True",
        reason=du.NEW_RS_CREATED,
        last_update_time=ts(60),
        last_transition_time=ts(60),
    )
    new = replicaset("new", 2, available=1, created=0)
    status = du.rollout_status(d, [new], new, NOW, ts())
    cond = must(du.get_condition(status, du.PROGRESSING))
    assert (cond.status, cond.reason) == ("True", du.RS_UPDATED)
    assert cond.message == 'ReplicaSet "new" is progressing.'
    assert cond.last_transition_time == ts(60) and cond.last_update_time == ts()

    d.status.CopyFrom(status)
    done = replicaset("new", 2, available=2, created=0)
    status = du.rollout_status(d, [done], done, NOW, ts())
    cond = must(du.get_condition(status, du.PROGRESSING))
    assert (cond.status, cond.reason) == ("True", du.NEW_RS_AVAILABLE)
    assert cond.message == 'ReplicaSet "new" has successfully progressed.'
    assert du.requeue_after(d, status, NOW) is None


def test_progress_deadline_exceeded() -> None:
    d = deployment(2)
    d.spec.progress_deadline_seconds = 30
    d.status.replicas = d.status.updated_replicas = 2
    d.status.conditions.add(
        type=du.PROGRESSING,
        status="True",
        reason=du.RS_UPDATED,
        last_update_time=ts(20),
        last_transition_time=ts(20),
    )
    stuck = replicaset("new", 2, available=0, created=0)
    status = du.rollout_status(d, [stuck], stuck, NOW, ts())
    assert must(du.get_condition(status, du.PROGRESSING)).reason == du.RS_UPDATED
    wait = du.requeue_after(d, status, NOW)
    assert wait is not None and 10 <= wait <= 11

    later = NOW + timedelta(seconds=11)
    status = du.rollout_status(d, [stuck], stuck, later, "later")
    cond = must(du.get_condition(status, du.PROGRESSING))
    assert (cond.status, cond.reason) == ("False", du.TIMED_OUT)
    assert cond.message == 'ReplicaSet "new" has timed out progressing.'


def test_replica_failure_is_carried_up() -> None:
    d = deployment(2)
    new = replicaset("new", 2, available=0, created=0)
    new.status.conditions.add(
        type="ReplicaFailure", status="True", reason="FailedCreate", message="forbidden"
    )
    status = du.rollout_status(d, [new], new, NOW, ts())
    cond = must(du.get_condition(status, du.REPLICA_FAILURE))
    assert (cond.reason, cond.message) == ("FailedCreate", "forbidden")
    d.status.CopyFrom(status)
    healthy = replicaset("new", 2, available=0, created=0)
    assert (
        du.get_condition(du.rollout_status(d, [healthy], healthy, NOW, ts()), du.REPLICA_FAILURE)
        is None
    )


def test_paused_and_resumed_conditions() -> None:
    d = deployment()
    d.spec.paused = True
    cond = must(du.paused_condition(d, ts()))
    assert (cond.status, cond.reason, cond.message) == (
        "Unknown",
        du.PAUSED,
        "Deployment is paused",
    )
    d.status.conditions.append(cond)
    assert du.paused_condition(d, ts()) is None
    d.spec.paused = False
    assert must(du.paused_condition(d, ts())).reason == du.RESUMED
    # A rollout that already timed out stays that way.
    d.status.conditions[0].reason = du.TIMED_OUT
    d.spec.paused = True
    assert du.paused_condition(d, ts()) is None


def test_set_condition_keeps_transition_time_for_the_same_status() -> None:
    status = apps.DeploymentStatus()
    du.set_condition(status, du.new_condition("X", "True", "A", "first", "t1"))
    du.set_condition(status, du.new_condition("X", "True", "A", "ignored", "t2"))
    assert status.conditions[0].message == "first"
    du.set_condition(status, du.new_condition("X", "True", "B", "second", "t3"))
    assert (status.conditions[0].last_transition_time, status.conditions[0].reason) == ("t1", "B")
    du.set_condition(status, du.new_condition("X", "False", "C", "third", "t4"))
    assert status.conditions[0].last_transition_time == "t4"
