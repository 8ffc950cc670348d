"""A node that loses its dockerd: the outage shows on the Node (Ready=False with
the reason) and on the pod (not Ready, with the reason, and a FailedSync event),
the agent keeps running, and when dockerd comes back the node is Ready and the same
pod runs again.

The test kills one node's dockerd with SIGKILL (a crash: its containerd dies with
it, the container shims stay) and brings it back with
`deploy.local.cluster.start_node_runtime` in a finally block, so the other e2e
tests sharing the cluster find that node whole whatever happens here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from deploy.local import cluster
from orchestrator.client.client import Client
from tests.e2e.conftest import LocalCluster, wait_for
from tests.e2e.test_pods import pod, running, sleeper

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


# The agent reports node status every ~10 s: NotReady is due within one or two
# reports; coming back needs dockerd's start, a report, and the pod's resync.
NOT_READY_WITHIN = 30.0
BACK_WITHIN = 60.0


def _condition(obj: Any, type_: str) -> Any:
    return next((c for c in obj.status.conditions if c.type == type_), None)


async def test_node_losing_dockerd_is_reported_and_recovers(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    index = 2 if local_cluster.layout.nodes >= 2 else 1
    name = local_cluster.name
    node_name = local_cluster.node_name(index)
    docker_host = local_cluster.docker_host(index)

    await client.create(pod("steady", namespace, node_name, [sleeper()]))
    before = await wait_for(lambda: running(client, "steady", namespace), what="steady running")
    uid = before.metadata.uid
    first = before.status.container_statuses[0]
    assert first.ready and first.state.running.started_at
    agent = cluster.agent_pid(name, index)
    timings: dict[str, float] = {}

    killed = cluster.dockerd_pid(name, index)
    t0 = time.monotonic()
    try:
        os.kill(killed, signal.SIGKILL)

        async def node_not_ready() -> Any:
            n = await client.get("Node", node_name)
            ready = _condition(n, "Ready")
            return ready if ready is not None and ready.status == "False" else None

        ready = await wait_for(
            node_not_ready, timeout=NOT_READY_WITHIN, what=f"{node_name} to go NotReady"
        )
        timings["node NotReady"] = time.monotonic() - t0
        assert ready.reason == "ContainerRuntimeUnhealthy", ready
        # The message names what is down and where, so a person knows where to look.
        assert "container runtime is down" in ready.message, ready.message
        assert docker_host in ready.message, ready.message

        # The pod keeps its last known phase and container state; only its readiness
        # drops, with the agent's reason. (A node lifecycle controller may mark it not
        # Ready first, without a reason; the agent's status follows.)
        async def pod_marked() -> Any:
            p = await client.get("Pod", "steady", namespace)
            cond = _condition(p, "Ready")
            down = cond is not None and cond.status == "False"
            return p if down and cond.reason == "ContainerRuntimeDown" else None

        marked = await wait_for(
            pod_marked, timeout=NOT_READY_WITHIN, what="steady not Ready: ContainerRuntimeDown"
        )
        timings["pod not Ready"] = time.monotonic() - t0
        assert marked.metadata.uid == uid
        assert marked.status.phase == "Running"
        assert marked.status.container_statuses[0].state.running.started_at
        assert not marked.status.container_statuses[0].ready
        cond = _condition(marked, "Ready")
        assert "container runtime is unreachable" in cond.message, cond.message

        async def failed_sync_event() -> Any:
            events = (
                await client.list("Event", namespace, field_selector="involvedObject.name=steady")
            ).items
            return [
                e
                for e in events
                if e.type == "Warning"
                and e.reason == "FailedSync"
                and e.involved_object.uid == uid
                and "cannot reach dockerd" in e.message
            ]

        await wait_for(
            failed_sync_event, timeout=NOT_READY_WITHIN, what="a FailedSync event on steady"
        )
        timings["event"] = time.monotonic() - t0

        # The agent reported all of that, and is the same process it was.
        assert cluster.agent_pid(name, index) == agent
    finally:
        t1 = time.monotonic()
        await asyncio.to_thread(cluster.start_node_runtime, name, index)
        timings["dockerd restart"] = time.monotonic() - t1

    async def node_ready() -> Any:
        n = await client.get("Node", node_name)
        ready = _condition(n, "Ready")
        return ready if ready is not None and ready.status == "True" else None

    await wait_for(node_ready, timeout=BACK_WITHIN, what=f"{node_name} Ready again")
    timings["node Ready again"] = time.monotonic() - t1

    async def back() -> Any:
        p = await client.get("Pod", "steady", namespace)
        cond = _condition(p, "Ready")
        st = p.status.container_statuses
        if p.status.phase != "Running" or cond is None or cond.status != "True" or not st:
            return None
        return p if st[0].ready and st[0].state.running.started_at else None

    after = await wait_for(back, timeout=BACK_WITHIN, what="steady Running and Ready again")
    timings["pod Running again"] = time.monotonic() - t1
    assert after.metadata.uid == uid, "the same pod object, not a replacement"
    again = after.status.container_statuses[0]
    # dockerd (no live-restore) stopped the container when it came back; the agent
    # started a new one for the same pod.
    assert again.container_id != first.container_id
    assert again.restart_count >= first.restart_count + 1
    assert cluster.agent_pid(name, index) == agent, "the agent never restarted"
    print("runtime outage timings:", {k: round(v, 1) for k, v in timings.items()})
