"""PersistentVolume binding against a real control plane.

Volumes are cluster-wide, so each test gives its volumes and claims a
storage class of its own: no other test's claim can take them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import Client, ConflictError, InvalidError, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

TIMEOUT = 15.0


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pv(
    name: str,
    cls: str,
    size: str = "1Gi",
    policy: str = "Retain",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    claim: tuple[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": list(modes),
        "storageClassName": cls,
        "persistentVolumeReclaimPolicy": policy,
        "hostPath": {"path": f"/var/lib/orch-test/{name}"},
    }
    if claim:
        spec["claimRef"] = {"namespace": claim[0], "name": claim[1]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": spec,
    }


def pvc(
    name: str,
    cls: str,
    size: str = "1Gi",
    modes: tuple[str, ...] = ("ReadWriteOnce",),
    volume: str = "",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": list(modes),
        "storageClassName": cls,
        "resources": {"requests": {"storage": size}},
    }
    if volume:
        spec["volumeName"] = volume
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": spec,
    }


class Env:
    def __init__(self, c: Client, ns: str) -> None:
        self.c, self.ns, self.cls = c, ns, f"sc-{ns}"
        self.volumes: list[str] = []

    def name(self, suffix: str) -> str:
        return f"{self.ns}-{suffix}"

    async def volume(self, suffix: str, size: str = "1Gi", **kw: Any) -> str:
        name = self.name(suffix)
        self.volumes.append(name)
        await self.c.apply(pv(name, self.cls, size, **kw))
        return name

    async def claim(self, name: str, size: str = "1Gi", **kw: Any) -> None:
        await self.c.apply(pvc(name, self.cls, size, **kw), namespace=self.ns)

    async def claim_phase(self, name: str, phase: str) -> Any:
        async def check() -> Any:
            obj = await self.c.get("PersistentVolumeClaim", name, self.ns)
            return obj if obj.status.phase == phase else None

        return await wait_for(check, f"claim {name} {phase}")

    async def volume_phase(self, name: str, phase: str) -> Any:
        async def check() -> Any:
            obj = await self.c.get("PersistentVolume", name)
            return obj if obj.status.phase == phase else None

        return await wait_for(check, f"volume {name} {phase}")

    async def cleanup(self) -> None:
        for name in self.volumes:
            try:
                await self.c.delete("PersistentVolume", name)
            except NotFoundError:
                pass


async def make_env(c: Client, prefix: str) -> Env:
    ns = core.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = f"{prefix}-{secrets.token_hex(3)}"
    await c.create(ns)
    return Env(c, ns.metadata.name)


@pytest.fixture
async def env(control_plane: ControlPlane) -> AsyncIterator[Env]:
    async with control_plane.client() as c:
        e = await make_env(c, "pv")
        try:
            yield e
        finally:
            await e.cleanup()


async def test_claim_binds_the_smallest_volume_that_fits(env: Env) -> None:
    await env.volume("small", "1Gi")
    mid = await env.volume("mid", "5Gi")
    await env.volume("big", "10Gi")
    await env.volume("shared", "3Gi", modes=("ReadWriteMany",))
    await env.volume_phase(mid, "Available")
    await env.claim("data", "2Gi")
    claim = await env.claim_phase("data", "Bound")
    assert claim.spec.volume_name == mid
    assert claim.status.capacity["storage"] == "5Gi"
    assert list(claim.status.access_modes) == ["ReadWriteOnce"]
    vol = await env.volume_phase(mid, "Bound")
    ref = vol.spec.claim_ref
    assert (ref.namespace, ref.name, ref.uid) == (env.ns, "data", claim.metadata.uid)

    # Access modes must be offered: ReadWriteMany only fits "shared".
    await env.claim("many", "1Gi", modes=("ReadWriteMany",))
    many = await env.claim_phase("many", "Bound")
    assert many.spec.volume_name == env.name("shared")

    # Nothing left that is big enough: the claim waits, and says why.
    await env.claim("huge", "50Gi")
    await asyncio.sleep(0.5)
    huge = await env.c.get("PersistentVolumeClaim", "huge", env.ns)
    assert huge.status.phase == "Pending" and not huge.spec.volume_name

    async def explained() -> Any:
        events = (await env.c.list("Event", env.ns)).items
        return [e for e in events if e.reason == "FailedBinding"] or None

    (event,) = await wait_for(explained, "a FailedBinding event")
    assert f'no persistent volumes of storage class "{env.cls}" available' in event.message
    big = await env.volume("bigger", "100Gi")
    assert (await env.claim_phase("huge", "Bound")).spec.volume_name == big


async def test_retain_keeps_a_released_volume_until_an_admin_frees_it(env: Env) -> None:
    vol = await env.volume("keep")
    await env.claim("data")
    first = await env.claim_phase("data", "Bound")
    await env.c.delete("PersistentVolumeClaim", "data", env.ns)
    released = await env.volume_phase(vol, "Released")
    assert released.spec.claim_ref.uid == first.metadata.uid

    # A new claim of the same name is another claim: it does not get the data.
    await env.claim("data")
    await asyncio.sleep(0.5)
    assert (await env.c.get("PersistentVolumeClaim", "data", env.ns)).status.phase == "Pending"

    for _ in range(10):
        live = await env.c.get("PersistentVolume", vol)
        live.spec.ClearField("claim_ref")
        try:
            await env.c.update(live)
            break
        except ConflictError:
            await asyncio.sleep(0.05)
    second = await env.claim_phase("data", "Bound")
    assert second.spec.volume_name == vol


async def test_delete_policy_removes_the_volume_object(env: Env) -> None:
    vol = await env.volume("scratch", policy="Delete")
    await env.claim("tmp")
    await env.claim_phase("tmp", "Bound")
    await env.c.delete("PersistentVolumeClaim", "tmp", env.ns)

    async def gone() -> bool:
        try:
            await env.c.get("PersistentVolume", vol)
        except NotFoundError:
            return True
        return False

    await wait_for(gone, f"volume {vol} deleted")


async def test_claim_whose_volume_is_deleted_is_lost(env: Env) -> None:
    vol = await env.volume("fragile")
    await env.claim("data")
    await env.claim_phase("data", "Bound")
    await env.c.delete("PersistentVolume", vol)
    # pv-protection keeps a volume bound to a live claim: it stays Terminating.
    await asyncio.sleep(0.5)
    held = await env.c.get("PersistentVolume", vol)
    assert held.metadata.deletion_timestamp and held.status.phase == "Bound"
    assert (await env.c.get("PersistentVolumeClaim", "data", env.ns)).status.phase == "Bound"
    # An admin forcing it out (dropping the finalizer) leaves the claim Lost.
    for _ in range(10):
        live = await env.c.get("PersistentVolume", vol)
        del live.metadata.finalizers[:]
        try:
            await env.c.update(live)
            break
        except ConflictError:
            await asyncio.sleep(0.05)
    lost = await env.claim_phase("data", "Lost")
    assert lost.spec.volume_name == vol


async def test_prebound_claims_and_volumes(env: Env) -> None:
    # A claim naming a volume that does not exist yet waits for it.
    await env.claim("early", volume=env.name("later"))
    await asyncio.sleep(0.3)
    assert (await env.c.get("PersistentVolumeClaim", "early", env.ns)).status.phase == "Pending"
    later = await env.volume("later", "3Gi")
    assert (await env.claim_phase("early", "Bound")).spec.volume_name == later

    # A volume reserved for a claim by name is taken over a smaller free one.
    await env.volume("free", "1Gi")
    reserved = await env.volume("reserved", "8Gi", claim=(env.ns, "picky"))
    await env.claim("picky", "1Gi")
    assert (await env.claim_phase("picky", "Bound")).spec.volume_name == reserved
    # ...and nobody else gets it first.
    await env.claim("other", "1Gi")
    assert (await env.claim_phase("other", "Bound")).spec.volume_name == env.name("free")


async def test_bad_volumes_and_claims_are_rejected(env: Env) -> None:
    local = pv(env.name("nolocal"), env.cls)
    local["spec"].pop("hostPath")
    local["spec"]["local"] = {"path": "/mnt/disk"}
    with pytest.raises(InvalidError, match=r"spec\.nodeAffinity"):
        await env.c.apply(local)
    claim = pvc("nosize", env.cls)
    claim["spec"]["resources"] = {}
    with pytest.raises(InvalidError, match=r"spec\.resources\.requests\[storage\]"):
        await env.c.apply(claim, namespace=env.ns)


async def test_bindings_survive_a_control_plane_restart(
    fresh_control_plane: ControlPlane,
) -> None:
    cp = fresh_control_plane
    async with cp.client() as c:
        env = await make_env(c, "pv-restart")
        vol = await env.volume("durable", policy="Retain")
        await env.claim("data")
        await env.claim_phase("data", "Bound")
        ns = env.ns
    cp.stop()
    cp.start()
    async with cp.client() as c:
        env = Env(c, ns)
        claim = await env.claim_phase("data", "Bound")
        assert claim.spec.volume_name == vol
        await c.delete("PersistentVolumeClaim", "data", ns)
        await env.volume_phase(vol, "Released")
