"""The scheduler cache: node accounting, assumed pods, confirmation, expiry."""

from __future__ import annotations

import pytest

from orchestrator.scheduler.cache import SchedulerCache
from orchestrator.scheduler.podinfo import pod_info
from orchestrator.scheduler.testing import make_node, make_pod

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bound(name: str, node: str, **kwargs: object) -> object:
    return make_pod(name, node_name=node, **kwargs)  # type: ignore[arg-type]


def test_assumed_pod_counts_immediately_and_forget_undoes_it() -> None:
    cache = SchedulerCache()
    cache.add_or_update_node(make_node("n1"))
    info = pod_info(make_pod("p", cpu="500m", memory="1Gi", host_ports=[80]))
    cache.assume(info, "n1")
    n1 = cache.node("n1")
    assert n1 is not None
    assert (n1.requested_cpu, n1.requested_memory, len(n1.pods)) == (500, 1024**3, 1)
    assert n1.used_ports == {("0.0.0.0", "TCP", 80): 1}
    assert cache.is_assumed("default/p")
    cache.forget("default/p")
    assert (n1.requested_cpu, n1.requested_memory, len(n1.pods)) == (0, 0, 0)
    assert not n1.used_ports and not cache.has_pod("default/p")


def test_informer_confirms_the_assumption() -> None:
    cache = SchedulerCache()
    cache.add_or_update_node(make_node("n1"))
    cache.assume(pod_info(make_pod("p", cpu="1")), "n1")
    assert cache.confirm("default/p", bound("p", "n1", cpu="1"))
    assert not cache.is_assumed("default/p")
    n1 = cache.node("n1")
    assert n1 is not None and n1.requested_cpu == 1000
    cache.forget("default/p")  # no longer assumed: forget does nothing
    assert n1.requested_cpu == 1000


def test_pod_bound_elsewhere_moves_to_where_it_is() -> None:
    cache = SchedulerCache()
    cache.add_or_update_node(make_node("n1"))
    cache.add_or_update_node(make_node("n2"))
    cache.assume(pod_info(make_pod("p", cpu="1")), "n1")
    assert not cache.confirm("default/p", bound("p", "n2", cpu="1"))
    cache.add_or_update_pod(pod_info(bound("p", "n2", cpu="1")))
    n1, n2 = cache.node("n1"), cache.node("n2")
    assert n1 is not None and n2 is not None
    assert (n1.requested_cpu, n2.requested_cpu) == (0, 1000)


def test_assumption_expires_when_the_binding_never_shows_up() -> None:
    clock = Clock()
    cache = SchedulerCache(clock=clock, assumed_ttl=30)
    cache.add_or_update_node(make_node("n1"))
    cache.assume(pod_info(make_pod("p", cpu="1")), "n1")
    clock.now = 100
    assert cache.cleanup_expired() == []  # binding not finished: never expires
    cache.finish_binding("default/p")
    clock.now = 129
    assert cache.cleanup_expired() == []
    clock.now = 131
    assert cache.cleanup_expired() == ["default/p"]
    n1 = cache.node("n1")
    assert n1 is not None and n1.requested_cpu == 0


def test_pods_on_unknown_nodes_wait_in_a_placeholder() -> None:
    cache = SchedulerCache()
    cache.add_or_update_pod(pod_info(bound("early", "later", cpu="2")))
    assert cache.nodes() == []  # a placeholder is not schedulable
    cache.add_or_update_node(make_node("later"))
    (later,) = cache.nodes()
    assert later.requested_cpu == 2000
    cache.remove_node("later")
    assert cache.nodes() == [] and cache.node("later") is not None  # the pod still holds it
    cache.remove_pod("default/early")
    assert cache.node("later") is None


def test_images_are_counted_per_node() -> None:
    cache = SchedulerCache()
    cache.add_or_update_node(make_node("a", images=[(["app:1"], 10)]))
    cache.add_or_update_node(make_node("b", images=[(["app:1", "app:latest"], 10)]))
    assert cache.snapshot().image_nodes == {"app:1": 2, "app:latest": 1}
    cache.add_or_update_node(make_node("b"))
    assert cache.snapshot().image_nodes == {"app:1": 1}
    cache.remove_node("a")
    assert cache.snapshot().image_nodes == {}


def test_affinity_totals_follow_pods() -> None:
    cache = SchedulerCache()
    cache.add_or_update_node(make_node("n"))
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"a": "b"}}, "topologyKey": "x"}
            ]
        }
    }
    cache.add_or_update_pod(pod_info(bound("p", "n", affinity=anti)))
    snap = cache.snapshot()
    assert (snap.affinity_pods, snap.required_anti_affinity_pods) == (1, 1)
    cache.remove_pod("default/p")
    snap = cache.snapshot()
    assert (snap.affinity_pods, snap.required_anti_affinity_pods) == (0, 0)


def test_assuming_twice_is_a_bug() -> None:
    cache = SchedulerCache()
    cache.add_or_update_node(make_node("n"))
    info = pod_info(make_pod("p"))
    cache.assume(info, "n")
    with pytest.raises(ValueError, match="already in the scheduler cache"):
        cache.assume(info, "n")


def test_node_counts_follow_node_updates() -> None:
    cache = SchedulerCache()
    cache.add_or_update_node(make_node("a", taints=[("k", "", "NoSchedule")]))
    cache.add_or_update_node(make_node("b", unschedulable=True))
    cache.add_or_update_node(make_node("c", taints=[("k", "", "PreferNoSchedule")]))
    snap = cache.snapshot()
    counts = (snap.hard_tainted_nodes, snap.unschedulable_nodes, snap.prefer_tainted_nodes)
    assert counts == (1, 1, 1)
    cache.add_or_update_node(make_node("a"))
    cache.add_or_update_node(make_node("b", ready="False"))  # not ready: tainted, not cordoned
    cache.remove_node("c")
    snap = cache.snapshot()
    counts = (snap.hard_tainted_nodes, snap.unschedulable_nodes, snap.prefer_tainted_nodes)
    assert counts == (1, 0, 0)
