"""The node lifecycle controller against a real control plane, with the real
agent heartbeat (NodeReporter) standing in for nodes: a node whose agent
stops goes Unknown and is tainted within the grace period, its pods are
marked not ready and evicted after their tolerationSeconds, and it is
untainted when the agent returns. The pod GC deletes pods of deleted nodes.

The controllers run in the test process with short periods; the control
plane runs without its own node lifecycle controller and pod GC."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.node import NodeFacts, NodeReporter
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import Client, NotFoundError
from orchestrator.controllers.node_lifecycle import NodeLifecycleController
from orchestrator.controllers.node_lifecycle_podgc import OrphanedPodCollector
from orchestrator.controllers.node_lifecycle_taints import UNREACHABLE
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

GRACE = 3.0
FACTS = NodeFacts(
    cpus=2,
    memory_bytes=4 * 1024**3,
    ephemeral_bytes=50 * 1024**3,
    kernel="6.1.0",
    os_image="Debian GNU/Linux 12",
    architecture="amd64",
)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    # Only a harmless controller in the server: ours run here, with short periods.
    cp = ControlPlane(
        tmp_path_factory.mktemp("node-lifecycle"), serve_args=("--controllers", "csrsigning")
    )
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[Client]:
    async with plane.client() as c:
        yield c


async def _version() -> str:
    return "docker://test"


async def _images() -> list[tuple[list[str], int]]:
    return []


class Agent:
    """A node's heartbeat, as the real agent keeps it; stop() is the node dying."""

    def __init__(self, client: Client, name: str) -> None:
        self.reporter = NodeReporter(
            client,
            name,
            "192.0.2.50",
            FACTS,
            runtime_version=_version,
            images=_images,
            heartbeat_interval=0.5,
            status_interval=0.5,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reporter.register()
        self.task = asyncio.create_task(self.reporter.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


async def make_namespace(client: Client) -> str:
    ns = core.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = f"nlc-{secrets.token_hex(3)}"
    await client.create(ns)
    return ns.metadata.name


async def make_pod(client: Client, ns: str, name: str, node: str, seconds: int | None) -> Any:
    pod = core.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = ns
    pod.spec.node_name = node
    pod.spec.containers.add(name="app", image="busybox")
    for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"):
        t = pod.spec.tolerations.add(key=key, operator="Exists", effect="NoExecute")
        if seconds is not None:
            t.toleration_seconds = seconds
    created = await client.create(pod)
    created.status.phase = "Running"
    created.status.conditions.add(type="Ready", status="True")
    return await client.update_status(created)


def taints(node: Any) -> set[tuple[str, str]]:
    return {(t.key, t.effect) for t in node.spec.taints}


def ready(node: Any) -> str:
    return next((c.status for c in node.status.conditions if c.type == "Ready"), "")


async def test_dead_node_is_tainted_its_pods_evicted_and_a_returning_node_untainted(
    client: Client,
) -> None:
    ns = await make_namespace(client)
    dying, healthy = f"dying-{secrets.token_hex(3)}", f"healthy-{secrets.token_hex(3)}"
    agents = {name: Agent(client, name) for name in (dying, healthy)}
    for agent in agents.values():
        await agent.start()
    await make_pod(client, ns, "quick", dying, seconds=3)
    await make_pod(client, ns, "forever", dying, seconds=None)
    controller = NodeLifecycleController(
        client, grace_period=GRACE, startup_grace_period=GRACE, monitor_period=0.3, eviction_rate=5
    )
    await controller.start()
    try:
        await asyncio.sleep(1.0)
        node = await client.get("Node", dying)
        assert ready(node) == "True" and not taints(node)

        await agents[dying].stop()
        stopped = time.monotonic()

        async def unknown_and_tainted() -> Any:
            n = await client.get("Node", dying)
            if ready(n) == "Unknown" and (UNREACHABLE, "NoExecute") in taints(n):
                return n
            return None

        node = await eventually(unknown_and_tainted, GRACE + 5, "Ready=Unknown and taints")
        assert time.monotonic() - stopped >= GRACE - 1.0  # not before the grace period
        cond = next(c for c in node.status.conditions if c.type == "Ready")
        assert cond.reason == "NodeStatusUnknown"
        assert cond.message == "Kubelet stopped posting node status."
        assert taints(node) == {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}
        assert not taints(await client.get("Node", healthy))
        # Tainted just now (timeAdded has whole seconds), tolerated for 3 s: still there.
        assert not (await client.get("Pod", "quick", ns)).metadata.deletion_timestamp

        async def pods_not_ready() -> bool:
            pods = (await client.list("Pod", ns)).items
            return all(
                any(c.type == "Ready" and c.status == "False" for c in p.status.conditions)
                for p in pods
            )

        await eventually(pods_not_ready, 5, "pods of the dead node marked not ready")

        async def quick_evicted() -> bool:
            return bool((await client.get("Pod", "quick", ns)).metadata.deletion_timestamp)

        await eventually(quick_evicted, 10, "eviction after tolerationSeconds")
        quick = await client.get("Pod", "quick", ns)
        assert any(
            c.type == "DisruptionTarget" and c.reason == "DeletionByTaintManager"
            for c in quick.status.conditions
        )
        forever = await client.get("Pod", "forever", ns)
        assert not forever.metadata.deletion_timestamp  # tolerates without seconds: stays

        events = (await client.list("Event", ns)).items
        assert any(
            e.reason == "TaintManagerEviction" and e.involved_object.name == "quick" for e in events
        )

        # The agent comes back: its own status wins and the taints go.
        await agents[dying].start()

        async def untainted() -> bool:
            n = await client.get("Node", dying)
            return ready(n) == "True" and not taints(n)

        await eventually(untainted, 5, "taints removed after the node returned")
    finally:
        await controller.stop()
        for agent in agents.values():
            await agent.stop()
        for name in (dying, healthy):
            with contextlib.suppress(NotFoundError):
                await client.delete("Node", name)


async def test_pods_of_a_deleted_node_are_force_deleted(client: Client, tmp_path: Path) -> None:
    ns = await make_namespace(client)
    name = f"gone-{secrets.token_hex(3)}"
    node = core.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    await client.create(node)
    await make_pod(client, ns, "orphan", name, seconds=None)
    collector = OrphanedPodCollector(client, quarantine=0.5)
    await collector.start()
    try:
        await asyncio.sleep(1.0)
        assert await client.get("Pod", "orphan", ns)  # its node exists: left alone
        await client.delete("Node", name)

        async def gone() -> bool:
            try:
                await client.get("Pod", "orphan", ns)
            except NotFoundError:
                return True
            return False

        await eventually(gone, 10, "orphaned pod deleted")
    finally:
        await collector.stop()
