"""Storage in-use protection: when a claim's or a volume's finalizer may go,
and that the apiserver adds the finalizers on create."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.apiserver.admission import prepare_create
from orchestrator.apiserver.registry import UserInfo
from orchestrator.client.client import NotFoundError
from orchestrator.controllers.volume_protection import (
    PV_PROTECTION,
    PVC_PROTECTION,
    VolumeProtectionController,
    claim_in_use,
    claim_releasable,
    pod_uses_claim,
    volume_bound_to,
    volume_releasable,
)

pytestmark = pytest.mark.unit

DELETED_AT = "2024-01-01T00:00:00Z"


def pvc(name: str = "data", ns: str = "demo", deleting: bool = True) -> core.PersistentVolumeClaim:
    c = core.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    c.metadata.name, c.metadata.namespace, c.metadata.uid = name, ns, f"uid-{name}"
    c.metadata.finalizers.append(PVC_PROTECTION)
    if deleting:
        c.metadata.deletion_timestamp = DELETED_AT
    return c


def pod(
    name: str = "web",
    ns: str = "demo",
    claims: tuple[str, ...] = ("data",),
    phase: str = "Running",
) -> core.Pod:
    p = core.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = name, ns, f"uid-{name}"
    for i, claim in enumerate(claims):
        v = p.spec.volumes.add(name=f"v{i}")
        v.persistent_volume_claim.claim_name = claim
    p.status.phase = phase
    return p


def pv(
    phase: str = "Bound", claim: core.PersistentVolumeClaim | None = None, deleting: bool = True
) -> core.PersistentVolume:
    v = core.PersistentVolume(api_version="v1", kind="PersistentVolume")
    v.metadata.name = "vol"
    v.metadata.finalizers.append(PV_PROTECTION)
    if deleting:
        v.metadata.deletion_timestamp = DELETED_AT
    if claim is not None:
        ref = v.spec.claim_ref
        ref.namespace, ref.name, ref.uid = (
            claim.metadata.namespace,
            claim.metadata.name,
            claim.metadata.uid,
        )
    v.status.phase = phase
    return v


# -- claims ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "uses"),
    [
        ("Pending", True),
        ("Running", True),
        ("Unknown", True),
        ("Succeeded", False),
        ("Failed", False),
    ],
)
def test_only_unfinished_pods_use_a_claim(phase: str, uses: bool) -> None:
    assert pod_uses_claim(pod(phase=phase), pvc()) is uses


def test_a_pod_uses_only_the_claims_it_names_in_its_own_namespace() -> None:
    claim = pvc("data")
    assert pod_uses_claim(pod(claims=("logs", "data")), claim)
    assert not pod_uses_claim(pod(claims=("logs",)), claim)
    assert not pod_uses_claim(pod(claims=()), claim)
    assert not pod_uses_claim(pod(ns="other"), claim)
    # A pod being deleted but still running holds on to its claim.
    leaving = pod()
    leaving.metadata.deletion_timestamp = DELETED_AT
    assert pod_uses_claim(leaving, claim)


def test_an_ephemeral_volume_uses_the_claim_made_for_it() -> None:
    p = pod(claims=())
    p.spec.volumes.add(name="scratch").ephemeral.volume_claim_template.spec.access_modes.append(
        "ReadWriteOnce"
    )
    claim = pvc("web-scratch")
    assert not pod_uses_claim(p, claim)  # same name, but not the pod's own claim
    owner = claim.metadata.owner_references.add(
        api_version="v1", kind="Pod", name="web", uid="uid-web", controller=True
    )
    assert pod_uses_claim(p, claim)
    owner.uid = "uid-someone-else"
    assert not pod_uses_claim(p, claim)


def test_a_claim_is_released_once_deleted_and_unused() -> None:
    claim = pvc()
    assert not claim_releasable(claim, [pod()])
    assert claim_releasable(claim, [pod(phase="Succeeded"), pod("other", claims=("logs",))])
    assert claim_releasable(claim, [])
    assert claim_in_use(claim, [pod(claims=("logs",)), pod("b")])


def test_a_claim_not_being_deleted_or_without_the_finalizer_is_left_alone() -> None:
    assert not claim_releasable(pvc(deleting=False), [])
    claim = pvc()
    claim.metadata.finalizers[:] = ["example.com/other"]
    assert not claim_releasable(claim, [])


# -- volumes ---------------------------------------------------------------------------


def test_a_volume_bound_to_a_live_claim_is_kept() -> None:
    claim = pvc(deleting=False)
    vol = pv("Bound", claim)
    assert volume_bound_to(vol, claim)
    assert not volume_releasable(vol, {"demo/data": claim})
    # A claim being deleted is still live: the volume waits for it to go.
    assert not volume_releasable(vol, {"demo/data": pvc()})


def test_a_volume_whose_claim_is_gone_or_replaced_is_released() -> None:
    claim = pvc(deleting=False)
    vol = pv("Bound", claim)
    assert volume_releasable(vol, {})
    other = pvc(deleting=False)
    other.metadata.uid = "uid-new"  # same name, another claim
    assert not volume_bound_to(vol, other)
    assert volume_releasable(vol, {"demo/data": other})
    assert volume_releasable(vol, {"other/data": claim})


@pytest.mark.parametrize("phase", ["Available", "Released", "Failed", "Pending", ""])
def test_a_volume_that_is_not_bound_is_released(phase: str) -> None:
    claim = pvc(deleting=False)
    assert volume_releasable(pv(phase, claim), {"demo/data": claim})
    assert volume_releasable(pv(phase), {})


def test_a_volume_not_being_deleted_or_without_the_finalizer_is_left_alone() -> None:
    assert not volume_releasable(pv("Available", deleting=False), {})
    vol = pv("Available")
    del vol.metadata.finalizers[:]
    assert not volume_releasable(vol, {})


# -- admission -------------------------------------------------------------------------


def test_claims_and_volumes_get_their_finalizer_on_create() -> None:
    user = UserInfo("admin", ())
    claim = core.PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim")
    claim.metadata.finalizers.append("example.com/keep")
    prepare_create(claim, user)
    assert list(claim.metadata.finalizers) == ["example.com/keep", PVC_PROTECTION]
    prepare_create(claim, user)  # never twice
    assert list(claim.metadata.finalizers) == ["example.com/keep", PVC_PROTECTION]
    vol = core.PersistentVolume(api_version="v1", kind="PersistentVolume")
    prepare_create(vol, user)
    assert list(vol.metadata.finalizers) == [PV_PROTECTION]
    cm = core.ConfigMap(api_version="v1", kind="ConfigMap")
    prepare_create(cm, user)
    assert not cm.metadata.finalizers


# -- the controller against a stale cache ------------------------------------------------


class FakeCache:
    def __init__(self, *objs: Any) -> None:
        self.objs = list(objs)

    def get(self, key: str) -> Any | None:
        for o in self.objs:
            m = o.metadata
            if (f"{m.namespace}/{m.name}" if m.namespace else m.name) == key:
                return o
        return None

    def list(self) -> list[Any]:
        return list(self.objs)


class FakeList:
    def __init__(self, items: list[Any]) -> None:
        self.items = items


class FakeClient:
    """The server's view, which may be ahead of the caches."""

    def __init__(self, pods: list[Any], claims: list[Any]) -> None:
        self.pods, self.claims = pods, claims
        self.updated: list[Any] = []

    async def list(self, kind: str, namespace: str | None = None) -> FakeList:
        assert kind == "Pod"
        return FakeList([p for p in self.pods if p.metadata.namespace == namespace])

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        assert kind == "PersistentVolumeClaim"
        for c in self.claims:
            if (c.metadata.namespace, c.metadata.name) == (namespace, name):
                return c
        raise NotFoundError(grpc.StatusCode.NOT_FOUND, "not found")

    async def update(self, obj: Any) -> Any:
        self.updated.append(obj)
        return obj


def controller(
    client: FakeClient, claims: tuple[Any, ...] = (), volumes: tuple[Any, ...] = ()
) -> VolumeProtectionController:
    c = VolumeProtectionController(client)  # type: ignore[arg-type]
    c.claims, c.volumes, c.pods = FakeCache(*claims), FakeCache(*volumes), FakeCache()  # type: ignore[assignment]
    return c


async def test_a_pod_the_cache_has_not_seen_keeps_the_claim() -> None:
    claim = pvc()
    client = FakeClient(pods=[pod()], claims=[claim])
    await controller(client, claims=(claim,)).sync("pvc|demo/data")
    assert client.updated == []
    client.pods = [pod(phase="Failed")]
    await controller(client, claims=(claim,)).sync("pvc|demo/data")
    (written,) = client.updated
    assert PVC_PROTECTION not in written.metadata.finalizers
    assert PVC_PROTECTION in claim.metadata.finalizers  # the cached object is untouched


async def test_a_claim_the_cache_has_not_seen_keeps_its_volume() -> None:
    claim = pvc(deleting=False)
    vol = pv("Bound", claim)
    client = FakeClient(pods=[], claims=[claim])
    await controller(client, volumes=(vol,)).sync("pv|vol")
    assert client.updated == []
    client.claims = []
    await controller(client, volumes=(vol,)).sync("pv|vol")
    (written,) = client.updated
    assert list(written.metadata.finalizers) == []
