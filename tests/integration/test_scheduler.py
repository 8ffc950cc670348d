"""The scheduler against a real apiserver: it binds, explains, retries.

Each test runs its own Scheduler in-process with profiles under a scheduler
name of its own (the control plane's own scheduler ignores those pods), and
isolates itself from other tests sharing the control plane: its nodes carry
a label its pods select and a taint only its pods tolerate, so other tests'
nodes do not attract these pods and other pods are not placed on its nodes.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from google.protobuf import json_format

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import Client, NotFoundError
from orchestrator.scheduler import Scheduler
from orchestrator.scheduler.profiles import (
    BIN_PACKING,
    DEFAULT_SCHEDULER,
    build_profile,
    default_profile_specs,
)
from orchestrator.scheduler.testing import make_node, make_pod
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

TEST_LABEL = "scheduler-test"


class Env:
    """One test's namespace, nodes and scheduler names."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.suffix = secrets.token_hex(3)
        self.namespace = f"sched-{self.suffix}"
        self.default = f"default-{self.suffix}"
        self.packing = f"packing-{self.suffix}"
        self.nodes: list[str] = []

    def profiles(self) -> list[Any]:
        specs = {s.scheduler_name: s for s in default_profile_specs()}
        specs[DEFAULT_SCHEDULER].scheduler_name = self.default
        specs[BIN_PACKING].scheduler_name = self.packing
        return [build_profile(s) for s in specs.values()]

    async def node(self, name: str, **kwargs: Any) -> str:
        full = f"{name}-{self.suffix}"
        labels = {TEST_LABEL: self.suffix, **kwargs.pop("labels", {})}
        taints = [(TEST_LABEL, self.suffix, "NoSchedule"), *kwargs.pop("taints", [])]
        await self.client.create(make_node(full, labels=labels, taints=taints, **kwargs))
        self.nodes.append(full)
        return full

    async def pod(self, name: str, *, packing: bool = False, **kwargs: Any) -> core.Pod:
        selector = {TEST_LABEL: self.suffix, **kwargs.pop("node_selector", {})}
        own = {"key": TEST_LABEL, "value": self.suffix, "effect": "NoSchedule"}
        pod = make_pod(
            name,
            self.namespace,
            scheduler_name=self.packing if packing else self.default,
            node_selector=selector,
            tolerations=[own, *kwargs.pop("tolerations", [])],
            **kwargs,
        )
        pod.metadata.uid = ""
        created: core.Pod = await self.client.create(pod)
        return created

    async def bound(self, names: list[str], timeout: float = 20.0) -> dict[str, str]:
        """Wait until every pod has a node; pod name -> node name."""
        out: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                for name in names:
                    if name not in out:
                        p = await self.client.get("Pod", name, self.namespace)
                        if p.spec.node_name:
                            out[name] = p.spec.node_name
                if len(out) == len(names):
                    return out
                await asyncio.sleep(0.05)

    async def condition(
        self, name: str, predicate: Callable[[Any], bool], timeout: float = 20.0
    ) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                p = await self.client.get("Pod", name, self.namespace)
                c = next((c for c in p.status.conditions if c.type == "PodScheduled"), None)
                if c is not None and predicate(c):
                    return c
                await asyncio.sleep(0.05)

    async def cleanup(self) -> None:
        for name in self.nodes:
            try:
                await self.client.delete("Node", name)
            except NotFoundError:
                pass
        try:
            await self.client.delete("Namespace", self.namespace)
        except NotFoundError:
            pass


@asynccontextmanager
async def environment(
    cp: ControlPlane, *, start: bool = True
) -> AsyncIterator[tuple[Env, Scheduler]]:
    async with cp.client() as client:
        env = Env(client)
        ns = core.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = env.namespace
        await client.create(ns)
        scheduler = Scheduler(client, profiles=env.profiles(), seed=7)
        try:
            if start:
                await scheduler.start()
            yield env, scheduler
        finally:
            await scheduler.stop()
            await env.cleanup()


async def test_pods_bind_to_nodes_that_fit(control_plane: ControlPlane) -> None:
    async with environment(control_plane) as (env, _):
        small = await env.node("small", cpu="1", memory="1Gi")
        big = await env.node("big", cpu="8", memory="16Gi")
        await env.pod("needs-big", cpu="2", memory="2Gi")
        await env.pod("fits-anywhere", cpu="100m", memory="64Mi")
        placed = await env.bound(["needs-big", "fits-anywhere"])
        assert placed["needs-big"] == big
        assert placed["fits-anywhere"] in (small, big)
        # Kubernetes' Scheduled event.
        async with asyncio.timeout(10):
            while True:
                events = await env.client.list("Event", env.namespace)
                reasons = {(e.involved_object.name, e.reason) for e in events.items}
                if ("needs-big", "Scheduled") in reasons:
                    break
                await asyncio.sleep(0.1)


async def test_bin_packing_profile_fills_one_node_first(control_plane: ControlPlane) -> None:
    async with environment(control_plane) as (env, _):
        for i in range(3):
            await env.node(f"n{i}", cpu="4", memory="8Gi")
        names = [f"packed-{i}" for i in range(6)]
        for name in names:
            await env.pod(name, cpu="500m", memory="512Mi", packing=True)
        placed = await env.bound(names)
        assert len(set(placed.values())) == 1, placed  # 6 x 500m fit on one 4-cpu node

        spread = [f"spread-{i}" for i in range(3)]
        for name in spread:
            await env.pod(name, cpu="500m", memory="512Mi")
        placed = await env.bound(spread)
        # LeastAllocated avoids the packed node and spreads the rest.
        assert len(set(placed.values())) >= 2, placed


async def test_unschedulable_pod_explained_then_placed_when_a_node_fits(
    control_plane: ControlPlane,
) -> None:
    async with environment(control_plane) as (env, _):
        for i in range(3):
            await env.node(f"tiny{i}", cpu="500m", memory="1Gi")
        for i in range(2):
            await env.node(
                f"db{i}", cpu="8", memory="16Gi", taints=[("dedicated", "db", "NoSchedule")]
            )
        await env.pod("large", cpu="2", memory="1Gi")
        cond = await env.condition("large", lambda c: c.status == "False")
        assert cond.reason == "Unschedulable"
        # Other tests' nodes (which lack our label) are counted too.
        # Other tests' nodes are counted too, each for its own reason.
        match = re.fullmatch(r"0/(\d+) nodes are available: (.*)\.", cond.message)
        assert match, cond.message
        parts = (part.split(" ", 1) for part in re.split(r", (?=\d+ )", match[2]))
        counts = {reason: int(n) for n, reason in parts}
        assert counts["Insufficient cpu"] == 3, cond.message
        assert counts["node(s) had untolerated taint {dedicated: db}"] == 2, cond.message
        assert sum(counts.values()) == int(match[1]), cond.message
        async with asyncio.timeout(10):
            while True:
                events = await env.client.list("Event", env.namespace)
                failed = [e for e in events.items if e.reason == "FailedScheduling"]
                if failed:
                    break
                await asyncio.sleep(0.1)
        assert failed[0].type == "Warning"
        assert failed[0].message == cond.message
        assert failed[0].involved_object.name == "large"

        # A node that fits appears: the pod is retried and bound.
        fits = await env.node("roomy", cpu="4", memory="4Gi")
        placed = await env.bound(["large"], timeout=30)
        assert placed["large"] == fits
        cond = await env.condition("large", lambda c: c.status == "True")
        assert cond.reason == ""


async def test_higher_priority_pods_are_scheduled_first(control_plane: ControlPlane) -> None:
    # Create the pods before the scheduler starts so they queue together;
    # one node with room for exactly one of them decides the order.
    async with environment(control_plane, start=False) as (env, scheduler):
        await env.node("only", cpu="1", memory="1Gi")
        await env.pod("low", cpu="800m", priority=10)
        await env.pod("high", cpu="800m", priority=1000)
        await env.pod("mid", cpu="800m", priority=100)
        await scheduler.start()
        placed = await env.bound(["high"])
        assert placed["high"] == env.nodes[0]
        for name in ("low", "mid"):
            cond = await env.condition(name, lambda c: c.status == "False")
            assert "Insufficient cpu" in cond.message


async def test_taints_and_tolerations(control_plane: ControlPlane) -> None:
    async with environment(control_plane) as (env, _):
        gpu = await env.node("gpu", taints=[("gpu", "true", "NoSchedule")])
        plain = await env.node("plain", taints=[("noisy", "", "PreferNoSchedule")])
        await env.node("notready", ready="False")
        await env.pod(
            "tolerant",
            tolerations=[{"key": "gpu", "operator": "Exists"}],
            node_selector={"kubernetes.io/hostname": gpu},
        )
        await env.pod("intolerant")
        placed = await env.bound(["tolerant", "intolerant"])
        assert placed == {"tolerant": gpu, "intolerant": plain}

        await env.pod("only-gpu-but-intolerant", node_selector={"kubernetes.io/hostname": gpu})
        cond = await env.condition("only-gpu-but-intolerant", lambda c: c.status == "False")
        assert "1 node(s) had untolerated taint {gpu: true}" in cond.message


async def test_anti_affinity_spreads_replicas(control_plane: ControlPlane) -> None:
    async with environment(control_plane) as (env, _):
        for i in range(3):
            await env.node(f"z{i}", cpu="8", memory="16Gi")
        anti = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
        names = [f"web-{i}" for i in range(3)]
        for name in names:
            await env.pod(name, labels={"app": "web"}, affinity=anti, cpu="100m")
        placed = await env.bound(names)
        assert sorted(placed.values()) == sorted(env.nodes)

        await env.pod("web-3", labels={"app": "web"}, affinity=anti, cpu="100m")
        cond = await env.condition("web-3", lambda c: c.status == "False")
        assert "3 node(s) didn't satisfy existing pods anti-affinity rules" in cond.message


# -- VolumeBinding -------------------------------------------------------------------------


def local_volume(name: str, storage_class: str, node: str) -> core.PersistentVolume:
    """A local PersistentVolume reachable from `node` only."""
    pv = core.PersistentVolume(api_version="v1", kind="PersistentVolume")
    json_format.ParseDict(
        {
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "persistentVolumeReclaimPolicy": "Retain",
                "local": {"path": f"/mnt/disks/{name}"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [node],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        },
        pv,
    )
    return pv


def volume_claim(name: str, namespace: str, storage_class: str, volume: str = "") -> Any:
    pvc = core.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    json_format.ParseDict(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": volume,
            },
        },
        pvc,
    )
    return pvc


async def claim_pod(env: Env, name: str, claim: str, **kwargs: Any) -> core.Pod:
    """As env.pod, with a volume using `claim`."""
    own = {"key": TEST_LABEL, "value": env.suffix, "effect": "NoSchedule"}
    pod = make_pod(
        name,
        env.namespace,
        scheduler_name=env.default,
        node_selector={TEST_LABEL: env.suffix},
        tolerations=[own],
        **kwargs,
    )
    pod.metadata.uid = ""
    pod.spec.volumes.add(name="data").persistent_volume_claim.claim_name = claim
    created: core.Pod = await env.client.create(pod)
    return created


async def claim_bound(env: Env, name: str, timeout: float = 20.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            pvc = await env.client.get("PersistentVolumeClaim", name, env.namespace)
            if pvc.status.phase == "Bound":
                return pvc
            await asyncio.sleep(0.05)


async def delete_volumes(env: Env, names: list[str]) -> None:
    for name in names:
        try:
            await env.client.delete("PersistentVolume", name)
        except NotFoundError:
            pass


async def test_bound_local_volume_pins_the_pod_to_its_node(control_plane: ControlPlane) -> None:
    async with environment(control_plane) as (env, _):
        roomy = await env.node("roomy", cpu="16", memory="32Gi")
        small = await env.node("small", cpu="2", memory="4Gi")
        storage_class = f"local-{env.suffix}"
        pv_name = f"local-{env.suffix}"
        try:
            await env.client.create(local_volume(pv_name, storage_class, small))
            await env.client.create(
                volume_claim("data", env.namespace, storage_class, volume=pv_name)
            )
            assert (await claim_bound(env, "data")).spec.volume_name == pv_name

            # Without a claim, the roomier node scores better...
            await env.pod("free", cpu="500m", memory="256Mi")
            assert (await env.bound(["free"]))["free"] == roomy
            # ...but the volume is on the small one.
            await claim_pod(env, "db", "data", cpu="500m", memory="256Mi")
            assert (await env.bound(["db"]))["db"] == small
        finally:
            await delete_volumes(env, [pv_name])


async def test_pod_waits_for_its_claim_to_bind(control_plane: ControlPlane) -> None:
    async with environment(control_plane) as (env, _):
        await env.node("a", cpu="16", memory="32Gi")
        b = await env.node("b", cpu="2", memory="4Gi")
        storage_class = f"late-{env.suffix}"
        pv_name = f"late-{env.suffix}"
        try:
            await env.client.create(volume_claim("data", env.namespace, storage_class))
            await claim_pod(env, "db", "data", cpu="500m")
            cond = await env.condition("db", lambda c: c.status == "False")
            assert cond.reason == "Unschedulable"
            assert re.fullmatch(
                r"0/\d+ nodes are available: pod has unbound immediate PersistentVolumeClaims\.",
                cond.message,
            ), cond.message
            assert not (await env.client.get("Pod", "db", env.namespace)).spec.node_name

            # A volume appears; the binder binds the claim to it; the claim's
            # update retries the pod (well before the 60 s unschedulable flush),
            # and the volume's node affinity places it.
            await env.client.create(local_volume(pv_name, storage_class, b))
            assert (await claim_bound(env, "data")).spec.volume_name == pv_name
            assert (await env.bound(["db"], timeout=20))["db"] == b
            cond = await env.condition("db", lambda c: c.status == "True")
        finally:
            await delete_volumes(env, [pv_name])
