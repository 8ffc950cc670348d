"""VolumeBinding: claims must be bound, and a bound local volume's node
affinity decides where the pod may run; claim and volume events retry the
pods they can help."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.protobuf import json_format

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.scheduler.algorithm import Algorithm, FitError
from orchestrator.scheduler.framework import SKIP, UNRESOLVABLE, CycleState, Snapshot, Status
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.plugins.volume_binding import (
    REASON_NODE_CONFLICT,
    REASON_UNBOUND,
    VolumeBinding,
)
from orchestrator.scheduler.podinfo import PodInfo, pod_info
from orchestrator.scheduler.profiles import default_profiles
from orchestrator.scheduler.queue import SchedulingQueue
from orchestrator.scheduler.scheduler import Scheduler
from orchestrator.scheduler.testing import make_node, make_pod

pytestmark = pytest.mark.unit

HOST = "kubernetes.io/hostname"


# -- builders ----------------------------------------------------------------------------


def claim(name: str, volume: str = "", *, phase: str = "", namespace: str = "default") -> Any:
    pvc = core.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    pvc.metadata.name = name
    pvc.metadata.namespace = namespace
    pvc.spec.volume_name = volume
    pvc.status.phase = phase or ("Bound" if volume else "Pending")
    return pvc


def volume(name: str, *terms: dict[str, Any], required: bool | None = None) -> Any:
    """A local volume; with terms (NodeSelectorTerms in JSON form), node affinity."""
    pv = core.PersistentVolume(api_version="v1", kind="PersistentVolume")
    pv.metadata.name = name
    pv.spec.capacity["storage"] = "1Gi"
    pv.spec.local.path = f"/mnt/{name}"
    if terms or required:
        json_format.ParseDict(
            {"required": {"nodeSelectorTerms": list(terms)}}, pv.spec.node_affinity
        )
    return pv


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}


def on_host(*names: str) -> dict[str, Any]:
    return expr(HOST, "In", *names)


class Volumes:
    def __init__(self, *objects: Any) -> None:
        self.claims = {
            (o.metadata.namespace, o.metadata.name): o
            for o in objects
            if isinstance(o, core.PersistentVolumeClaim)
        }
        self.volumes = {o.metadata.name: o for o in objects if isinstance(o, core.PersistentVolume)}

    def get_claim(self, namespace: str, name: str) -> Any | None:
        return self.claims.get((namespace, name))

    def get_volume(self, name: str) -> Any | None:
        return self.volumes.get(name)


def node(name: str, **kwargs: Any) -> NodeInfo:
    ni = NodeInfo(name)
    ni.set_node(make_node(name, **kwargs))
    return ni


def pod_with_claims(name: str, *claims: str, **kwargs: Any) -> Any:
    p = make_pod(name, **kwargs)
    for i, c in enumerate(claims):
        p.spec.volumes.add(name=f"data{i}").persistent_volume_claim.claim_name = c
    return p


def info(name: str = "p", *claims: str, **kwargs: Any) -> PodInfo:
    return pod_info(pod_with_claims(name, *claims, **kwargs))


def snapshot(nodes: list[NodeInfo], *objects: Any) -> Snapshot:
    snap = Snapshot.of(nodes)
    snap.volumes = Volumes(*objects)
    return snap


def pre_filter(p: PodInfo, *objects: Any) -> tuple[Status | None, CycleState]:
    state = CycleState()
    return VolumeBinding().pre_filter(state, p, snapshot([], *objects)), state


def run(p: PodInfo, nodes: list[NodeInfo], *objects: Any) -> dict[str, Status | None]:
    """PreFilter (which must let the pod through), then Filter per node; the
    batch filter must agree."""
    plugin = VolumeBinding()
    state = CycleState()
    status = plugin.pre_filter(state, p, snapshot(nodes, *objects))
    assert status is None, status
    got = {n.name: plugin.filter(state, p, n) for n in nodes}
    passed = [n.name for n in plugin.filter_nodes(state, p, nodes)]
    assert passed == [name for name, s in got.items() if s is None]
    return got


def fits(results: dict[str, Status | None]) -> set[str]:
    return {name for name, s in results.items() if s is None}


# -- PreFilter ---------------------------------------------------------------------------


def test_pods_without_claims_skip_the_plugin() -> None:
    status, _ = pre_filter(info("plain"))
    assert status is not None and status.code == SKIP
    other = pod_with_claims("scratch")
    other.spec.volumes.add(name="tmp").empty_dir.medium = ""
    other.spec.volumes.add(name="host").host_path.path = "/var/log"
    p = pod_info(other)
    assert p.claims == ()
    status, _ = pre_filter(p)
    assert status is not None and status.code == SKIP


def test_claim_names_are_read_once_each() -> None:
    assert info("p", "a", "b", "a").claims == ("a", "b")


def test_missing_claim_rejects_the_pod() -> None:
    status, _ = pre_filter(info("p", "data"), claim("data", namespace="elsewhere"))
    assert status is not None and status.rejects
    assert status.code == UNRESOLVABLE
    assert status.message == 'persistentvolumeclaim "data" not found'
    assert status.plugin == "VolumeBinding"


@pytest.mark.parametrize(
    "pvc",
    [
        claim("data"),  # Pending, no volume yet
        claim("data", "pv1", phase="Pending"),  # pre-bound by the user, not bound yet
        claim("data", "pv1", phase="Lost"),
    ],
)
def test_unbound_claim_rejects_the_pod(pvc: Any) -> None:
    status, _ = pre_filter(info("p", "data"), pvc, volume("pv1"))
    assert status is not None and status.code == UNRESOLVABLE
    assert status.message == REASON_UNBOUND


def test_unbound_claim_wins_over_a_missing_volume() -> None:
    status, _ = pre_filter(info("p", "a", "b"), claim("a", "gone"), claim("b"))
    assert status is not None and status.message == REASON_UNBOUND


def test_claim_being_deleted_rejects_the_pod() -> None:
    pvc = claim("data", "pv1")
    pvc.metadata.deletion_timestamp = "2024-01-01T00:00:00Z"
    status, _ = pre_filter(info("p", "data"), pvc, volume("pv1"))
    assert status is not None and status.message == (
        'persistentvolumeclaim "data" is being deleted'
    )


def test_missing_volume_rejects_the_pod() -> None:
    status, _ = pre_filter(info("p", "data"), claim("data", "pv1"))
    assert status is not None and status.rejects
    assert status.message == 'persistentvolume "pv1" not found'


def test_bound_volume_without_node_affinity_skips_the_filter() -> None:
    status, _ = pre_filter(info("p", "data"), claim("data", "pv1"), volume("pv1"))
    assert status is not None and status.code == SKIP


def test_claims_are_looked_up_in_the_pods_namespace() -> None:
    p = info("p", "data", namespace="team")
    status, _ = pre_filter(p, claim("data", "pv1", namespace="team"), volume("pv1"))
    assert status is not None and status.code == SKIP


def test_invalid_volume_node_affinity_names_the_volume() -> None:
    bad = volume("pv1", expr("rack", "Gt", "high"))
    status, _ = pre_filter(info("p", "data"), claim("data", "pv1"), bad)
    assert status is not None and status.code == UNRESOLVABLE
    assert 'persistentvolume "pv1"' in status.message
    assert "nodeSelectorTerms[0].matchExpressions[0]" in status.message


# -- Filter ------------------------------------------------------------------------------


def test_bound_local_volume_pins_the_pod_to_its_node() -> None:
    nodes = [node("a"), node("b"), node("c")]
    got = run(info("p", "data"), nodes, claim("data", "pv1"), volume("pv1", on_host("b")))
    assert fits(got) == {"b"}
    assert got["a"] is not None and got["a"].reasons == (REASON_NODE_CONFLICT,)
    assert got["a"].code == UNRESOLVABLE


def test_volume_terms_are_ored_and_their_requirements_anded() -> None:
    nodes = [
        node("a", labels={"zone": "z1", "disk": "ssd"}),
        node("b", labels={"zone": "z1"}),
        node("c", labels={"zone": "z2"}),
        node("d"),
    ]
    both = {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["z1"]},
            {"key": "disk", "operator": "Exists"},
        ]
    }
    pv = volume("pv1", both, expr("zone", "In", "z2"))
    assert fits(run(info("p", "data"), nodes, claim("data", "pv1"), pv)) == {"a", "c"}


def test_match_fields_select_by_node_name() -> None:
    nodes = [node("a"), node("b")]
    by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}
    got = run(info("p", "data"), nodes, claim("data", "pv1"), volume("pv1", by_name))
    assert fits(got) == {"a"}


def test_every_volume_must_be_reachable() -> None:
    nodes = [node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z1"}), node("c")]
    objects = (
        claim("x", "pv-x"),
        claim("y", "pv-y"),
        claim("z", "pv-z"),
        volume("pv-x", expr("zone", "In", "z1")),
        volume("pv-y", on_host("b", "c")),
        volume("pv-z"),  # no affinity: anywhere
    )
    assert fits(run(info("p", "x", "y", "z"), nodes, *objects)) == {"b"}


def test_required_affinity_with_no_usable_terms_matches_no_node() -> None:
    nodes = [node("a"), node("b")]
    pv = volume("pv1", {"matchExpressions": []}, required=True)
    assert fits(run(info("p", "data"), nodes, claim("data", "pv1"), pv)) == set()


# -- through the framework -----------------------------------------------------------------


def default_profile() -> Any:
    return default_profiles()[0]


def test_default_and_bin_packing_profiles_run_volume_binding() -> None:
    for profile in default_profiles():
        assert "VolumeBinding" in [p.name for p in profile.filters]
        assert "VolumeBinding" in [p.name for p in profile.pre_filters]


def test_conflicts_are_counted_in_the_fit_error() -> None:
    nodes = [node("a"), node("b"), node("c", cpu="100m")]
    objects = (claim("data", "pv1"), volume("pv1", on_host("c")))
    with pytest.raises(FitError) as err:
        Algorithm().schedule(
            default_profile(), info("p", "data", cpu="1"), snapshot(nodes, *objects)
        )
    assert str(err.value) == (
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had volume node affinity conflict."
    )


def test_pre_filter_rejection_is_the_whole_message() -> None:
    nodes = [node("a"), node("b")]
    with pytest.raises(FitError) as err:
        Algorithm().schedule(default_profile(), info("p", "data"), snapshot(nodes, claim("data")))
    assert str(err.value) == (
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    )


def test_volume_affinity_overrides_a_better_score() -> None:
    busy = node("a", cpu="4")
    nodes = [busy, node("b", cpu="4")]
    for i in range(3):
        placed = pod_info(make_pod(f"x{i}", cpu="1", node_name="b"))
        nodes[1].add_pod(placed)
    objects = (claim("data", "pv1"), volume("pv1", on_host("b")))
    free = Algorithm(seed=1).schedule(
        default_profile(), info("q", cpu="500m"), snapshot(nodes, *objects)
    )
    assert free.node == "a"  # the emptier node scores better
    result = Algorithm(seed=1).schedule(
        default_profile(), info("p", "data", cpu="500m"), snapshot(nodes, *objects)
    )
    assert result.node == "b"


# -- requeueing ----------------------------------------------------------------------------


async def fail_all(queue: SchedulingQueue, *pods: PodInfo) -> None:
    for p in pods:
        queue.add(p)
    for _ in pods:
        qp = await asyncio.wait_for(queue.pop(), 1)
        assert qp is not None
        queue.add_unschedulable(qp)


async def test_queue_moves_only_the_pods_a_change_can_help() -> None:
    queue = SchedulingQueue()
    await fail_all(queue, info("uses", "data"), info("other", "logs"), info("plain"))
    moved = queue.move_to_active_if(lambda p: "data" in p.claims, "PersistentVolumeClaimUpdate")
    assert moved == 1
    assert queue.where("default/uses") in ("active", "backoff")
    assert queue.where("default/other") == "unschedulable"
    assert queue.where("default/plain") == "unschedulable"


class FakeClient:
    async def update_status(self, obj: Any) -> Any:
        return obj


async def test_claim_and_volume_events_retry_the_pods_waiting_for_them() -> None:
    s = Scheduler(FakeClient())
    s.queue = SchedulingQueue(initial_backoff=0.0, max_backoff=0.0)
    s._on_node("ADDED", make_node("a"), None)
    s._on_node("ADDED", make_node("b"), None)
    pending = claim("data")
    s._claim_informer._items["default/data"] = pending
    s._claim_informer._items["other/data"] = claim("data", namespace="other")
    for p in (
        pod_with_claims("waits", "data"),
        pod_with_claims("elsewhere", "data", namespace="other"),
        pod_with_claims("plain", cpu="100"),
    ):
        s.queue.add(pod_info(p))
    # All three fail: two for their claims, "plain" for cpu.
    for _ in range(3):
        qp = await asyncio.wait_for(s.queue.pop(), 1)
        assert qp is not None
        s.schedule_one(qp)
        if qp.info.name == "waits":
            assert qp.reasons == (
                "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
            )
        if qp.info.name == "elsewhere":
            assert "persistentvolumeclaim" not in qp.reasons  # it exists, unbound
    assert s.queue.where("default/waits") == "unschedulable"
    assert s.queue.where("other/elsewhere") == "unschedulable"
    assert s.queue.where("default/plain") == "unschedulable"

    # A status-only write of the claim (no binding) changes nothing.
    same = claim("data")
    same.metadata.annotations["note"] = "x"
    s._on_claim("MODIFIED", same, pending)
    assert s.queue.where("default/waits") == "unschedulable"

    # The claim binds: only pods using it (in its namespace) are retried.
    bound = claim("data", "pv1")
    s._claim_informer._items["default/data"] = bound
    s._on_claim("MODIFIED", bound, pending)
    assert s.queue.where("default/waits") in ("active", "backoff")
    assert s.queue.where("other/elsewhere") == "unschedulable"

    # Its volume is missing yet; a PV appearing retries every pod with claims.
    qp = await asyncio.wait_for(s.queue.pop(), 1)
    assert qp is not None and qp.info.name == "waits"
    s.schedule_one(qp)
    assert qp.reasons.endswith('persistentvolume "pv1" not found.')
    pv = volume("pv1", on_host("b"))
    s._volume_informer._items["pv1"] = pv
    phase_only = volume("pv1", on_host("b"))
    phase_only.status.phase = "Bound"
    s._on_volume("MODIFIED", phase_only, pv)  # a status write: nothing
    assert s.queue.where("default/waits") == "unschedulable"
    s._on_volume("ADDED", pv, None)
    assert s.queue.where("default/waits") in ("active", "backoff")
    assert s.queue.where("other/elsewhere") in ("active", "backoff")
    assert s.queue.where("default/plain") == "unschedulable"
