"""The node lifecycle controller's pure decisions: liveness from leases and
heartbeats on an injected clock, Unknown conditions, taints by condition,
eviction timing per tolerationSeconds, zone states and the rate limiter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.api.pb import coordination_v1_pb2 as coord
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.node_lifecycle_health import (
    FULL_DISRUPTION,
    NEVER_UPDATED_REASON,
    NORMAL,
    PARTIAL_DISRUPTION,
    STATUS_UNKNOWN_MESSAGE,
    STATUS_UNKNOWN_REASON,
    TokenBucket,
    all_fully_disrupted,
    eviction_rate,
    is_silent,
    observe,
    unknown_conditions,
    zone_of,
    zone_state,
)
from orchestrator.controllers.node_lifecycle_taints import (
    NOT_READY,
    UNREACHABLE,
    UNSCHEDULABLE,
    desired_no_schedule,
    eviction_due,
    no_execute_for,
    ready_status,
    reconcile_taints,
    tolerates,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def node(ready: str | None = "True", heartbeat: float = 0, **extra: str) -> core.Node:
    n = core.Node(api_version="v1", kind="Node")
    n.metadata.name = "n1"
    n.metadata.creation_timestamp = stamp(-100)
    if ready is not None:
        n.status.conditions.add(
            type="Ready", status=ready, last_heartbeat_time=stamp(heartbeat), reason="KubeletReady"
        )
    for ctype, status in extra.items():
        n.status.conditions.add(type=ctype, status=status, last_heartbeat_time=stamp(heartbeat))
    return n


def lease(renew: float) -> coord.Lease:
    le = coord.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    le.spec.renew_time = at(renew).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return le


# -- liveness ------------------------------------------------------------------------------


def test_lease_renewals_keep_a_node_alive_and_silence_past_grace_does_not() -> None:
    n = node(heartbeat=0)
    h = observe(None, n, lease(0), at(0))
    assert h.probe == at(0)
    # Renewed at 10 s, seen at 10 s: alive until 60 s with a 50 s grace.
    h = observe(h, n, lease(10), at(10))
    assert h.probe == at(10)
    h = observe(h, n, lease(10), at(59))  # no new renewal
    assert not is_silent(h, at(59), 50, 60)
    assert not is_silent(h, at(60), 50, 60)
    assert is_silent(h, at(60.5), 50, 60)


def test_probe_uses_the_controllers_clock_not_the_renew_time() -> None:
    """A node whose clock is an hour behind is still alive when it renews."""
    n = node()
    h = observe(None, n, lease(-3600), at(0))
    h = observe(h, n, lease(-3590), at(30))
    assert h.probe == at(30)
    assert not is_silent(h, at(70), 50, 60)


def test_a_new_heartbeat_counts_as_life_without_a_lease() -> None:
    h = observe(None, node(heartbeat=0), None, at(0))
    h = observe(h, node(heartbeat=40), None, at(40))
    assert h.probe == at(40)
    h = observe(h, node(heartbeat=40), None, at(95))
    assert is_silent(h, at(95), 50, 60)


def test_a_node_that_never_reported_is_judged_from_creation_with_startup_grace() -> None:
    n = node(ready=None)  # created at -100 s
    h = observe(None, n, None, at(0))
    assert h.probe == at(-100) and not h.has_ready
    assert is_silent(h, at(0), grace=50, startup_grace=60)
    assert not is_silent(h, at(-50), grace=50, startup_grace=60)


def test_first_sight_of_a_reporting_node_gives_a_fresh_grace_period() -> None:
    """After a controller restart nobody is declared dead on old timestamps."""
    h = observe(None, node(heartbeat=-1000), lease(-1000), at(0))
    assert h.probe == at(0)
    assert not is_silent(h, at(49), 50, 60)


def test_unknown_conditions_keep_heartbeats_and_add_missing_ones() -> None:
    n = node(heartbeat=5, MemoryPressure="False", NetworkUnavailable="False")
    got = unknown_conditions(n.status.conditions, stamp(70), n.metadata.creation_timestamp)
    assert got is not None
    by_type = {c.type: c for c in got}
    ready = by_type["Ready"]
    assert (ready.status, ready.reason, ready.message) == (
        "Unknown",
        STATUS_UNKNOWN_REASON,
        STATUS_UNKNOWN_MESSAGE,
    )
    assert ready.last_heartbeat_time == stamp(5)
    assert ready.last_transition_time == stamp(70)
    assert by_type["MemoryPressure"].status == "Unknown"
    assert by_type["NetworkUnavailable"].status == "False"  # not ours to judge
    for ctype in ("DiskPressure", "PIDPressure"):
        assert by_type[ctype].status == "Unknown"
        assert by_type[ctype].reason == NEVER_UPDATED_REASON
    again = core.Node()
    again.status.conditions.extend(got)
    assert unknown_conditions(again.status.conditions, stamp(80), "") is None


# -- taints by condition -----------------------------------------------------------------


def test_no_schedule_taints_follow_conditions_and_unschedulable() -> None:
    assert desired_no_schedule(node("True")) == set()
    assert desired_no_schedule(node("False")) == {NOT_READY}
    assert desired_no_schedule(node("Unknown")) == {UNREACHABLE}
    pressured = node("True", MemoryPressure="True", DiskPressure="Unknown")
    assert desired_no_schedule(pressured) == {"node.kubernetes.io/memory-pressure"}
    cordoned = node("True")
    cordoned.spec.unschedulable = True
    assert desired_no_schedule(cordoned) == {UNSCHEDULABLE}
    assert ready_status(node(ready=None)) == "Unknown"
    assert no_execute_for("True") is None
    assert no_execute_for("False") == NOT_READY
    assert no_execute_for("Unknown") == UNREACHABLE


def test_reconcile_adds_swaps_and_removes_only_owned_taints() -> None:
    foreign = core.Taint(key="dedicated", value="gpu", effect="NoSchedule")
    got = reconcile_taints(
        [foreign], no_schedule={UNREACHABLE}, no_execute=UNREACHABLE, now=stamp(60)
    )
    assert got is not None
    assert [(t.key, t.effect, t.time_added) for t in got] == [
        ("dedicated", "NoSchedule", ""),
        (UNREACHABLE, "NoSchedule", ""),
        (UNREACHABLE, "NoExecute", stamp(60)),
    ]
    # Unchanged: nothing to write.
    assert reconcile_taints(got, no_schedule={UNREACHABLE}, no_execute=UNREACHABLE, now="") is None
    # not-ready replaces unreachable; the kept taint keeps its time.
    swapped = reconcile_taints(got, no_schedule={NOT_READY}, no_execute=NOT_READY, now=stamp(90))
    assert swapped is not None
    assert {(t.key, t.effect) for t in swapped} == {
        ("dedicated", "NoSchedule"),
        (NOT_READY, "NoSchedule"),
        (NOT_READY, "NoExecute"),
    }
    healthy = reconcile_taints(swapped, no_schedule=set(), no_execute=None, now=stamp(99))
    assert healthy is not None
    assert [t.key for t in healthy] == ["dedicated"]


def test_reconcile_can_leave_no_execute_alone_while_rate_limited() -> None:
    got = reconcile_taints(
        [], no_schedule={UNREACHABLE}, no_execute=None, now="", manage_no_execute=False
    )
    assert got is not None
    assert [(t.key, t.effect) for t in got] == [(UNREACHABLE, "NoSchedule")]


# -- tolerations and eviction timing --------------------------------------------------------


def toleration(
    key: str = "", op: str = "Exists", effect: str = "", seconds: int | None = None, value: str = ""
) -> core.Toleration:
    t = core.Toleration(key=key, operator=op, effect=effect, value=value)
    if seconds is not None:
        t.toleration_seconds = seconds
    return t


def no_execute(key: str, added: float | None = 0) -> core.Taint:
    return core.Taint(
        key=key, effect="NoExecute", time_added=stamp(added) if added is not None else ""
    )


def test_toleration_matching_follows_kubernetes() -> None:
    taint = core.Taint(key="k", value="v", effect="NoExecute")
    assert tolerates(toleration("", "Exists"), taint)  # empty key + Exists: everything
    assert tolerates(toleration("k", "Exists"), taint)
    assert tolerates(toleration("k", "Equal", value="v"), taint)
    assert tolerates(toleration("k", "", value="v"), taint)  # empty operator = Equal
    assert not tolerates(toleration("k", "Equal", value="w"), taint)
    assert not tolerates(toleration("k", "Exists", effect="NoSchedule"), taint)
    assert not tolerates(toleration("other", "Exists"), taint)


def test_no_toleration_means_eviction_at_once() -> None:
    d = eviction_due([], [no_execute(UNREACHABLE, 60)], first_seen=at(100))
    assert d.due == at(60)
    assert "not tolerated" in d.reason


def test_toleration_seconds_count_from_when_the_taint_was_added() -> None:
    tols = [toleration(UNREACHABLE, effect="NoExecute", seconds=300)]
    d = eviction_due(tols, [no_execute(UNREACHABLE, 60)], first_seen=at(100))
    assert d.due == at(360)
    # Several taints: the shortest tolerationSeconds wins.
    tols.append(toleration(NOT_READY, effect="NoExecute", seconds=30))
    d = eviction_due(tols, [no_execute(UNREACHABLE, 60), no_execute(NOT_READY, 70)], at(100))
    assert d.due == at(100)
    # A negative tolerationSeconds is zero.
    d = eviction_due([toleration(UNREACHABLE, seconds=-5)], [no_execute(UNREACHABLE, 60)], at(0))
    assert d.due == at(60)


def test_toleration_without_seconds_means_never_and_no_taint_means_stay() -> None:
    forever = [toleration(UNREACHABLE, effect="NoExecute")]
    assert eviction_due(forever, [no_execute(UNREACHABLE)], at(0)).due is None
    assert eviction_due([], [core.Taint(key="x", effect="NoSchedule")], at(0)).due is None
    # One taint tolerated for ever, another not at all: out at once.
    d = eviction_due(forever, [no_execute(UNREACHABLE, 5), no_execute("custom", 9)], at(20))
    assert d.due == at(9)


def test_taint_without_time_added_counts_from_first_sight() -> None:
    tols = [toleration(UNREACHABLE, seconds=10)]
    assert eviction_due(tols, [no_execute(UNREACHABLE, None)], at(42)).due == at(52)


# -- zones, disruption and rate ----------------------------------------------------------------


def test_zone_states_and_full_disruption_protection() -> None:
    assert zone_state([True, True, False]) == NORMAL
    assert zone_state([False, False]) == FULL_DISRUPTION
    assert zone_state([True, False, False]) == NORMAL  # two down is never partial
    assert zone_state([True, False, False, False]) == PARTIAL_DISRUPTION
    assert zone_state([]) == NORMAL
    assert all_fully_disrupted([FULL_DISRUPTION, FULL_DISRUPTION])
    assert not all_fully_disrupted([FULL_DISRUPTION, NORMAL])
    assert not all_fully_disrupted([])


def test_eviction_rate_per_state() -> None:
    assert eviction_rate(NORMAL, 3) == 0.1
    assert eviction_rate(FULL_DISRUPTION, 3) == 0.1  # one zone down among healthy ones
    assert eviction_rate(PARTIAL_DISRUPTION, 10) == 0.0  # small zone: stop
    assert eviction_rate(PARTIAL_DISRUPTION, 100) == 0.01


def test_zone_of_uses_region_and_zone_labels() -> None:
    a, b = node(), node()
    b.metadata.labels["topology.kubernetes.io/zone"] = "z2"
    assert zone_of(a) != zone_of(b)


def test_token_bucket_grants_one_node_per_ten_seconds() -> None:
    now = [0.0]
    bucket = TokenBucket(0.1, clock=lambda: now[0])
    assert bucket.try_take()
    assert not bucket.try_take()
    now[0] = 9.9
    assert not bucket.try_take()
    now[0] = 10.0
    assert bucket.try_take()
    bucket.set_rate(0.0)
    now[0] = 100.0
    assert not bucket.try_take()
    bucket.set_rate(0.1)
    assert bucket.try_take()
