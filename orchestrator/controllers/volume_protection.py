"""Storage object in-use protection, as Kubernetes' pvc-protection and
pv-protection controllers.

The apiserver puts `kubernetes.io/pvc-protection` on every
PersistentVolumeClaim and `kubernetes.io/pv-protection` on every
PersistentVolume when they are created, so deleting one only marks it
(deletionTimestamp: Terminating). This controller removes the finalizer, and
so lets the deletion finish, once nothing needs the object any more:

- a claim goes once no pod in its namespace that has not finished (phase
  neither Succeeded nor Failed) uses it, by a persistentVolumeClaim volume
  naming it or by a generic ephemeral volume whose claim it is. The pod cache
  is asked first; when it says "unused", the pods are listed live before the
  finalizer goes, as Kubernetes does, so a cache that has not yet seen a new
  pod cannot let a claim in use disappear;
- a volume goes once it is not bound to a live claim: its phase is not Bound,
  or no claim with its claimRef's namespace, name and uid exists (checked
  live as well before the finalizer goes).

A claim stays Terminating while a pod uses it; a bound volume stays
Terminating until its claim is gone. Pods still using a Terminating claim
may run on; new pods referencing it are the scheduler's and the agent's
concern, not this controller's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.api.meta import copy_of, meta
from orchestrator.client.client import Client, NotFoundError
from orchestrator.controllers.base import Controller

log = logging.getLogger(__name__)

# The same names the apiserver adds on create (admission/prepare.py).
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
FINISHED_PHASES = ("Succeeded", "Failed")


# -- decisions (pure) ------------------------------------------------------------------


def _claim_names(pod: Any) -> list[str]:
    """The claims a pod's volumes name: persistentVolumeClaim volumes by their
    claimName, generic ephemeral volumes by the claim made for them
    (`<pod>-<volume>`)."""
    names = []
    for vol in pod.spec.volumes:
        if vol.HasField("persistent_volume_claim"):
            names.append(vol.persistent_volume_claim.claim_name)
        elif vol.HasField("ephemeral"):
            names.append(f"{pod.metadata.name}-{vol.name}")
    return names


def _ephemeral_for(pod: Any, pvc: Any) -> bool:
    """Whether pvc is an ephemeral volume's claim owned by pod (not some other
    claim that merely has that name)."""
    return any(
        ref.controller and ref.uid == pod.metadata.uid for ref in pvc.metadata.owner_references
    )


def pod_uses_claim(pod: Any, pvc: Any) -> bool:
    """Whether pod, not finished, has a volume that is pvc."""
    if pod.metadata.namespace != pvc.metadata.namespace:
        return False
    if pod.status.phase in FINISHED_PHASES:
        return False
    name = pvc.metadata.name
    for vol in pod.spec.volumes:
        if vol.HasField("persistent_volume_claim"):
            if vol.persistent_volume_claim.claim_name == name:
                return True
        elif vol.HasField("ephemeral"):
            if f"{pod.metadata.name}-{vol.name}" == name and _ephemeral_for(pod, pvc):
                return True
    return False


def claim_in_use(pvc: Any, pods: Iterable[Any]) -> bool:
    return any(pod_uses_claim(pod, pvc) for pod in pods)


def claim_being_deleted(pvc: Any) -> bool:
    """A claim marked for deletion that still carries our finalizer."""
    return bool(pvc.metadata.deletion_timestamp) and PVC_PROTECTION in pvc.metadata.finalizers


def claim_releasable(pvc: Any, pods: Iterable[Any]) -> bool:
    """Whether pvc's protection finalizer may go, judged by these pods."""
    return claim_being_deleted(pvc) and not claim_in_use(pvc, pods)


def claim_key_of(pv: Any) -> str:
    ref = pv.spec.claim_ref
    return f"{ref.namespace}/{ref.name}" if ref.name else ""


def volume_bound_to(pv: Any, pvc: Any | None) -> bool:
    """Whether pv is Bound to this very claim (namespace, name and uid)."""
    if pv.status.phase != "Bound" or pvc is None:
        return False
    ref = pv.spec.claim_ref
    return bool(ref.name) and (
        pvc.metadata.namespace == ref.namespace
        and pvc.metadata.name == ref.name
        and pvc.metadata.uid == ref.uid
    )


def volume_being_deleted(pv: Any) -> bool:
    """A volume marked for deletion that still carries our finalizer."""
    return bool(pv.metadata.deletion_timestamp) and PV_PROTECTION in pv.metadata.finalizers


def volume_releasable(pv: Any, claims: Mapping[str, Any]) -> bool:
    """Whether pv's protection finalizer may go; claims: by namespace/name."""
    return volume_being_deleted(pv) and not volume_bound_to(pv, claims.get(claim_key_of(pv)))


# -- the controller --------------------------------------------------------------------


class VolumeProtectionController(Controller):
    name = "volume-protection"

    def __init__(self, client: Client) -> None:
        super().__init__(client)

    def setup(self) -> None:
        self.claims = self.informer("PersistentVolumeClaim")
        self.volumes = self.informer("PersistentVolume")
        self.pods = self.informer("Pod")
        self.claims.add_handler(self._on_claim)
        self.volumes.add_handler(lambda _t, pv, _old: self.queue.add(f"pv|{pv.metadata.name}"))
        self.pods.add_handler(self._on_pod)

    def _on_claim(self, type_: str, pvc: Any, _old: Any) -> None:
        key = f"{pvc.metadata.namespace}/{pvc.metadata.name}"
        if type_ != "DELETED":
            self.queue.add(f"pvc|{key}")
            return
        # Its volume may be waiting for it to go.
        if pvc.spec.volume_name:
            self.queue.add(f"pv|{pvc.spec.volume_name}")
        for pv in self.volumes.list():
            if claim_key_of(pv) == key:
                self.queue.add(f"pv|{pv.metadata.name}")

    def _on_pod(self, _type: str, pod: Any, old: Any) -> None:
        """A pod that finishes, goes or changes its volumes may free a claim."""
        for p in (pod, old):
            if p is None:
                continue
            for name in _claim_names(p):
                self.queue.add(f"pvc|{p.metadata.namespace}/{name}")

    async def sync(self, key: str) -> None:
        kind, _, name = key.partition("|")
        if kind == "pvc":
            await self._sync_claim(name)
        else:
            await self._sync_volume(name)

    async def _sync_claim(self, key: str) -> None:
        pvc = self.claims.get(key)
        if pvc is None or not claim_being_deleted(pvc):
            return
        ns = pvc.metadata.namespace
        if claim_in_use(pvc, self.pods.list()):
            log.debug("claim %s is in use by a pod: kept", key)
            return  # the pod's events bring it back here
        # The cache may not have seen a pod created a moment ago: ask the server.
        live = await self.client.list("Pod", ns)
        if claim_in_use(pvc, live.items):
            log.debug("claim %s is in use by a pod the cache has not seen: kept", key)
            return
        await self._remove_finalizer(pvc, PVC_PROTECTION)
        log.info("claim %s is no longer in use: removed %s", key, PVC_PROTECTION)

    async def _sync_volume(self, name: str) -> None:
        pv = self.volumes.get(name)
        if pv is None or not volume_being_deleted(pv):
            return
        claims = {f"{c.metadata.namespace}/{c.metadata.name}": c for c in self.claims.list()}
        if not volume_releasable(pv, claims):
            log.debug("volume %s is bound to a live claim: kept", name)
            return  # the claim's deletion brings it back here
        ref = pv.spec.claim_ref
        if pv.status.phase == "Bound" and ref.name:
            # The cache says the claim is gone: make sure it is.
            try:
                live = await self.client.get("PersistentVolumeClaim", ref.name, ref.namespace)
            except NotFoundError:
                live = None
            if volume_bound_to(pv, live):
                log.debug("volume %s is bound to a claim the cache has not seen: kept", name)
                return
        await self._remove_finalizer(pv, PV_PROTECTION)
        log.info("volume %s is not bound to a live claim: removed %s", name, PV_PROTECTION)

    async def _remove_finalizer(self, obj: Any, finalizer: str) -> None:
        fresh = copy_of(obj)
        kept = [f for f in meta(fresh).finalizers if f != finalizer]
        del meta(fresh).finalizers[:]
        meta(fresh).finalizers.extend(kept)
        try:
            await self.client.update(fresh)  # resourceVersion-guarded: a stale copy conflicts
        except NotFoundError:
            pass
