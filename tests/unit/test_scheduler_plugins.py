"""Each scheduler plugin on its own: filter verdicts, reasons, scores."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.scheduler.framework import SKIP, CycleState, Snapshot, Status
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.plugins.balanced_allocation import BalancedAllocation
from orchestrator.scheduler.plugins.image_locality import ImageLocality, image_score
from orchestrator.scheduler.plugins.inter_pod_affinity import InterPodAffinity
from orchestrator.scheduler.plugins.node_affinity import NodeAffinity
from orchestrator.scheduler.plugins.node_name import NodeName
from orchestrator.scheduler.plugins.node_ports import NodePorts
from orchestrator.scheduler.plugins.node_resources_fit import (
    MOST_ALLOCATED,
    NodeResourcesFit,
)
from orchestrator.scheduler.plugins.node_unschedulable import NodeUnschedulable
from orchestrator.scheduler.plugins.pod_topology_spread import PodTopologySpread
from orchestrator.scheduler.plugins.selector_spread import SelectorSpread
from orchestrator.scheduler.plugins.taint_toleration import TaintToleration
from orchestrator.scheduler.podinfo import PodInfo, pod_info
from orchestrator.scheduler.testing import make_node, make_pod

pytestmark = pytest.mark.unit

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def node(name: str, *pods: PodInfo, **kwargs: Any) -> NodeInfo:
    ni = NodeInfo(name)
    ni.set_node(make_node(name, **kwargs))
    for p in pods:
        p.node_name = name
        ni.add_pod(p)
    return ni


def pod(name: str = "p", **kwargs: Any) -> PodInfo:
    return pod_info(make_pod(name, **kwargs))


def run_filter(plugin: Any, p: PodInfo, nodes: list[NodeInfo]) -> dict[str, Status | None]:
    """PreFilter once, then Filter per node, as the framework does; a SKIP
    answers None (fits) for every node."""
    state = CycleState()
    snapshot = Snapshot.of(nodes)
    if hasattr(plugin, "pre_filter"):
        status = plugin.pre_filter(state, p, snapshot)
        if status is not None and status.code == SKIP:
            return {n.name: None for n in nodes}
        assert status is None, status
    return {n.name: plugin.filter(state, p, n) for n in nodes}


def reasons(results: dict[str, Status | None]) -> dict[str, tuple[str, ...]]:
    return {name: s.reasons if s else () for name, s in results.items()}


def run_score(plugin: Any, p: PodInfo, nodes: list[NodeInfo]) -> list[int] | None:
    scores: list[int] | None = plugin.score(CycleState(), p, nodes, Snapshot.of(nodes))
    return scores


# -- NodeUnschedulable, NodeName --------------------------------------------------------


def test_unschedulable_node_rejected_unless_tolerated() -> None:
    nodes = [node("cordoned", unschedulable=True), node("open")]
    got = reasons(run_filter(NodeUnschedulable(), pod(), nodes))
    assert got == {"cordoned": ("node(s) were unschedulable",), "open": ()}
    tolerant = pod(
        tolerations=[
            {
                "key": "node.kubernetes.io/unschedulable",
                "operator": "Exists",
                "effect": "NoSchedule",
            }
        ]
    )
    assert reasons(run_filter(NodeUnschedulable(), tolerant, nodes))["cordoned"] == ()


def test_node_name_only_matches_the_named_node() -> None:
    nodes = [node("a"), node("b")]
    got = reasons(run_filter(NodeName(), pod(node_name="b"), nodes))
    assert got == {"a": ("node(s) didn't match the requested node name",), "b": ()}
    assert reasons(run_filter(NodeName(), pod(), nodes)) == {"a": (), "b": ()}


# -- NodeAffinity -----------------------------------------------------------------------


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": op, "values": list(values)}


AFFINITY_REASON = ("node(s) didn't match Pod's node affinity/selector",)


def test_node_selector_must_match_every_label() -> None:
    nodes = [
        node("ssd", labels={"disk": "ssd", "arch": "amd64"}),
        node("hdd", labels={"disk": "hdd"}),
    ]
    got = reasons(run_filter(NodeAffinity(), pod(node_selector={"disk": "ssd"}), nodes))
    assert got == {"ssd": (), "hdd": AFFINITY_REASON}


@pytest.mark.parametrize(
    ("term", "fits"),
    [
        ({"matchExpressions": [expr("zone", "In", "a", "b")]}, {"n1", "n2"}),
        ({"matchExpressions": [expr("zone", "NotIn", "a")]}, {"n2", "n3"}),
        ({"matchExpressions": [expr("gpu", "Exists")]}, {"n3"}),
        ({"matchExpressions": [expr("gpu", "DoesNotExist")]}, {"n1", "n2"}),
        ({"matchExpressions": [expr("cores", "Gt", "8")]}, {"n2"}),
        ({"matchExpressions": [expr("cores", "Lt", "8")]}, {"n1"}),
        ({"matchFields": [expr("metadata.name", "In", "n3")]}, {"n3"}),
        (
            {"matchExpressions": [expr("zone", "In", "a", "b"), expr("cores", "Gt", "2")]},
            {"n1", "n2"},
        ),
        ({}, set()),  # an empty term matches no node
    ],
)
def test_required_node_affinity_operators(term: dict[str, Any], fits: set[str]) -> None:
    nodes = [
        node("n1", labels={"zone": "a", "cores": "4"}),
        node("n2", labels={"zone": "b", "cores": "16"}),
        node("n3", labels={"zone": "c", "gpu": "1", "cores": "x"}),
    ]
    got = run_filter(NodeAffinity(), pod(affinity=required(term)), nodes)
    assert {name for name, s in got.items() if s is None} == fits


def test_required_terms_are_ored() -> None:
    nodes = [node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"}), node("n3")]
    p = pod(
        affinity=required(
            {"matchExpressions": [expr("zone", "In", "a")]},
            {"matchExpressions": [expr("zone", "In", "b")]},
        )
    )
    got = reasons(run_filter(NodeAffinity(), p, nodes))
    assert got == {"n1": (), "n2": (), "n3": AFFINITY_REASON}


def test_bad_gt_value_rejects_the_pod_with_the_field_named() -> None:
    p = pod(affinity=required({"matchExpressions": [expr("cores", "Gt", "many")]}))
    status = NodeAffinity().pre_filter(CycleState(), p, Snapshot.of([node("n1")]))
    assert status is not None and status.rejects
    assert "nodeSelectorTerms[0].matchExpressions[0]" in status.message
    assert "Gt needs exactly one integer value" in status.message


def test_preferred_node_affinity_scores_by_weight() -> None:
    p = pod(
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 80, "preference": {"matchExpressions": [expr("zone", "In", "a")]}},
                    {"weight": 20, "preference": {"matchExpressions": [expr("ssd", "Exists")]}},
                ]
            }
        }
    )
    nodes = [
        node("both", labels={"zone": "a", "ssd": "1"}),
        node("zone", labels={"zone": "a"}),
        node("ssd", labels={"ssd": "1"}),
        node("none"),
    ]
    assert run_score(NodeAffinity(), p, nodes) == [100, 80, 20, 0]
    assert run_score(NodeAffinity(), pod(), nodes) is None


# -- TaintToleration ------------------------------------------------------------------


def test_untolerated_taints_reject_with_the_taint_named() -> None:
    nodes = [
        node("db", taints=[("dedicated", "db", "NoSchedule")]),
        node("evict", taints=[("maintenance", "", "NoExecute")]),
        node("soft", taints=[("noisy", "yes", "PreferNoSchedule")]),
        node("clean"),
    ]
    got = reasons(run_filter(TaintToleration(), pod(), nodes))
    assert got == {
        "db": ("node(s) had untolerated taint {dedicated: db}",),
        "evict": ("node(s) had untolerated taint {maintenance: }",),
        "soft": (),
        "clean": (),
    }


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}, True),
        ({"key": "dedicated", "value": "db"}, True),  # empty operator means Equal, any effect
        ({"key": "dedicated", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),  # tolerates everything
        ({"key": "dedicated", "value": "web"}, False),
        ({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_toleration_matching(toleration: dict[str, str], tolerated: bool) -> None:
    nodes = [node("db", taints=[("dedicated", "db", "NoSchedule")])]
    got = run_filter(TaintToleration(), pod(tolerations=[toleration]), nodes)
    assert (got["db"] is None) == tolerated


def test_node_not_ready_is_tainted_even_without_a_lifecycle_controller() -> None:
    nodes = [node("down", ready="False"), node("lost", ready="Unknown"), node("new", ready=None)]
    got = reasons(run_filter(TaintToleration(), pod(), nodes))
    assert got == {
        "down": ("node(s) had untolerated taint {node.kubernetes.io/not-ready: }",),
        "lost": ("node(s) had untolerated taint {node.kubernetes.io/unreachable: }",),
        "new": ("node(s) had untolerated taint {node.kubernetes.io/not-ready: }",),
    }
    tolerant = pod(tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}])
    assert run_filter(TaintToleration(), tolerant, nodes)["down"] is None


def test_prefer_no_schedule_only_lowers_the_score() -> None:
    nodes = [
        node("two", taints=[("a", "", "PreferNoSchedule"), ("b", "", "PreferNoSchedule")]),
        node("one", taints=[("a", "", "PreferNoSchedule")]),
        node("none"),
    ]
    assert run_score(TaintToleration(), pod(), nodes) == [0, 50, 100]
    tolerant = pod(tolerations=[{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"}])
    assert run_score(TaintToleration(), tolerant, nodes) == [0, 100, 100]
    assert run_score(TaintToleration(), pod(), [node("x"), node("y")]) is None


# -- NodeResourcesFit and friends -----------------------------------------------------


def test_resources_fit_reports_every_shortage() -> None:
    busy = pod("busy", cpu="3500m", memory="7Gi")
    nodes = [
        node("full", busy, cpu="4", memory="8Gi"),
        node("tiny-pods", cpu="4", memory="8Gi", pods=0),
        node("roomy", cpu="4", memory="8Gi"),
    ]
    got = reasons(run_filter(NodeResourcesFit(), pod(cpu="1", memory="2Gi"), nodes))
    assert got == {
        "full": ("Insufficient cpu", "Insufficient memory"),
        "tiny-pods": ("Too many pods",),
        "roomy": (),
    }


def test_init_containers_count_at_their_peak() -> None:
    p = make_pod("p", cpu="500m", memory="100Mi")
    init = p.spec.init_containers.add(name="init", image="busybox")
    init.resources.requests["cpu"] = "3"
    sidecar = p.spec.init_containers.add(name="proxy", image="busybox", restart_policy="Always")
    sidecar.resources.requests["cpu"] = "200m"
    info = pod_info(p)
    # max(app 500m + sidecar 200m, init 3 cpu (the sidecar starts after it)).
    assert info.requests.cpu == 3000
    nodes = [node("small", cpu="2"), node("big", cpu="4")]
    got = reasons(run_filter(NodeResourcesFit(), info, nodes))
    assert got == {"small": ("Insufficient cpu",), "big": ()}


def test_extended_resources_are_checked() -> None:
    p = make_pod("p")
    p.spec.containers[0].resources.requests["example.com/gpu"] = "1"
    n = make_node("n")
    plain = NodeInfo("plain")
    plain.set_node(n)
    n.status.allocatable["example.com/gpu"] = "2"
    gpu = NodeInfo("gpu")
    gpu.set_node(n)
    got = reasons(run_filter(NodeResourcesFit(), pod_info(p), [plain, gpu]))
    assert got == {"plain": ("Insufficient example.com/gpu",), "gpu": ()}


def test_invalid_request_becomes_a_pod_error() -> None:
    p = make_pod("p", cpu="lots")
    assert "invalid resource request" in pod_info(p).error
    assert "cpu" in pod_info(p).error


def test_least_and_most_allocated_scores() -> None:
    half = pod("half", cpu="1", memory="2Gi")
    nodes = [node("empty", cpu="4", memory="8Gi"), node("used", half, cpu="4", memory="8Gi")]
    incoming = pod(cpu="1", memory="2Gi")
    least = run_score(NodeResourcesFit(), incoming, nodes)
    most = run_score(NodeResourcesFit(MOST_ALLOCATED), incoming, nodes)
    assert least == [75, 50]  # (4-1)/4 and (4-2)/4, cpu and memory alike
    assert most == [25, 50]


def test_best_effort_pods_count_default_requests_for_scoring() -> None:
    nodes = [node("n", cpu="1", memory="1Gi")]
    # 100m of 1 cpu, 200Mi of 1Gi: (90 + 80) / 2
    assert run_score(NodeResourcesFit(), pod(), nodes) == [85]


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match=r"scoringStrategy\.type 'Random'"):
        NodeResourcesFit("Random")


def test_balanced_allocation_prefers_even_use() -> None:
    nodes = [
        node("even", cpu="4", memory="4Gi"),
        node("skewed", cpu="4", memory="64Gi"),
    ]
    scores = run_score(BalancedAllocation(), pod(cpu="2", memory="2Gi"), nodes)
    assert scores is not None
    assert scores[0] == 100 and scores[1] < scores[0]


# -- NodePorts ---------------------------------------------------------------------------


def test_host_ports_conflict() -> None:
    nodes = [node("taken", pod("web", host_ports=[80])), node("free")]
    got = reasons(run_filter(NodePorts(), pod(host_ports=[80]), nodes))
    assert got == {
        "taken": ("node(s) didn't have free ports for the requested pod ports",),
        "free": (),
    }
    assert reasons(run_filter(NodePorts(), pod(host_ports=[8080]), nodes))["taken"] == ()


# -- ImageLocality, SelectorSpread --------------------------------------------------------


def test_image_locality_prefers_nodes_with_the_image() -> None:
    big = 500 * 1024 * 1024
    nodes = [
        node("has", images=[(["registry/app:1"], big)]),
        node("also", images=[(["registry/app:1"], big)]),
        node("lacks"),
    ]
    scores = run_score(ImageLocality(), pod(image="registry/app:1"), nodes)
    assert scores is not None
    assert scores[0] == scores[1] > scores[2] == 0
    assert run_score(ImageLocality(), pod(image="other:2"), nodes) is None
    assert image_score(0, 1) == 0 and image_score(10**12, 1) == 100


def test_image_without_tag_means_latest() -> None:
    nodes = [node("has", images=[(["app:latest"], 900 * 1024 * 1024)]), node("lacks")]
    scores = run_score(ImageLocality(), pod(image="app"), nodes)
    assert scores is not None and scores[0] > 0


def test_selector_spread_prefers_nodes_without_siblings() -> None:
    sibling = pod("sib", owner_uid="rs-1")
    stranger = pod("other", owner_uid="rs-2")
    nodes = [node("crowded", sibling), node("busy-elsewhere", stranger), node("empty")]
    assert run_score(SelectorSpread(), pod(owner_uid="rs-1"), nodes) == [0, 100, 100]
    assert run_score(SelectorSpread(), pod(), nodes) is None


# -- InterPodAffinity ---------------------------------------------------------------------


def term(labels: dict[str, str], key: str = HOST) -> dict[str, Any]:
    return {"labelSelector": {"matchLabels": labels}, "topologyKey": key}


def test_required_affinity_needs_a_match_in_the_domain() -> None:
    db = pod("db", labels={"app": "db"})
    nodes = [
        node("a1", db, labels={ZONE: "a"}),
        node("a2", labels={ZONE: "a"}),
        node("b1", labels={ZONE: "b"}),
        node("nozone"),
    ]
    p = pod(
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term({"app": "db"}, ZONE)]
            }
        }
    )
    got = reasons(run_filter(InterPodAffinity(), p, nodes))
    no = ("node(s) didn't match pod affinity rules",)
    assert got == {"a1": (), "a2": (), "b1": no, "nozone": no}


def test_first_pod_of_a_self_affine_group_is_allowed() -> None:
    nodes = [node("a", labels={ZONE: "a"}), node("b")]
    p = pod(
        labels={"app": "cache"},
        affinity={
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term({"app": "cache"}, ZONE)]
            }
        },
    )
    got = reasons(run_filter(InterPodAffinity(), p, nodes))
    assert got == {"a": (), "b": ("node(s) didn't match pod affinity rules",)}


def test_required_anti_affinity_and_its_symmetry() -> None:
    web = pod("web", labels={"app": "web"})
    nodes = [node("n1", web), node("n2")]
    p = pod(
        labels={"app": "web"},
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term({"app": "web"})]
            }
        },
    )
    got = reasons(run_filter(InterPodAffinity(), p, nodes))
    assert got == {"n1": ("node(s) didn't match pod anti-affinity rules",), "n2": ()}

    # An existing pod that refuses company keeps others away though they ask nothing.
    loner = pod(
        "loner",
        labels={"app": "loner"},
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term({"app": "web"})]
            }
        },
    )
    nodes = [node("n1", loner), node("n2")]
    got = reasons(run_filter(InterPodAffinity(), pod(labels={"app": "web"}), nodes))
    assert got == {"n1": ("node(s) didn't satisfy existing pods anti-affinity rules",), "n2": ()}
    # Other namespaces are not selected by a term without namespaces.
    other_ns = pod(labels={"app": "web"}, namespace="elsewhere")
    assert reasons(run_filter(InterPodAffinity(), other_ns, nodes))["n1"] == ()


def test_preferred_pod_affinity_scores() -> None:
    cache = pod("cache", labels={"app": "cache"})
    nodes = [node("with", cache), node("without")]
    near = pod(
        affinity={
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": term({"app": "cache"})}
                ]
            }
        }
    )
    far = pod(
        affinity={
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": term({"app": "cache"})}
                ]
            }
        }
    )
    assert run_score(InterPodAffinity(), near, nodes) == [100, 0]
    assert run_score(InterPodAffinity(), far, nodes) == [0, 100]
    assert run_score(InterPodAffinity(), pod(), nodes) is None


def test_pods_without_affinity_skip_the_filter() -> None:
    state = CycleState()
    status = InterPodAffinity().pre_filter(state, pod(), Snapshot.of([node("n", pod("x"))]))
    assert status is not None and status.code == SKIP


# -- PodTopologySpread --------------------------------------------------------------------


def spread(max_skew: int, key: str, hard: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "maxSkew": max_skew,
        "topologyKey": key,
        "whenUnsatisfiable": "DoNotSchedule" if hard else "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "web"}},
        **extra,
    }


def web(name: str) -> PodInfo:
    return pod(name, labels={"app": "web"})


def test_topology_spread_max_skew_filter() -> None:
    nodes = [
        node("a1", web("w1"), web("w2"), labels={ZONE: "a"}),
        node("b1", web("w3"), labels={ZONE: "b"}),
        node("c1", labels={ZONE: "c"}),
        node("nolabel"),
    ]
    p = pod(labels={"app": "web"}, spread=[spread(1, ZONE)])
    got = reasons(run_filter(PodTopologySpread(), p, nodes))
    skew = ("node(s) didn't match pod topology spread constraints",)
    assert got == {
        "a1": skew,  # 2 + 1 - 0 > 1
        "b1": skew,  # 1 + 1 - 0 > 1
        "c1": (),
        "nolabel": (
            "node(s) didn't match pod topology spread constraints (missing required label)",
        ),
    }
    relaxed = pod(labels={"app": "web"}, spread=[spread(2, ZONE)])
    got = reasons(run_filter(PodTopologySpread(), relaxed, nodes))
    assert got["b1"] == () and got["a1"] == skew


def test_min_domains_counts_missing_domains_as_empty() -> None:
    nodes = [node("a1", web("w1"), labels={ZONE: "a"}), node("b1", web("w2"), labels={ZONE: "b"})]
    p = pod(labels={"app": "web"}, spread=[spread(1, ZONE, minDomains=3)])
    got = run_filter(PodTopologySpread(), p, nodes)
    assert all(s is not None for s in got.values())  # global minimum is 0: 1 + 1 - 0 > 1
    p = pod(labels={"app": "web"}, spread=[spread(1, ZONE)])
    assert all(s is None for s in run_filter(PodTopologySpread(), p, nodes).values())


def test_schedule_anyway_scores_emptier_domains_higher() -> None:
    nodes = [node("n1", web("w1"), web("w2")), node("n2", web("w3")), node("n3")]
    p = pod(labels={"app": "web"}, spread=[spread(1, HOST, hard=False)])
    scores = run_score(PodTopologySpread(), p, nodes)
    assert scores is not None
    assert scores[2] > scores[1] > scores[0]
    # ScheduleAnyway never filters.
    assert all(s is None for s in run_filter(PodTopologySpread(), p, nodes).values())


# -- batch filtering agrees with per-node filtering ----------------------------------------


def test_batch_filters_agree_with_per_node_filters() -> None:
    import random

    rng = random.Random(5)
    nodes = []
    for i in range(200):
        taints = [("dedicated", rng.choice(["a", "b"]), "NoSchedule")] if rng.random() < 0.2 else []
        ni = node(
            f"n{i}",
            cpu=rng.choice(["500m", "1", "2"]),
            memory=rng.choice(["512Mi", "1Gi"]),
            pods=rng.choice([0, 1, 110]),
            taints=taints,
            unschedulable=rng.random() < 0.1,
            ready=rng.choice(["True", "True", "False"]),
        )
        for j in range(rng.randrange(3)):
            p = pod(f"x{i}-{j}", cpu=rng.choice(["100m", "400m"]), memory="256Mi")
            p.node_name = ni.name
            ni.add_pod(p)
        nodes.append(ni)
    plugins: list[Any] = [NodeUnschedulable(), TaintToleration(), NodeResourcesFit()]
    incoming = [
        pod(cpu="300m", memory="300Mi"),
        pod(cpu="300m"),
        pod(memory="700Mi"),
        pod(),
        pod(cpu="1", tolerations=[{"key": "dedicated", "value": "a"}]),
    ]
    for plugin in plugins:
        for p in incoming:
            state = CycleState()
            expected = [n for n in nodes if plugin.filter(state, p, n) is None]
            assert plugin.filter_nodes(state, p, nodes) == expected, (plugin.name, p.requests)


def test_memoised_scores_follow_node_changes() -> None:
    n = node("n", cpu="4", memory="8Gi")
    incoming = pod(cpu="1", memory="2Gi")
    fit, balanced = NodeResourcesFit(), BalancedAllocation()
    for _ in range(2):  # the second round comes from the memo
        assert run_score(fit, incoming, [n]) == [75]
        assert run_score(balanced, incoming, [n]) == [100]
    n.add_pod(pod("busy", cpu="2", memory="1Gi"))
    # cpu (4-3)/4 -> 25, memory (8-3)/8 -> 62; fractions 0.75 and 0.375 -> 81.
    assert run_score(fit, incoming, [n]) == [43]
    assert run_score(balanced, incoming, [n]) == [81]
