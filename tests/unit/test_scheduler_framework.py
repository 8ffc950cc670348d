"""The scheduling cycle: how many nodes are searched, where the search
starts, how scores combine, and the message an unschedulable pod gets."""

from __future__ import annotations

import pytest

from orchestrator.scheduler.algorithm import Algorithm, FitError, num_feasible_nodes_to_find
from orchestrator.scheduler.cache import SchedulerCache
from orchestrator.scheduler.framework import (
    CycleState,
    Profile,
    Status,
    WeightedScore,
    min_max_normalize,
    normalize,
)
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo, pod_info
from orchestrator.scheduler.profiles import BIN_PACKING, DEFAULT_SCHEDULER, default_profiles
from orchestrator.scheduler.testing import make_node, make_pod

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("nodes", "percentage", "expected"),
    [
        (50, 0, 50),  # small clusters: all
        (99, 10, 99),
        (100, 0, 100),  # 49% of 100 would be 49: the floor is 100
        (1000, 0, 420),  # 50 - 8 = 42%
        (5000, 0, 500),  # 50 - 40 = 10%
        (6000, 0, 300),  # 50 - 48 = 2% -> at least 5%
        (100_000, 0, 5000),
        (5000, 30, 1500),
        (5000, 100, 5000),
        (300, 1, 100),
    ],
)
def test_num_feasible_nodes_to_find(nodes: int, percentage: int, expected: int) -> None:
    assert num_feasible_nodes_to_find(percentage, nodes) == expected


def cluster(n: int, **kwargs: object) -> SchedulerCache:
    cache = SchedulerCache()
    for i in range(n):
        cache.add_or_update_node(make_node(f"n{i:04d}", **kwargs))  # type: ignore[arg-type]
    return cache


def profile(name: str = DEFAULT_SCHEDULER) -> Profile:
    return {p.scheduler_name: p for p in default_profiles()}[name]


def test_search_stops_early_and_rotates_the_start() -> None:
    cache = cluster(1000)
    alg = Algorithm(0, seed=1)
    p = pod_info(make_pod("p", cpu="10m"))
    result = alg.schedule(profile(), p, cache.snapshot())
    assert result.evaluated == 420 and result.feasible == 420
    assert alg.next_start == 420
    alg.schedule(profile(), p, cache.snapshot())
    assert alg.next_start == 840
    alg.schedule(profile(), p, cache.snapshot())
    assert alg.next_start == (840 + 420) % 1000  # wrapped around


def test_search_goes_on_past_infeasible_nodes() -> None:
    cache = SchedulerCache()
    for i in range(200):
        cache.add_or_update_node(make_node(f"n{i:04d}", cpu="1" if i % 2 else "100m"))
    alg = Algorithm(0)
    result = alg.schedule(profile(), pod_info(make_pod("p", cpu="500m")), cache.snapshot())
    # 100 feasible wanted (49% of 200 is under the floor); half the nodes are too small.
    assert result.feasible == 100 and result.evaluated == 200


def test_unschedulable_message_counts_reasons_like_kubernetes() -> None:
    cache = SchedulerCache()
    for i in range(3):
        cache.add_or_update_node(make_node(f"small{i}", cpu="1"))
    for i in range(2):
        cache.add_or_update_node(
            make_node(f"db{i}", cpu="8", taints=[("dedicated", "db", "NoSchedule")])
        )
    with pytest.raises(FitError) as err:
        Algorithm().schedule(profile(), pod_info(make_pod("p", cpu="2")), cache.snapshot())
    # Sorted as strings, as Kubernetes sorts "<count> <reason>".
    assert str(err.value) == (
        "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: db}, "
        "3 Insufficient cpu."
    )


def test_one_node_may_count_for_several_reasons() -> None:
    cache = cluster(2, cpu="1", memory="1Gi")
    with pytest.raises(FitError) as err:
        Algorithm().schedule(
            profile(), pod_info(make_pod("p", cpu="2", memory="2Gi")), cache.snapshot()
        )
    assert str(err.value) == "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."


def test_no_nodes_and_pod_errors() -> None:
    with pytest.raises(FitError, match=r"^no nodes available to schedule pods$"):
        Algorithm().schedule(profile(), pod_info(make_pod("p")), SchedulerCache().snapshot())
    with pytest.raises(FitError, match=r"^0/3 nodes are available: pod default/p has an invalid"):
        Algorithm().schedule(profile(), pod_info(make_pod("p", cpu="x")), cluster(3).snapshot())


def test_default_profile_spreads_and_bin_packing_packs() -> None:
    for name, expect_same in ((DEFAULT_SCHEDULER, False), (BIN_PACKING, True)):
        cache = cluster(3)
        alg = Algorithm(seed=3)
        chosen = []
        for i in range(3):
            info = pod_info(make_pod(f"p{i}", cpu="500m", memory="512Mi", scheduler_name=name))
            node = alg.schedule(profile(name), info, cache.snapshot()).node
            cache.assume(info, node)
            chosen.append(node)
        assert (len(set(chosen)) == 1) == expect_same, (name, chosen)


class Fixed:
    """A score plugin with given scores, to see how weights combine."""

    def __init__(self, name: str, scores: list[int] | None) -> None:
        self.name = name
        self.scores = scores

    def score(
        self, state: CycleState, pod: PodInfo, nodes: object, snapshot: object
    ) -> list[int] | None:
        return self.scores


class RejectOdd:
    name = "RejectOdd"

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        return Status.unschedulable("odd") if int(node.name[1:]) % 2 else None


def test_weights_multiply_and_none_abstains() -> None:
    prof = Profile(
        "test",
        filters=[RejectOdd()],
        scores=[
            WeightedScore(Fixed("A", [100, 0, 50]), 1),
            WeightedScore(Fixed("B", [0, 100, 60]), 2),
            WeightedScore(Fixed("C", None), 100),
        ],
    )
    cache = SchedulerCache()
    for i in range(6):
        cache.add_or_update_node(make_node(f"n{i}"))
    result = Algorithm().schedule(prof, pod_info(make_pod("p")), cache.snapshot())
    # n0, n2, n4 pass; totals 100, 200, 170.
    assert result.node == "n2"


def test_normalizers() -> None:
    assert normalize([0, 5, 10]) == [0, 50, 100]
    assert normalize([0, 5, 10], reverse=True) == [100, 50, 0]
    assert normalize([0, 0]) == [0, 0] and normalize([0, 0], reverse=True) == [100, 100]
    assert min_max_normalize([-10.0, 0.0, 10.0]) == [0, 50, 100]
    assert min_max_normalize([3.0, 3.0]) == [0, 0]


def test_ties_are_broken_at_random() -> None:
    cache = cluster(4)
    alg = Algorithm(seed=11)
    picks = {
        alg.schedule(profile(), pod_info(make_pod(f"p{i}")), cache.snapshot()).node
        for i in range(40)
    }
    assert len(picks) > 1


class CountingLocal:
    """A node-local score (free cpu in whole cores) that counts its calls."""

    name = "CountingLocal"

    def __init__(self) -> None:
        self.calls = 0

    def local_key(self, pod: PodInfo) -> int:
        return pod.requests.cpu

    def score_node(self, pod: PodInfo, node: NodeInfo) -> int:
        self.calls += 1
        return min(100, (node.free_cpu - pod.requests.cpu) // 1000)

    def score(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo], snapshot: object
    ) -> list[int]:
        return [self.score_node(pod, n) for n in nodes]


def test_node_local_scores_are_summed_once_per_node_until_it_changes() -> None:
    local = CountingLocal()
    prof = Profile(
        "test",
        scores=[WeightedScore(local, 3), WeightedScore(Fixed("F", [0, 0, 1]), 1)],
    )
    cache = cluster(3, cpu="8")
    alg = Algorithm(seed=1)
    pod = pod_info(make_pod("p0", cpu="1"))
    state = CycleState()
    nodes = list(cache.snapshot().nodes)
    # 3 * 7 free cores after the pod, plus the non-local score.
    assert alg.score(prof, state, pod, nodes, cache.snapshot()) == [21, 21, 22]
    assert local.calls == 3
    # A pod of the same key reuses every node's sum; another key does not.
    assert alg.score(prof, state, pod_info(make_pod("p1", cpu="1")), nodes, cache.snapshot()) == [
        21,
        21,
        22,
    ]
    assert local.calls == 3
    alg.score(prof, state, pod_info(make_pod("p2", cpu="2")), nodes, cache.snapshot())
    assert local.calls == 6
    # A node that takes a pod is scored afresh, the others are not.
    cache.assume(pod, "n0000")
    nodes = list(cache.snapshot().nodes)
    assert alg.score(prof, state, pod, nodes, cache.snapshot()) == [18, 21, 22]
    assert local.calls == 7


def test_memoized_scores_match_the_plugins_own() -> None:
    # Built-in node-local plugins: the fast path must give what score() gives.
    cache = cluster(20, cpu="4", memory="8Gi")
    alg = Algorithm(seed=5)
    prof = profile()
    for i in range(40):
        info = pod_info(make_pod(f"p{i}", cpu=f"{100 + 50 * (i % 3)}m", memory="256Mi"))
        nodes = list(cache.snapshot().nodes)
        want = [0] * len(nodes)
        for ws in prof.scores:
            got = ws.plugin.score(CycleState(), info, nodes, cache.snapshot())
            if got is not None and hasattr(ws.plugin, "score_node"):
                want = [w + s * ws.weight for w, s in zip(want, got, strict=True)]
        local_only = Profile(
            "local", scores=[ws for ws in prof.scores if hasattr(ws.plugin, "score_node")]
        )
        assert alg.score(local_only, CycleState(), info, nodes, cache.snapshot()) == want
        cache.assume(info, alg.schedule(prof, info, cache.snapshot()).node)


def test_two_algorithms_on_one_cache_keep_their_memos_apart() -> None:
    cache = cluster(2, cpu="8")
    pod = pod_info(make_pod("p", cpu="1"))
    nodes = list(cache.snapshot().nodes)
    once = Profile("once", scores=[WeightedScore(CountingLocal(), 1)])
    twice = Profile("twice", scores=[WeightedScore(CountingLocal(), 2)])
    assert Algorithm().score(once, CycleState(), pod, nodes, cache.snapshot()) == [7, 7]
    assert Algorithm().score(twice, CycleState(), pod, nodes, cache.snapshot()) == [14, 14]
