"""The Scheduler runner's reactions to watch events and its cycles, with a
fake client standing in for the apiserver (no informers started)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.scheduler.scheduler import Scheduler
from orchestrator.scheduler.testing import make_node, make_pod

pytestmark = pytest.mark.unit


class FakeClient:
    """Accepts every write and remembers it; the apiserver's resourceVersion
    checks are not what these tests are about."""

    def __init__(self) -> None:
        self.binds: list[tuple[str, str, str]] = []
        self.status_updates: list[Any] = []
        self.created: list[Any] = []

    def _stored(self, obj: Any) -> Any:
        out = type(obj)()
        out.CopyFrom(obj)
        out.metadata.resource_version = str(int(obj.metadata.resource_version or "0") + 1)
        return out

    async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> Any:
        self.binds.append((namespace, name, node))
        return make_pod(name, namespace, node_name=node)

    async def update_status(self, obj: Any) -> Any:
        self.status_updates.append(obj)
        return self._stored(obj)

    async def create(self, obj: Any) -> Any:
        self.created.append(obj)
        return obj


async def settle(scheduler: Scheduler) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    if scheduler._pending:
        await asyncio.wait(scheduler._pending, timeout=1)


async def cycle(scheduler: Scheduler) -> bool:
    qp = await asyncio.wait_for(scheduler.queue.pop(), 1)
    assert qp is not None
    placed = scheduler.schedule_one(qp)
    await settle(scheduler)
    return placed


async def test_pods_of_other_schedulers_and_bound_pods_are_not_queued() -> None:
    s = Scheduler(FakeClient())
    s._on_pod("ADDED", make_pod("mine"), None)
    s._on_pod("ADDED", make_pod("theirs", scheduler_name="someone-else"), None)
    s._on_pod("ADDED", make_pod("placed", node_name="n1", cpu="1"), None)
    assert s.queue.where("default/mine") == "active"
    assert s.queue.where("default/theirs") is None
    assert s.queue.where("default/placed") is None
    assert s.cache.has_pod("default/placed")


async def test_a_cycle_binds_and_records_the_event() -> None:
    client = FakeClient()
    s = Scheduler(client, seed=1)
    s._on_node("ADDED", make_node("n1"), None)
    s._on_pod("ADDED", make_pod("web", cpu="1"), None)
    assert await cycle(s)
    assert client.binds == [("default", "web", "n1")]
    assert s.stats.scheduled == 1
    assert s.cache.is_assumed("default/web")
    # The informer shows the binding: the assumption is confirmed.
    s._on_pod("MODIFIED", make_pod("web", cpu="1", node_name="n1"), make_pod("web", cpu="1"))
    assert s.cache.has_pod("default/web") and not s.cache.is_assumed("default/web")
    event = s.recorder._queue.get_nowait()
    assert event[1:4] == ("Normal", "Scheduled", "Successfully assigned default/web to n1")


async def test_unschedulable_pod_is_explained_and_retried_when_a_node_appears() -> None:
    client = FakeClient()
    s = Scheduler(client)
    s._on_node("ADDED", make_node("small", cpu="1"), None)
    pod = make_pod("big", cpu="2")
    s._on_pod("ADDED", pod, None)
    assert not await cycle(s)
    assert s.queue.where("default/big") == "unschedulable"
    (written,) = client.status_updates
    (cond,) = written.status.conditions
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    assert cond.message == "0/1 nodes are available: 1 Insufficient cpu."
    assert s.recorder._queue.get_nowait()[1:4] == ("Warning", "FailedScheduling", cond.message)

    # Our own status write comes back through the watch: not a reason to retry.
    s._on_pod("MODIFIED", written, pod)
    assert s.queue.where("default/big") == "unschedulable"

    # A node heartbeat changes nothing; a new node does.
    beat = make_node("small", cpu="1")
    beat.status.conditions[0].last_heartbeat_time = "2024-01-01T00:00:00Z"
    s._on_node("MODIFIED", beat, make_node("small", cpu="1"))
    assert s.queue.where("default/big") == "unschedulable"
    s._on_node("ADDED", make_node("large", cpu="4"), None)
    assert s.queue.where("default/big") in ("active", "backoff")


async def test_deleted_bound_pod_frees_room_for_waiting_pods() -> None:
    s = Scheduler(FakeClient())
    s._on_node("ADDED", make_node("n1", cpu="1"), None)
    running = make_pod("running", cpu="1", node_name="n1")
    s._on_pod("ADDED", running, None)
    s._on_pod("ADDED", make_pod("waiting", cpu="1"), None)
    assert not await cycle(s)
    s._on_pod("DELETED", running, running)
    assert not s.cache.has_pod("default/running")
    assert s.queue.where("default/waiting") in ("active", "backoff")


async def test_finished_pods_hold_no_resources() -> None:
    s = Scheduler(FakeClient())
    s._on_node("ADDED", make_node("n1", cpu="1"), None)
    done = make_pod("job", cpu="1", node_name="n1")
    s._on_pod("ADDED", done, None)
    finished = make_pod("job", cpu="1", node_name="n1")
    finished.status.phase = "Succeeded"
    s._on_pod("MODIFIED", finished, done)
    n1 = s.cache.node("n1")
    assert n1 is not None and n1.requested_cpu == 0


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="percentage_of_nodes_to_score"):
        Scheduler(FakeClient(), percentage_of_nodes_to_score=101)
