"""The scheduling queue: order, backoff, unschedulable pods and cluster events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.scheduler.podinfo import PodInfo, pod_info
from orchestrator.scheduler.queue import SchedulingQueue
from orchestrator.scheduler.testing import make_pod

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pod(name: str, **kwargs: Any) -> PodInfo:
    return pod_info(make_pod(name, **kwargs))


async def pop_name(q: SchedulingQueue) -> str:
    qp = await asyncio.wait_for(q.pop(), 1)
    assert qp is not None
    return qp.key.split("/")[1]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(clock: Clock) -> SchedulingQueue:
    return SchedulingQueue(clock=clock)


async def test_priority_then_creation_order(queue: SchedulingQueue) -> None:
    queue.add(pod("late-low", priority=0, created="2024-01-01T00:00:05Z"))
    queue.add(pod("early-low", priority=0, created="2024-01-01T00:00:01Z"))
    queue.add(pod("high", priority=100, created="2024-01-01T00:00:09Z"))
    assert [await pop_name(queue) for _ in range(3)] == ["high", "early-low", "late-low"]


async def test_adding_twice_queues_once(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    queue.add(pod("a"))
    assert len(queue) == 1
    await pop_name(queue)
    assert queue.counts()["active"] == 0


async def test_priority_change_reorders(queue: SchedulingQueue) -> None:
    queue.add(pod("a", priority=1))
    queue.add(pod("b", priority=2))
    queue.update(pod("a", priority=3))
    assert [await pop_name(queue) for _ in range(2)] == ["a", "b"]
    assert queue.counts()["active"] == 0  # the stale entry is not popped again


async def test_unschedulable_waits_for_a_cluster_event(
    queue: SchedulingQueue, clock: Clock
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    assert qp is not None
    queue.add_unschedulable(qp)
    assert queue.where("default/a") == "unschedulable"
    clock.now += 5  # backoff (1 s after the first attempt) is over
    assert queue.move_all_to_active("NodeAdd") == 1
    assert await pop_name(queue) == "a"


async def test_cluster_event_during_backoff_goes_through_backoff(
    queue: SchedulingQueue, clock: Clock
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    assert qp is not None
    queue.add_unschedulable(qp)
    queue.move_all_to_active("NodeAdd")
    assert queue.where("default/a") == "backoff"
    assert queue.flush_backoff() == 0
    clock.now += 1.0
    assert queue.flush_backoff() == 1
    assert queue.where("default/a") == "active"


async def test_backoff_doubles_up_to_ten_seconds(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a"))
    delays = []
    for _ in range(6):
        qp = await queue.pop()
        assert qp is not None
        queue.add_backoff(qp)
        delays.append(queue.backoff_expiry(qp) - clock.now)
        clock.now += 60
        queue.flush_backoff()
    assert delays == [1, 2, 4, 8, 10, 10]


async def test_event_while_in_flight_sends_failure_to_backoff(
    queue: SchedulingQueue, clock: Clock
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    assert qp is not None
    queue.move_all_to_active("NodeAdd")  # a node appeared while we were filtering
    queue.add_unschedulable(qp)
    assert queue.where("default/a") == "backoff"


async def test_update_while_in_flight_is_kept(queue: SchedulingQueue, clock: Clock) -> None:
    queue.add(pod("a", cpu="8"))
    qp = await queue.pop()
    assert qp is not None
    queue.update(pod("a", cpu="1"))
    queue.add_unschedulable(qp)
    # The newer spec may fit: it is retried (after backoff), with the new spec.
    assert queue.where("default/a") == "backoff"
    clock.now += 1
    queue.flush_backoff()
    again = await queue.pop()
    assert again is not None and again.info.requests.cpu == 1000


async def test_delete_while_in_flight_drops_the_pod(queue: SchedulingQueue) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    assert qp is not None
    queue.delete("default/a")
    queue.add_unschedulable(qp)
    assert queue.where("default/a") is None and len(queue) == 0


async def test_spec_update_retries_an_unschedulable_pod(
    queue: SchedulingQueue, clock: Clock
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    assert qp is not None
    queue.add_unschedulable(qp)
    clock.now += 2
    queue.update(pod("a", tolerations=[{"operator": "Exists"}]))
    assert queue.where("default/a") == "active"


async def test_leftover_unschedulable_pods_flush_after_a_minute(
    queue: SchedulingQueue, clock: Clock
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    assert qp is not None
    queue.add_unschedulable(qp)
    clock.now += 59
    assert queue.flush_unschedulable() == 0
    clock.now += 1
    assert queue.flush_unschedulable() == 1
    assert queue.where("default/a") == "active"


async def test_refresh_keeps_newest_object_without_retrying(
    queue: SchedulingQueue,
) -> None:
    queue.add(pod("a"))
    qp = await queue.pop()
    assert qp is not None
    queue.add_unschedulable(qp)
    newer = make_pod("a")
    newer.metadata.resource_version = "42"
    queue.refresh_object("default/a", newer)
    assert queue.where("default/a") == "unschedulable"
    assert qp.info.pod.metadata.resource_version == "42"


async def test_pop_waits_and_close_releases(queue: SchedulingQueue) -> None:
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add(pod("a"))
    qp = await asyncio.wait_for(waiter, 1)
    assert qp is not None and qp.key == "default/a" and qp.attempts == 1
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0)
    queue.close()
    assert await asyncio.wait_for(waiter, 1) is None
