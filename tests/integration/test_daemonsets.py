"""DaemonSets against a real control plane.

No scheduler or agents run here. Daemon pods are placed by the controller
(spec.nodeName), so a deleted one waits for its node's agent to confirm it
stopped; the test plays that agent (`kubelet_step`): it confirms deletions
and marks pods Running and Ready. Nodes carry a label of the test's own and
the DaemonSets select it, so other tests' nodes do not count.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator.api.meta import now_rfc3339
from orchestrator.api.pb import coordination_v1_pb2 as coordination
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import (
    AlreadyExistsError,
    Client,
    ConflictError,
    InvalidError,
    NotFoundError,
)
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

TIMEOUT = 45.0  # generous: the shared control plane runs every controller
REVISION = "controller-revision-hash"


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def new_namespace(c: Client, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    ns = core.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = name
    await c.create(ns)
    return name


async def add_node(
    c: Client, name: str, pool: str, *, taint: str = "", cordon: bool = False
) -> None:
    node = core.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    node.metadata.labels["pool"] = pool
    node.spec.unschedulable = cordon
    if taint:
        key, effect = taint.split(":")
        node.spec.taints.add(key=key, value="x", effect=effect)
    await c.create(node)


@contextlib.asynccontextmanager
async def heartbeats(c: Client, nodes: list[str]) -> AsyncIterator[None]:
    """Post Ready=True on each hollow node and renew its Lease every few
    seconds while the test runs, as its agent would. Without them the node
    lifecycle controller marks the nodes' pods not ready, and the DaemonSet
    controller then, rightly, replaces every already-unavailable pod at once."""

    async def renew_all() -> None:
        for name in nodes:
            lease = coordination.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name = name
            lease.metadata.namespace = "kube-node-lease"
            lease.spec.holder_identity = name
            lease.spec.lease_duration_seconds = 40
            lease.spec.renew_time = now_rfc3339()
            try:
                current = await c.get("Lease", name, "kube-node-lease")
            except NotFoundError:
                with contextlib.suppress(AlreadyExistsError):
                    await c.create(lease)
                continue
            current.spec.renew_time = lease.spec.renew_time
            with contextlib.suppress(ConflictError, NotFoundError):
                await c.update(current)

    async def loop() -> None:
        while True:
            await renew_all()
            await asyncio.sleep(5)

    async def post_ready(name: str) -> None:
        for _ in range(20):  # the node lifecycle controller may write it too
            node = await c.get("Node", name)
            del node.status.conditions[:]
            node.status.conditions.add(
                type="Ready",
                status="True",
                reason="KubeletReady",
                last_heartbeat_time=now_rfc3339(),
                last_transition_time=now_rfc3339(),
            )
            try:
                await c.update_status(node)
                return
            except ConflictError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"could not post Ready on node {name}")

    for name in nodes:  # a Ready condition, posted once as an agent does at start
        await post_ready(name)
    await renew_all()
    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for name in nodes:
            with contextlib.suppress(NotFoundError):
                await c.delete("Lease", name, "kube-node-lease")


async def edit(
    c: Client, kind: str, name: str, ns: str | None, change: Callable[[Any], None]
) -> Any:
    for _ in range(20):
        obj = await c.get(kind, name, ns)
        change(obj)
        try:
            return await c.update(obj)
        except ConflictError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"could not update {kind} {name}")


def daemonset(name: str, pool: str, **strategy: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "nodeSelector": {"pool": pool},
                "containers": [{"name": "agent", "image": "busybox:1.36"}],
            },
        },
    }
    if strategy:
        spec["updateStrategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name}, "spec": spec}


async def pods_by_node(c: Client, ns: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for pod in (await c.list("Pod", ns)).items:
        if not pod.metadata.deletion_timestamp:
            found.setdefault(pod.spec.node_name, []).append(pod)
    return found


async def kubelet_step(c: Client, ns: str, nodes: set[str] | None = None) -> None:
    """One pass of the node agents (of `nodes`, or all): confirm deletions,
    run new pods."""
    for pod in (await c.list("Pod", ns)).items:
        if nodes is not None and pod.spec.node_name not in nodes:
            continue
        try:
            if pod.metadata.deletion_timestamp:
                await c.delete("Pod", pod.metadata.name, ns, grace_period=0)
            elif pod.status.phase != "Running" or not _ready(pod):
                # As a live kubelet keeps reporting: nodes without `heartbeats`
                # never post Ready, so the node lifecycle controller marks
                # their pods not ready.
                pod.status.phase = "Running"
                for cond in pod.status.conditions:
                    if cond.type == "Ready":
                        cond.status = "True"
                        break
                else:
                    pod.status.conditions.add(
                        type="Ready", status="True", last_transition_time=now_rfc3339()
                    )
                await c.update_status(pod)
        except (NotFoundError, ConflictError):
            pass


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def on_nodes(c: Client, ns: str, nodes: set[str]) -> dict[str, list[Any]]:
    async def check() -> Any:
        await kubelet_step(c, ns)
        placed = await pods_by_node(c, ns)
        ok = set(placed) == nodes and all(len(p) == 1 for p in placed.values())
        return placed if ok else None

    placed: dict[str, list[Any]] = await wait_for(check, f"one pod on each of {sorted(nodes)}")
    return placed


async def test_pods_follow_nodes_joining_leaving_and_relabelled(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "ds")
        pool = ns
        nodes = [f"{ns}-{i}" for i in range(5)]
        try:
            await add_node(c, nodes[0], pool)
            await add_node(c, nodes[1], pool, cordon=True)  # cordoned: still gets its daemon
            await add_node(c, nodes[2], pool, taint="dedicated:NoSchedule")  # not tolerated
            await c.apply(daemonset("agent", pool), namespace=ns)
            placed = await on_nodes(c, ns, {nodes[0], nodes[1]})

            pod = placed[nodes[0]][0]
            assert pod.spec.node_name == nodes[0]
            terms = (
                pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
            )
            assert list(terms.node_selector_terms[0].match_fields[0].values) == [nodes[0]]
            assert "node.kubernetes.io/unschedulable" in {t.key for t in pod.spec.tolerations}

            # A node joins.
            await add_node(c, nodes[3], pool)
            await on_nodes(c, ns, {nodes[0], nodes[1], nodes[3]})

            # A node stops matching: its pod goes.
            await edit(c, "Node", nodes[0], None, lambda n: n.metadata.labels.pop("pool"))
            await on_nodes(c, ns, {nodes[1], nodes[3]})

            # A node leaves: its pod goes at once (no agent is left to confirm).
            await c.delete("Node", nodes[3])

            async def only_cordoned() -> bool:
                await kubelet_step(c, ns, {nodes[0], nodes[1]})  # node 3's agent is gone
                left = (await c.list("Pod", ns)).items
                return [p.spec.node_name for p in left] == [nodes[1]]

            await wait_for(only_cordoned, "the departed node's pod force-deleted")

            async def status() -> Any:
                st = (await c.get("DaemonSet", "agent", ns)).status
                want = (1, 1, 1, 1, 1, 0)
                got = (
                    st.desired_number_scheduled,
                    st.current_number_scheduled,
                    st.number_ready,
                    st.number_available,
                    st.updated_number_scheduled,
                    st.number_misscheduled,
                )
                return st if got == want else None

            st = await wait_for(status, "status counts for one node")
            assert st.observed_generation >= 1
        finally:
            for name in nodes:
                try:
                    await c.delete("Node", name)
                except NotFoundError:
                    pass


async def test_rolling_update_respects_max_unavailable(control_plane: ControlPlane) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "ds-roll")
        nodes = [f"{ns}-{i}" for i in range(3)]
        try:
            for name in nodes:
                await add_node(c, name, ns)
            async with heartbeats(c, nodes):
                rolling = {"maxUnavailable": 1}
                await c.apply(
                    daemonset("agent", ns, type="RollingUpdate", rollingUpdate=rolling),
                    namespace=ns,
                )
                placed = await on_nodes(c, ns, set(nodes))
                old_hash = next(iter(placed.values()))[0].metadata.labels[REVISION]

                async def ready_status() -> Any:
                    st = (await c.get("DaemonSet", "agent", ns)).status
                    return st if st.number_available == 3 else None

                await wait_for(ready_status, "3 available")

                def new_image(ds: Any) -> None:
                    ds.spec.template.spec.containers[0].image = "busybox:1.37"

                await edit(c, "DaemonSet", "agent", ns, new_image)

                # Without the agent confirming, only one old pod is being replaced.
                async def terminating() -> list[Any]:
                    pods = (await c.list("Pod", ns)).items
                    return [p for p in pods if p.metadata.deletion_timestamp]

                await wait_for(terminating, "an old pod being replaced")
                await asyncio.sleep(0.5)
                assert len(await terminating()) == 1

                async def all_new() -> Any:
                    await kubelet_step(c, ns)
                    placed = await pods_by_node(c, ns)
                    hashes = {p.metadata.labels[REVISION] for ps in placed.values() for p in ps}
                    ok = set(placed) == set(nodes) and len(hashes) == 1 and old_hash not in hashes
                    return placed if ok else None

                await wait_for(all_new, "every node at the new revision")

                async def updated() -> Any:
                    await kubelet_step(c, ns)
                    st = (await c.get("DaemonSet", "agent", ns)).status
                    return st if st.updated_number_scheduled == 3 and st.number_ready == 3 else None

                await wait_for(updated, "status: 3 updated and ready")
                revisions = (await c.list("ControllerRevision", ns)).items
                assert len(revisions) == 2
        finally:
            for name in nodes:
                try:
                    await c.delete("Node", name)
                except NotFoundError:
                    pass


async def test_bad_daemonsets_are_rejected_with_the_field_named(
    control_plane: ControlPlane,
) -> None:
    async with control_plane.client() as c:
        ns = await new_namespace(c, "ds-bad")
        both = daemonset(
            "a", ns, type="RollingUpdate", rollingUpdate={"maxUnavailable": 1, "maxSurge": 1}
        )
        with pytest.raises(InvalidError, match=r"spec\.updateStrategy\.rollingUpdate\.maxSurge"):
            await c.apply(both, namespace=ns)
        wrong = daemonset("b", ns)
        wrong["spec"]["selector"] = {"matchLabels": {"app": "other"}}
        with pytest.raises(InvalidError, match=r"spec\.template\.metadata\.labels"):
            await c.apply(wrong, namespace=ns)
