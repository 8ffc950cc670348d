"""A node whose agent dies: the node lifecycle controller marks it Unknown after
the grace period and taints it unreachable:NoExecute, the taint manager evicts
its pods once their tolerationSeconds run out, and the Deployment's pods run
Ready on the other nodes. The evicted pods stay Terminating (the apiserver waits
for the dead node's agent to confirm, as Kubernetes does) until the agent is back.

The test SIGKILLs one agent and restarts it in a finally block
(`deploy.local.cluster.restart_agent`), then waits for the node to be Ready and
untainted, so the other e2e tests sharing the cluster find it whole.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from deploy.local import cluster, procs
from orchestrator.client.client import Client
from tests.e2e.conftest import LocalCluster, wait_for
from tests.e2e.test_workloads import (
    IMAGE,
    converged,
    deployment,
    is_up,
    node_index,
    pods_of,
    summary,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
# The node lifecycle controller's grace period is 50 s after the last heartbeat
# (the agent renews its Lease every ~10 s), checked every 5 s.
UNKNOWN_WITHIN = 90.0
# Then the NoExecute taint, 5 s of toleration, and a replacement on another node.
REPLACED_WITHIN = 40.0
BACK_WITHIN = 90.0
TOLERATION_SECONDS = 5
EVICTED_GONE = "agent restart -> evicted pods removed"


def _ready(node: Any) -> Any:
    return next((c for c in node.status.conditions if c.type == "Ready"), None)


def _taints(node: Any) -> set[tuple[str, str]]:
    return {(t.key, t.effect) for t in node.spec.taints}


async def test_pods_leave_a_node_whose_agent_died(
    local_cluster: LocalCluster, client: Client, namespace: str
) -> None:
    if local_cluster.layout.nodes < 2:
        pytest.skip("needs a second node for the evicted pods to move to")
    name = local_cluster.name
    container = {"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}
    d = deployment("survivor", namespace, 3, [container])
    d.spec.template.spec.termination_grace_period_seconds = 2
    for key in (UNREACHABLE, NOT_READY):
        d.spec.template.spec.tolerations.add(
            key=key, operator="Exists", effect="NoExecute", toleration_seconds=TOLERATION_SECONDS
        )
    await client.create(d)
    pods = await converged(client, namespace, "survivor", 3)
    node_name = pods[0].spec.node_name
    index = node_index(local_cluster, node_name)
    victims = {p.metadata.name for p in pods if p.spec.node_name == node_name}
    timings: dict[str, float] = {}

    agent = cluster.agent_pid(name, index)
    t0 = time.monotonic()
    try:
        # SIGKILL, as a crash would (and reap it, should it be a child of this process).
        assert procs.kill_pids([agent]) == [agent]

        async def unknown() -> Any:
            n = await client.get("Node", node_name)
            ready = _ready(n)
            return n if ready is not None and ready.status == "Unknown" else None

        node = await wait_for(
            unknown, timeout=UNKNOWN_WITHIN, interval=1, what=f"{node_name} Ready=Unknown"
        )
        timings["kill -> Ready Unknown"] = time.monotonic() - t0
        assert _ready(node).reason == "NodeStatusUnknown", _ready(node)

        async def tainted() -> Any:
            n = await client.get("Node", node_name)
            return n if (UNREACHABLE, "NoExecute") in _taints(n) else None

        node = await wait_for(
            tainted, timeout=30, interval=1, what=f"{UNREACHABLE}:NoExecute on {node_name}"
        )
        timings["kill -> NoExecute taint"] = time.monotonic() - t0
        # The scheduler must not place replacements there either.
        assert (UNREACHABLE, "NoSchedule") in _taints(node), node.spec.taints

        last: list[Any] = []

        async def moved() -> list[Any] | None:
            nonlocal last
            last = await pods_of(client, namespace, "survivor")
            up = [p for p in last if is_up(p)]
            gone = all(p.metadata.deletion_timestamp for p in last if p.metadata.name in victims)
            away = all(p.spec.node_name != node_name for p in up)
            return up if gone and away and len(up) == 3 else None

        try:
            replacements = await wait_for(
                moved, timeout=REPLACED_WITHIN, what="3 pods up on the other nodes"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\npods: {summary(last)}") from None
        timings["kill -> replacements Ready"] = time.monotonic() - t0
        # The evicted pods wait, Terminating, for their node's agent.
        stuck = [p for p in last if p.metadata.name in victims]
        assert len(stuck) == len(victims), summary(last)
        assert all(p.metadata.deletion_timestamp for p in stuck), summary(stuck)
        for p in stuck:
            cond = next((c for c in p.status.conditions if c.type == "DisruptionTarget"), None)
            assert cond is not None and cond.status == "True", p.status.conditions

        # The Deployment's status follows its pods a moment later.
        async def counted() -> Any:
            d = await client.get("Deployment", "survivor", namespace)
            return d if d.status.ready_replicas == 3 else None

        await wait_for(counted, timeout=15, what="Deployment survivor counting 3 ready replicas")
    finally:
        t1 = time.monotonic()
        await asyncio.to_thread(
            cluster.restart_agent, name, index, config_path=local_cluster.config_path
        )

        async def healthy() -> Any:
            n = await client.get("Node", node_name)
            ready = _ready(n)
            clean = not {k for k, _ in _taints(n)} & {UNREACHABLE, NOT_READY}
            return n if ready is not None and ready.status == "True" and clean else None

        await wait_for(
            healthy, timeout=BACK_WITHIN, interval=1, what=f"{node_name} Ready and untainted"
        )
        timings["agent restart -> node Ready, untainted"] = time.monotonic() - t1
        print("node failure timings:", {k: round(v, 1) for k, v in timings.items()})

    # Back, the agent confirms the evicted pods are stopped and they go away; the
    # Deployment keeps its 3 pods on the other nodes.
    async def released() -> bool:
        names = {p.metadata.name for p in await pods_of(client, namespace, "survivor")}
        return not names & victims

    await wait_for(released, timeout=60, what=f"the evicted pods {sorted(victims)} removed")
    timings[EVICTED_GONE] = time.monotonic() - t1
    after = await converged(client, namespace, "survivor", 3, timeout=30)
    assert {p.metadata.name for p in after} == {p.metadata.name for p in replacements}
    print(f"agent restart -> evicted pods removed: {timings[EVICTED_GONE]:.1f}s")
