"""VolumeBinding: a pod's PersistentVolumeClaims must be bound, and the pod
may only run where their volumes can be reached.

Kubernetes' VolumeBinding for claims that are already bound (pre-bound, or
bound at once by the PersistentVolume binder): there is no dynamic
provisioning and no WaitForFirstConsumer here, so a claim the binder has not
bound yet is waited for, not bound by the scheduler.

PreFilter looks every claim up in the pod's namespace, and its volume, once
per cycle; it rejects the pod when a claim is missing, being deleted or
unbound, or its volume is missing, and compiles the volumes'
spec.nodeAffinity.required terms. Filter then only matches node labels (and
name) against those terms: each volume's terms ORed, the requirements inside
a term ANDed, every volume satisfied. Pods without claims, or whose volumes
have no node affinity (network volumes), skip the Filter altogether.
"""

from __future__ import annotations

from typing import Any

from orchestrator.scheduler.framework import SKIP_STATUS, CycleState, Snapshot, Status
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.plugins.node_affinity import (
    NodeAffinityError,
    Term,
    compile_term,
    term_matches,
)
from orchestrator.scheduler.podinfo import PodInfo

NAME = "VolumeBinding"
REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
REASON_UNBOUND = "pod has unbound immediate PersistentVolumeClaims"
BOUND = "Bound"

# One volume's required node selector: any of its terms must match.
VolumeTerms = tuple[Term, ...]


def volume_terms(pv: Any) -> VolumeTerms | None:
    """pv's compiled spec.nodeAffinity.required terms; None when it has none
    (it can be used from any node). A required selector whose terms are all
    empty matches no node, as in Kubernetes."""
    spec = pv.spec
    if not spec.HasField("node_affinity") or not spec.node_affinity.HasField("required"):
        return None
    where = f'persistentvolume "{pv.metadata.name}": spec.nodeAffinity.required'
    terms = []
    for i, t in enumerate(spec.node_affinity.required.node_selector_terms):
        compiled = compile_term(t, f"{where}.nodeSelectorTerms[{i}]")
        if compiled is not None:
            terms.append(compiled)
    return tuple(terms)


class VolumeBinding:
    name = NAME

    def __init__(self) -> None:
        self._conflict = Status.unresolvable(REASON_NODE_CONFLICT, plugin=NAME)

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        if not pod.claims:
            return SKIP_STATUS
        volumes = snapshot.volumes
        bound: list[str] = []
        unbound = False
        for claim_name in pod.claims:
            pvc = volumes.get_claim(pod.namespace, claim_name)
            if pvc is None:
                return Status.unresolvable(
                    f'persistentvolumeclaim "{claim_name}" not found', plugin=NAME
                )
            if pvc.metadata.deletion_timestamp:
                return Status.unresolvable(
                    f'persistentvolumeclaim "{claim_name}" is being deleted', plugin=NAME
                )
            if pvc.spec.volume_name and pvc.status.phase == BOUND:
                bound.append(pvc.spec.volume_name)
            else:
                unbound = True
        if unbound:
            return Status.unresolvable(REASON_UNBOUND, plugin=NAME)
        required: list[VolumeTerms] = []
        for volume_name in bound:
            pv = volumes.get_volume(volume_name)
            if pv is None:
                return Status.unresolvable(
                    f'persistentvolume "{volume_name}" not found', plugin=NAME
                )
            try:
                terms = volume_terms(pv)
            except NodeAffinityError as exc:
                return Status.unresolvable(str(exc), plugin=NAME)
            if terms is not None:
                required.append(terms)
        if not required:
            return SKIP_STATUS
        state.write(NAME, tuple(required))
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        required: tuple[VolumeTerms, ...] = state.read(NAME)
        labels, name = node.labels, node.name
        for terms in required:
            if not any(term_matches(t, labels, name) for t in terms):
                return self._conflict
        return None

    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
    ) -> list[NodeInfo]:
        required: tuple[VolumeTerms, ...] = state.read(NAME)
        return [
            n
            for n in nodes
            if all(any(term_matches(t, n.labels, n.name) for t in terms) for terms in required)
        ]
