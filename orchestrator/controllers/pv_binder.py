"""The PersistentVolume controller: binds claims to volumes and reclaims
volumes whose claims are gone, as Kubernetes' persistentvolume binder does.

Binding (claims with no volumeName): the claim gets the smallest Available
volume of its storage class whose access modes include the claim's, whose
capacity covers the request, whose volumeMode equals the claim's and whose
labels match the claim's selector; a volume pre-bound to the claim by the
user (spec.claimRef naming it) is taken first whatever its class or phase. A
claim pre-bound by the user (spec.volumeName) gets that volume once it exists,
is unbound and fits. There is no dynamic provisioning: a claim nothing fits
stays Pending.

A binding is written volume first (claimRef with the claim's uid, then phase
Bound), claim second (volumeName, then phase Bound with the volume's capacity
and access modes). The volume's claimRef is the lock: a restart between the
steps finds it and finishes the claim. Nothing is kept in memory that the
objects do not say, so a restarted controller picks up where it was.

Afterwards:
- a bound claim whose volume is deleted (or bound elsewhere) becomes Lost;
- a volume whose claim is deleted becomes Released and then follows its
  reclaim policy: Retain keeps it Released (an admin clears claimRef to reuse
  it), Delete deletes the PersistentVolume object only: the data under its
  local path or hostPath is not wiped, there being no deleter plugin here;
  Recycle is not supported and marks the volume Failed.

The scheduling side of local volumes (a pod whose claim is bound to a volume
with nodeAffinity may only run on matching nodes) is the scheduler's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from orchestrator.api.meta import copy_of, now_rfc3339
from orchestrator.api.quantity import QuantityError, parse_quantity
from orchestrator.api.selectors import SelectorError
from orchestrator.client.client import Client, NotFoundError
from orchestrator.client.events import EventRecorder
from orchestrator.controllers.base import Controller
from orchestrator.controllers.stateful_pods import selector_of

log = logging.getLogger(__name__)

COMPONENT = "persistentvolume-controller"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
PENDING, AVAILABLE, BOUND, RELEASED, FAILED, LOST = (
    "Pending",
    "Available",
    "Bound",
    "Released",
    "Failed",
    "Lost",
)
# How often a claim that nothing fits may repeat its FailedBinding event.
EVENT_QUIET_SECONDS = 30.0


# -- matching (pure) -------------------------------------------------------------------


def storage(resources: Mapping[str, str]) -> Fraction | None:
    try:
        return parse_quantity(resources["storage"])
    except (KeyError, QuantityError):
        return None


def claim_class(pvc: Any) -> str:
    """No StorageClass objects exist here, so an unset class means "" (volumes
    without a class), as Kubernetes reads it when there is no default class."""
    return str(pvc.spec.storage_class_name) if pvc.spec.HasField("storage_class_name") else ""


def _mode(spec: Any) -> str:
    return str(spec.volume_mode) if spec.HasField("volume_mode") else "Filesystem"


def claim_key(pvc: Any) -> str:
    return f"{pvc.metadata.namespace}/{pvc.metadata.name}"


def ref_key(ref: Any) -> str:
    return f"{ref.namespace}/{ref.name}"


def is_prebound_to(pv: Any, pvc: Any) -> bool:
    """pv's claimRef names pvc (and, when it carries a uid, this very claim)."""
    ref = pv.spec.claim_ref
    if not ref.name or ref_key(ref) != claim_key(pvc):
        return False
    return not ref.uid or ref.uid == pvc.metadata.uid


def mismatch(pv: Any, pvc: Any, *, check_class: bool = True) -> str:
    """Why pv cannot serve pvc ("" when it can), ignoring who it is bound to."""
    wanted, have = storage(pvc.spec.resources.requests), storage(pv.spec.capacity)
    if wanted is None:
        return "the claim requests no storage"
    if have is None or have < wanted:
        got = pv.spec.capacity.get("storage", "none")
        want = pvc.spec.resources.requests["storage"]
        return f"capacity {got} is less than the requested {want}"
    if _mode(pv.spec) != _mode(pvc.spec):
        return f"volumeMode {_mode(pv.spec)} differs from the claim's {_mode(pvc.spec)}"
    missing = set(pvc.spec.access_modes) - set(pv.spec.access_modes)
    if missing:
        return f"access modes {sorted(pv.spec.access_modes)} lack {sorted(missing)}"
    if check_class and pv.spec.storage_class_name != claim_class(pvc):
        return (
            f'storageClassName "{pv.spec.storage_class_name}" differs from the claim\'s '
            f'"{claim_class(pvc)}"'
        )
    if pvc.spec.HasField("selector"):
        try:
            if not selector_of(pvc.spec.selector).matches(pv.metadata.labels):
                return "labels do not match the claim's selector"
        except SelectorError as exc:
            return f"the claim's selector is invalid: {exc}"
    return ""


def find_volume(pvc: Any, pvs: Iterable[Any]) -> Any | None:
    """The volume pvc should bind to: one pre-bound to it, else the smallest
    free one that fits (fewest access modes, then name, breaking ties)."""
    best: Any = None
    best_key: tuple[Fraction, int, str] | None = None
    for pv in pvs:
        if pv.metadata.deletion_timestamp:
            continue
        if is_prebound_to(pv, pvc):
            if not mismatch(pv, pvc, check_class=False):
                return pv
            continue
        if pv.spec.claim_ref.name or pv.status.phase not in ("", PENDING, AVAILABLE):
            continue
        if mismatch(pv, pvc):
            continue
        key = (
            storage(pv.spec.capacity) or Fraction(0),
            len(pv.spec.access_modes),
            pv.metadata.name,
        )
        if best_key is None or key < best_key:
            best, best_key = pv, key
    return best


# -- decisions (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do about one claim or volume."""

    action: str  # bind, lost, wait, available, released, reclaim, unbind, bound, none
    pv: Any = None
    pvc: Any = None
    message: str = ""


def _was_bound(pvc: Any) -> bool:
    return pvc.status.phase in (BOUND, LOST) or BIND_COMPLETED in pvc.metadata.annotations


def decide_claim(pvc: Any, pvs: Mapping[str, Any]) -> Decision:
    """pvs: every PersistentVolume by name."""
    if pvc.metadata.deletion_timestamp:
        return Decision("none", pvc=pvc)
    name = pvc.spec.volume_name
    if not name:
        pv = find_volume(pvc, pvs.values())
        if pv is None:
            return Decision(
                "wait",
                pvc=pvc,
                message="no persistent volumes available for this claim and no storage class is set"
                if not claim_class(pvc)
                else f'no persistent volumes of storage class "{claim_class(pvc)}" available '
                "for this claim (no dynamic provisioning)",
            )
        return Decision("bind", pv=pv, pvc=pvc)
    pv = pvs.get(name)
    if pv is None:
        if _was_bound(pvc):
            return Decision("lost", pvc=pvc, message=f'volume "{name}" no longer exists')
        return Decision("wait", pvc=pvc, message=f'volume "{name}" not found')
    if not pv.spec.claim_ref.name:
        problem = mismatch(pv, pvc, check_class=False)
        if problem:
            return Decision("wait", pv=pv, pvc=pvc, message=f'volume "{name}": {problem}')
        return Decision("bind", pv=pv, pvc=pvc)
    if is_prebound_to(pv, pvc):
        if pv.status.phase == BOUND and pvc.status.phase == BOUND:
            return Decision("none", pv=pv, pvc=pvc)
        return Decision("bind", pv=pv, pvc=pvc)
    other = ref_key(pv.spec.claim_ref)
    if _was_bound(pvc):
        return Decision("lost", pv=pv, pvc=pvc, message=f'volume "{name}" is bound to {other}')
    return Decision(
        "wait", pv=pv, pvc=pvc, message=f'volume "{name}" is already bound to claim {other}'
    )


def decide_volume(pv: Any, claims: Mapping[str, Any]) -> Decision:
    """claims: every PersistentVolumeClaim by namespace/name."""
    if pv.metadata.deletion_timestamp:
        return Decision("none", pv=pv)
    ref = pv.spec.claim_ref
    if not ref.name:
        if pv.status.phase == AVAILABLE:
            return Decision("none", pv=pv)
        return Decision("available", pv=pv)
    pvc = claims.get(ref_key(ref))
    if not ref.uid:
        # Pre-bound by the user to a claim by name: the claim's sync binds it.
        return Decision("none" if pv.status.phase == AVAILABLE else "available", pv=pv, pvc=pvc)
    if pvc is None or pvc.metadata.uid != ref.uid:
        if pv.status.phase == RELEASED and pv.spec.persistent_volume_reclaim_policy == "Retain":
            return Decision("none", pv=pv)
        if pv.status.phase == FAILED:
            return Decision("none", pv=pv)
        return Decision("reclaim", pv=pv, message=f"claim {ref_key(ref)} was deleted")
    if not pvc.spec.volume_name:
        return Decision("bind", pv=pv, pvc=pvc)  # finish what a restart interrupted
    if pvc.spec.volume_name == pv.metadata.name:
        return Decision("none" if pv.status.phase == BOUND else "bound", pv=pv, pvc=pvc)
    # The claim went to another volume: this claimRef is stale.
    if pv.metadata.annotations.get(BOUND_BY_CONTROLLER) == "yes":
        return Decision("unbind", pv=pv, pvc=pvc)
    return Decision("none", pv=pv, pvc=pvc)


# -- the controller --------------------------------------------------------------------


class PersistentVolumeBinder(Controller):
    name = "persistentvolume-binder"
    workers = 1  # claims compete for one pool of volumes: decide one at a time

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.events = EventRecorder(client, "", component=COMPONENT)
        self._last_wait_event: dict[str, float] = {}

    def setup(self) -> None:
        self.volumes = self.informer("PersistentVolume")
        self.claims = self.informer("PersistentVolumeClaim")
        self.volumes.add_handler(self._on_volume)
        self.claims.add_handler(self._on_claim)
        self.events.start()

    async def stop(self) -> None:
        await super().stop()
        await self.events.stop()

    def _on_volume(self, type_: str, pv: Any, old: Any) -> None:
        self.queue.add(f"pv|{pv.metadata.name}")
        for o in (pv, old):
            if o is not None and o.spec.claim_ref.name:
                self.queue.add(f"pvc|{ref_key(o.spec.claim_ref)}")
        if type_ != "DELETED" and not pv.spec.claim_ref.name:
            # A free volume: claims waiting for one get another look.
            for pvc in self.claims.list():
                if not pvc.spec.volume_name or pvc.spec.volume_name == pv.metadata.name:
                    self.queue.add(f"pvc|{claim_key(pvc)}")

    def _on_claim(self, type_: str, pvc: Any, _old: Any) -> None:
        key = claim_key(pvc)
        if type_ == "DELETED":
            self._last_wait_event.pop(key, None)
            if pvc.spec.volume_name:
                self.queue.add(f"pv|{pvc.spec.volume_name}")
            for pv in self.volumes.list():
                if ref_key(pv.spec.claim_ref) == key:
                    self.queue.add(f"pv|{pv.metadata.name}")
            return
        self.queue.add(f"pvc|{key}")

    async def sync(self, key: str) -> None:
        kind, _, name = key.partition("|")
        if kind == "pvc":
            pvc = self.claims.get(name)
            if pvc is not None:
                pvs = {pv.metadata.name: pv for pv in self.volumes.list()}
                await self._act(decide_claim(pvc, pvs))
        else:
            pv = self.volumes.get(name)
            if pv is not None:
                claims = {claim_key(c): c for c in self.claims.list()}
                await self._act(decide_volume(pv, claims))

    async def _act(self, d: Decision) -> None:
        if d.action == "bind":
            await self._bind(d.pv, d.pvc)
        elif d.action == "lost":
            await self._claim_lost(d.pvc, d.message)
        elif d.action == "wait":
            self._waiting(d.pvc, d.message)
        elif d.action in ("available", "bound"):
            await self._volume_phase(d.pv, AVAILABLE if d.action == "available" else BOUND)
        elif d.action == "unbind":
            await self._unbind(d.pv)
        elif d.action == "reclaim":
            await self._reclaim(d.pv, d.message)

    # -- effects -----------------------------------------------------------------------

    async def _bind(self, pv: Any, pvc: Any) -> None:
        ref = pv.spec.claim_ref
        if ref.uid != pvc.metadata.uid or ref.name != pvc.metadata.name:
            fresh = copy_of(pv)
            fresh.spec.claim_ref.Clear()
            r = fresh.spec.claim_ref
            r.kind, r.api_version = "PersistentVolumeClaim", "v1"
            r.namespace, r.name, r.uid = pvc.metadata.namespace, pvc.metadata.name, pvc.metadata.uid
            r.resource_version = pvc.metadata.resource_version
            if not ref.name:
                fresh.metadata.annotations[BOUND_BY_CONTROLLER] = "yes"
            pv = await self.client.update(fresh)
        if pv.status.phase != BOUND:
            pv = await self._set_volume_phase(pv, BOUND)
        if (
            pvc.spec.volume_name != pv.metadata.name
            or BIND_COMPLETED not in pvc.metadata.annotations
        ):
            fresh = copy_of(pvc)
            if not pvc.spec.volume_name:
                fresh.spec.volume_name = pv.metadata.name
                fresh.metadata.annotations[BOUND_BY_CONTROLLER] = "yes"
            fresh.metadata.annotations[BIND_COMPLETED] = "yes"
            pvc = await self.client.update(fresh)
        st = pvc.status
        if (
            st.phase != BOUND
            or dict(st.capacity) != dict(pv.spec.capacity)
            or list(st.access_modes) != list(pv.spec.access_modes)
        ):
            fresh = copy_of(pvc)
            fresh.status.phase = BOUND
            fresh.status.capacity.clear()
            fresh.status.capacity.update(pv.spec.capacity)
            del fresh.status.access_modes[:]
            fresh.status.access_modes.extend(pv.spec.access_modes)
            await self.client.update_status(fresh)
            self._last_wait_event.pop(claim_key(pvc), None)
            log.info("bound claim %s to volume %s", claim_key(pvc), pv.metadata.name)
            self.events.record(
                pvc,
                "Normal",
                "Bound",
                f"bound to volume {pv.metadata.name} "
                f"({pv.spec.capacity.get('storage', '?')}, {','.join(pv.spec.access_modes)})",
            )

    async def _claim_lost(self, pvc: Any, message: str) -> None:
        if pvc.status.phase == LOST:
            return
        fresh = copy_of(pvc)
        fresh.status.phase = LOST
        await self.client.update_status(fresh)
        log.warning("claim %s lost: %s", claim_key(pvc), message)
        self.events.record(
            pvc,
            "Warning",
            "ClaimLost",
            f"Bound claim has lost its PersistentVolume ({message}). Data on the volume is lost!",
        )

    def _waiting(self, pvc: Any, message: str) -> None:
        key = claim_key(pvc)
        last = self._last_wait_event.get(key)
        if last is not None and time.monotonic() - last < EVENT_QUIET_SECONDS:
            return
        self._last_wait_event[key] = time.monotonic()
        self.events.record(pvc, "Normal", "FailedBinding", message)

    async def _set_volume_phase(self, pv: Any, phase: str, message: str = "") -> Any:
        fresh = copy_of(pv)
        fresh.status.phase = phase
        fresh.status.message = message
        fresh.status.last_phase_transition_time = now_rfc3339()
        return await self.client.update_status(fresh)

    async def _volume_phase(self, pv: Any, phase: str) -> None:
        if pv.status.phase != phase:
            await self._set_volume_phase(pv, phase)

    async def _unbind(self, pv: Any) -> None:
        fresh = copy_of(pv)
        fresh.spec.ClearField("claim_ref")
        fresh.metadata.annotations.pop(BOUND_BY_CONTROLLER, None)
        pv = await self.client.update(fresh)
        await self._set_volume_phase(pv, AVAILABLE)

    async def _reclaim(self, pv: Any, message: str) -> None:
        ref = pv.spec.claim_ref
        # Decide on the live claim, not the cache: deleting a volume whose claim
        # merely lags in the cache would destroy a binding.
        try:
            live = await self.client.get("PersistentVolumeClaim", ref.name, ref.namespace)
            if live.metadata.uid == ref.uid:
                return
        except NotFoundError:
            pass
        policy = pv.spec.persistent_volume_reclaim_policy or "Retain"
        if pv.status.phase != RELEASED and policy != "Recycle":
            pv = await self._set_volume_phase(pv, RELEASED, message)
            self.events.record(pv, "Normal", "VolumeReleased", message)
        if policy == "Retain":
            return
        if policy == "Delete":
            try:
                await self.client.delete(
                    "PersistentVolume", pv.metadata.name, precondition_uid=pv.metadata.uid
                )
            except NotFoundError:
                return
            log.info(
                "deleted volume %s (reclaim policy Delete; its data on disk is kept)",
                pv.metadata.name,
            )
            return
        text = f'reclaim policy "{policy}" is not supported: use Retain or Delete'
        await self._set_volume_phase(pv, FAILED, text)
        self.events.record(pv, "Warning", "VolumeFailedRecycle", text)
