"""Storage in-use protection against a real control plane: a claim a pod uses,
and a volume bound to a live claim, stay Terminating until freed.

The control plane runs no scheduler, so the test's pods stay unbound and go at
once when deleted; the test plays the node agent where a pod must finish.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.client.client import Client, NotFoundError
from orchestrator.controllers.volume_protection import PV_PROTECTION, PVC_PROTECTION
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

TIMEOUT = 15.0
# How long something that must not happen is given to happen anyway.
SETTLE = 1.0


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Env:
    def __init__(self, c: Client, ns: str) -> None:
        self.c, self.ns, self.cls = c, ns, f"sc-{ns}"
        self.volumes: list[str] = []

    async def claim(self, name: str) -> Any:
        return await self.c.create(
            codec.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": self.ns},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": self.cls,
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            )
        )

    async def volume(self, suffix: str) -> Any:
        name = f"{self.ns}-{suffix}"
        self.volumes.append(name)
        return await self.c.create(
            codec.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": name},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": self.cls,
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": f"/var/lib/orch-test/{name}"},
                    },
                }
            )
        )

    async def pod(self, name: str, claim: str) -> Any:
        return await self.c.create(
            codec.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": self.ns},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "busybox",
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                        "volumes": [
                            {"name": "data", "persistentVolumeClaim": {"claimName": claim}}
                        ],
                    },
                }
            )
        )

    async def get(self, kind: str, name: str) -> Any | None:
        try:
            return await self.c.get(kind, name, self.ns)
        except NotFoundError:
            return None

    async def gone(self, kind: str, name: str) -> None:
        async def check() -> bool:
            return await self.get(kind, name) is None

        await wait_for(check, f"{kind} {name} gone")

    async def stays(self, kind: str, name: str) -> Any:
        """The object is still there, marked for deletion, after a while."""
        await asyncio.sleep(SETTLE)
        obj = await self.get(kind, name)
        assert obj is not None, f"{kind} {name} went while still in use"
        assert obj.metadata.deletion_timestamp, f"{kind} {name} is not Terminating"
        return obj

    async def phase(self, kind: str, name: str, phase: str) -> Any:
        async def check() -> Any:
            obj = await self.get(kind, name)
            return obj if obj is not None and obj.status.phase == phase else None

        return await wait_for(check, f"{kind} {name} {phase}")


@pytest.fixture
async def env(control_plane: ControlPlane) -> AsyncIterator[Env]:
    ns = f"vp-{secrets.token_hex(3)}"
    async with control_plane.client() as c:
        await c.create(
            codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        )
        e = Env(c, ns)
        try:
            yield e
        finally:
            await c.delete("Namespace", ns)
            for name in e.volumes:
                try:
                    await c.delete("PersistentVolume", name)
                except NotFoundError:
                    pass


async def test_claims_and_volumes_carry_their_protection_finalizer(env: Env) -> None:
    claim = await env.claim("data")
    assert list(claim.metadata.finalizers) == [PVC_PROTECTION]
    vol = await env.volume("vol")
    assert list(vol.metadata.finalizers) == [PV_PROTECTION]


async def test_an_unused_claim_goes_at_once(env: Env) -> None:
    await env.claim("data")
    await env.pod("other", "logs")  # uses another claim
    _obj, deleted = await env.c.delete("PersistentVolumeClaim", "data", env.ns)
    assert not deleted  # the finalizer holds it until the controller looks
    await env.gone("PersistentVolumeClaim", "data")


async def test_a_claim_in_use_stays_terminating_until_its_pod_is_deleted(env: Env) -> None:
    await env.claim("data")
    await env.pod("web", "data")
    await env.c.delete("PersistentVolumeClaim", "data", env.ns)
    held = await env.stays("PersistentVolumeClaim", "data")
    assert PVC_PROTECTION in held.metadata.finalizers
    await env.c.delete("Pod", "web", env.ns)
    await env.gone("PersistentVolumeClaim", "data")


async def test_a_finished_pod_no_longer_holds_its_claim(env: Env) -> None:
    await env.claim("data")
    pod = await env.pod("job", "data")
    await env.c.delete("PersistentVolumeClaim", "data", env.ns)
    await env.stays("PersistentVolumeClaim", "data")
    pod.status.phase = "Succeeded"
    await env.c.update_status(pod)
    await env.gone("PersistentVolumeClaim", "data")
    assert await env.get("Pod", "job") is not None  # the pod itself stays


async def test_a_bound_volume_stays_until_its_claim_is_gone(env: Env) -> None:
    vol = (await env.volume("vol")).metadata.name
    await env.claim("data")
    await env.phase("PersistentVolumeClaim", "data", "Bound")
    await env.pod("web", "data")

    await env.c.delete("PersistentVolume", vol)
    held = await env.stays("PersistentVolume", vol)
    assert held.status.phase == "Bound" and PV_PROTECTION in held.metadata.finalizers
    claim = await env.get("PersistentVolumeClaim", "data")
    assert claim is not None and claim.status.phase == "Bound"  # not Lost: the volume is there

    # The claim in turn waits for its pod; the volume for its claim.
    await env.c.delete("PersistentVolumeClaim", "data", env.ns)
    await env.stays("PersistentVolumeClaim", "data")
    assert await env.get("PersistentVolume", vol) is not None
    await env.c.delete("Pod", "web", env.ns)
    await env.gone("PersistentVolumeClaim", "data")
    await env.gone("PersistentVolume", vol)


async def test_a_released_volume_goes_when_deleted(env: Env) -> None:
    vol = (await env.volume("vol")).metadata.name
    await env.claim("data")
    await env.phase("PersistentVolumeClaim", "data", "Bound")
    await env.c.delete("PersistentVolumeClaim", "data", env.ns)
    await env.phase("PersistentVolume", vol, "Released")  # Retain keeps it
    await env.c.delete("PersistentVolume", vol)
    await env.gone("PersistentVolume", vol)
