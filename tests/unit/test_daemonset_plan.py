"""DaemonSet decisions: node eligibility, placement, rolling updates, status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.api.pb import apps_v1_pb2 as apps
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.daemon_nodes import (
    UNSCHEDULABLE,
    daemon_pod_name,
    new_daemon_pod,
    node_fit,
    node_fits,
)
from orchestrator.controllers.daemon_plan import (
    DaemonPlan,
    UpdatePolicy,
    count_daemon_pods,
    plan_daemonset,
)
from orchestrator.controllers.history import REVISION_HASH_LABEL

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NEW, OLD = "h-new", "h-old"


def node(
    name: str, labels: dict[str, str] | None = None, taints: tuple[str, ...] = ()
) -> core.Node:
    n = core.Node()
    n.metadata.name = name
    n.metadata.labels.update(labels or {})
    for taint in taints:
        key, effect = taint.split(":")
        n.spec.taints.add(key=key, effect=effect)
    return n


def template(**node_selector: str) -> core.PodTemplateSpec:
    t = core.PodTemplateSpec()
    t.metadata.labels["app"] = "agent"
    t.spec.containers.add(name="agent", image="busybox")
    t.spec.node_selector.update(node_selector)
    return t


_serial = iter(range(10_000))


def pod(node_name: str, rev: str = NEW, ready: bool = True, phase: str = "") -> core.Pod:
    n = next(_serial)
    p = core.Pod()
    p.metadata.name = f"ds-{node_name}-{rev}-{n}"
    p.metadata.uid = f"uid-{n}"
    p.metadata.creation_timestamp = f"2024-05-01T11:{n // 60 % 60:02d}:{n % 60:02d}Z"
    p.metadata.labels[REVISION_HASH_LABEL] = rev
    p.spec.node_name = node_name
    p.status.phase = phase or ("Running" if ready else "Pending")
    if ready:
        p.status.conditions.add(type="Ready", status="True")
    return p


def plan(
    t: core.PodTemplateSpec,
    nodes: list[core.Node],
    pods: list[core.Pod],
    policy: UpdatePolicy | None = None,
    held: tuple[str, ...] = (),
) -> DaemonPlan:
    by_node: dict[str, list[core.Pod]] = {}
    for p in pods:
        by_node.setdefault(p.spec.node_name, []).append(p)
    return plan_daemonset(node_fits(t, nodes), by_node, NEW, policy or UpdatePolicy(), NOW, held)


def deleted(p: DaemonPlan) -> set[tuple[str, str]]:
    return {(d.pod.metadata.name, d.reason) for d in p.deletes}


# -- eligibility -------------------------------------------------------------------


def test_node_selector_and_required_affinity_decide_eligibility() -> None:
    t = template(disk="ssd")
    assert node_fit(t, node("a", {"disk": "ssd"})).should_run
    assert not node_fit(t, node("b", {"disk": "hdd"})).may_stay
    t = template()
    terms = t.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    term = terms.node_selector_terms.add()
    term.match_expressions.add(key="zone", operator="In", values=["z1", "z2"])
    term.match_expressions.add(key="cores", operator="Gt", values=["4"])
    assert node_fit(t, node("a", {"zone": "z2", "cores": "8"})).should_run
    assert not node_fit(t, node("a", {"zone": "z2", "cores": "2"})).should_run
    assert not node_fit(t, node("a", {"zone": "z3", "cores": "8"})).should_run
    other = terms.node_selector_terms.add()
    other.match_fields.add(key="metadata.name", operator="In", values=["special"])
    assert node_fit(t, node("special")).should_run  # terms are ORed


def test_taints_need_tolerations_except_the_daemon_defaults() -> None:
    t = template()
    assert node_fit(t, node("a", taints=(f"{UNSCHEDULABLE}:NoSchedule",))).should_run
    assert node_fit(t, node("a", taints=("node.kubernetes.io/not-ready:NoExecute",))).should_run
    fit = node_fit(t, node("a", taints=("dedicated:NoSchedule",)))
    assert not fit.should_run and fit.may_stay and "dedicated" in fit.reason
    fit = node_fit(t, node("a", taints=("dedicated:NoExecute",)))
    assert not fit.should_run and not fit.may_stay
    assert node_fit(t, node("a", taints=("soft:PreferNoSchedule",))).should_run
    t.spec.tolerations.add(key="dedicated", operator="Exists")
    assert node_fit(t, node("a", taints=("dedicated:NoExecute",))).should_run


def test_cordoned_node_stays_eligible() -> None:
    n = node("a")
    n.spec.unschedulable = True
    assert node_fit(template(), n).should_run


def test_daemon_pod_is_pinned_to_its_node_with_default_tolerations() -> None:
    ds = apps.DaemonSet(api_version="apps/v1", kind="DaemonSet")
    ds.metadata.name, ds.metadata.namespace, ds.metadata.uid = "agent", "sys", "ds-uid"
    ds.metadata.generation = 3
    ds.spec.template.CopyFrom(template())
    p = new_daemon_pod(ds, "node-1", NEW)
    assert p.spec.node_name == "node-1"
    assert p.metadata.name == daemon_pod_name("agent", "node-1", NEW)
    assert p.metadata.name != daemon_pod_name("agent", "node-2", NEW)
    required = p.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    (term,) = required.node_selector_terms
    (field,) = term.match_fields
    assert (field.key, field.operator, list(field.values)) == ("metadata.name", "In", ["node-1"])
    keys = {(t.key, t.effect) for t in p.spec.tolerations}
    assert (UNSCHEDULABLE, "NoSchedule") in keys
    assert ("node.kubernetes.io/unreachable", "NoExecute") in keys
    assert p.metadata.labels[REVISION_HASH_LABEL] == NEW
    assert p.metadata.owner_references[0].uid == "ds-uid"


# -- placement ---------------------------------------------------------------------


def test_every_eligible_node_without_a_pod_gets_one() -> None:
    nodes = [node("a", {"role": "w"}), node("b", {"role": "w"}), node("c")]
    p = plan(template(role="w"), nodes, [pod("a")])
    assert p.creates == ["b"] and not p.deletes


def test_pods_leave_nodes_that_stop_matching_or_vanish() -> None:
    nodes = [node("a", {"role": "w"}), node("b")]
    stray, gone = pod("b"), pod("zombie")
    p = plan(template(role="w"), nodes, [pod("a"), stray, gone])
    assert deleted(p) == {(stray.metadata.name, "not-eligible"), (gone.metadata.name, "node-gone")}
    assert [d.force for d in p.deletes if d.reason == "node-gone"] == [True]


def test_extra_pods_on_a_node_keep_the_oldest() -> None:
    first, second = pod("a"), pod("a")
    p = plan(template(), [node("a")], [second, first])
    assert deleted(p) == {(second.metadata.name, "duplicate")}


def test_failed_pod_is_deleted_and_replaced_on_a_later_pass_unless_held_back() -> None:
    failed = pod("a", phase="Failed", ready=False)
    p = plan(template(), [node("a")], [failed])
    assert deleted(p) == {(failed.metadata.name, "failed")} and not p.creates
    assert plan(template(), [node("a")], []).creates == ["a"]
    assert plan(template(), [node("a")], [], held=("a",)).creates == []


def test_no_replacement_while_the_old_pod_terminates_without_surge() -> None:
    old = pod("a")
    old.metadata.deletion_timestamp = "2024-05-01T12:00:00Z"
    assert plan(template(), [node("a")], [old]).creates == []
    surge = UpdatePolicy(max_unavailable=0, max_surge=1)
    assert plan(template(), [node("a")], [old], surge).creates == ["a"]


# -- rolling update ----------------------------------------------------------------


def test_max_unavailable_bounds_how_many_old_pods_go_at_once() -> None:
    nodes = [node(n) for n in "abcd"]
    pods = [pod(n, OLD) for n in "abcd"]
    p = plan(template(), nodes, pods, UpdatePolicy(max_unavailable=2))
    assert [d.reason for d in p.deletes] == ["update", "update"]
    # One node already unavailable (its new pod not ready): only one more goes.
    pods = [pod("a", NEW, ready=False)] + [pod(n, OLD) for n in "bcd"]
    p = plan(template(), nodes, pods, UpdatePolicy(max_unavailable=2))
    assert len(p.deletes) == 1
    # An old pod that is not available goes regardless of the budget.
    pods = [pod("a", NEW, ready=False), pod("b", NEW, ready=False), pod("c", OLD, ready=False)]
    pods.append(pod("d", OLD))
    p = plan(template(), nodes, pods, UpdatePolicy(max_unavailable=2))
    assert deleted(p) == {(pods[2].metadata.name, "update")}


def test_max_surge_starts_new_pods_beside_old_ones_then_removes_the_old() -> None:
    nodes = [node(n) for n in "abc"]
    policy = UpdatePolicy(max_unavailable=0, max_surge=1)
    pods = [pod(n, OLD) for n in "abc"]
    p = plan(template(), nodes, pods, policy)
    assert p.creates == ["a"] and not p.deletes
    new_a = pod("a", NEW, ready=False)
    p = plan(template(), nodes, [*pods, new_a], policy)
    assert not p.creates and not p.deletes  # the surge slot is taken until it is ready
    ready_a = pod("a", NEW)
    p = plan(template(), nodes, [*pods, ready_a], policy)
    assert deleted(p) == {(pods[0].metadata.name, "update")}
    assert p.creates == ["b"]


def test_on_delete_leaves_old_pods_alone() -> None:
    policy = UpdatePolicy(strategy="OnDelete")
    p = plan(template(), [node("a")], [pod("a", OLD)], policy)
    assert not p.deletes and not p.creates


def test_update_policy_resolves_percentages_against_eligible_nodes() -> None:
    ds = apps.DaemonSet()
    ds.spec.update_strategy.type = "RollingUpdate"
    ds.spec.update_strategy.rolling_update.max_unavailable = "25%"
    assert UpdatePolicy.of(ds, 10).max_unavailable == 3  # rounded up
    ds.spec.update_strategy.rolling_update.max_unavailable = "0"
    ds.spec.update_strategy.rolling_update.max_surge = "0"
    assert UpdatePolicy.of(ds, 10).max_unavailable == 1


# -- status ------------------------------------------------------------------------


def test_status_counts() -> None:
    t = template(role="w")
    nodes = [
        node("a", {"role": "w"}),
        node("b", {"role": "w"}),
        node("c"),
        node("d", {"role": "w"}),
    ]
    pods = [pod("a", NEW), pod("b", OLD, ready=False), pod("c", NEW)]
    counts = count_daemon_pods(
        node_fits(t, nodes), {p.spec.node_name: [p] for p in pods}, NEW, 0, NOW
    )
    assert counts.desired == 3
    assert counts.current == 2
    assert counts.misscheduled == 1
    assert (counts.ready, counts.available, counts.updated) == (1, 1, 1)
    assert counts.unavailable == 2
