"""Server-owned fields set on create, whatever the client sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from orchestrator.api.meta import now_rfc3339
from orchestrator.apiserver.admission.default_tolerations import add_default_tolerations

if TYPE_CHECKING:
    from orchestrator.apiserver.registry import UserInfo

# Storage in-use protection: the volume-protection controller removes these once
# no pod uses the claim / no live claim is bound to the volume.
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"


def prepare_create(obj: Message, user: UserInfo) -> None:
    kind = obj.kind  # type: ignore[attr-defined]
    o: Any = obj
    if kind == "CertificateSigningRequest":
        # Who asked is recorded by the server: approvers trust these fields.
        o.spec.username = user.name
        o.spec.uid = user.uid
        del o.spec.groups[:]
        o.spec.groups.extend(user.groups)
    elif kind == "Pod":
        o.ClearField("status")
        o.status.phase = "Pending"
        add_default_tolerations(o)
    elif kind in ("PersistentVolumeClaim", "PersistentVolume"):
        finalizer = PVC_PROTECTION if kind == "PersistentVolumeClaim" else PV_PROTECTION
        if finalizer not in o.metadata.finalizers:
            o.metadata.finalizers.append(finalizer)


def normalize(obj: Message) -> None:
    """Rewrites that apply to every write, create or update."""
    o: Any = obj
    if obj.kind == "Secret" and o.string_data:  # type: ignore[attr-defined]
        # stringData is write-only sugar for data, as in Kubernetes.
        for key, value in o.string_data.items():
            o.data[key] = value.encode()
        o.ClearField("string_data")


def prepare_update(new: Message, old: Message) -> None:
    """Fields an update may not touch are carried over from the stored object."""
    n: Any = new
    o: Any = old
    if new.kind == "CertificateSigningRequest":  # type: ignore[attr-defined]
        # The request and who made it are fixed once submitted (Kubernetes'
        # CSR strategy does the same), so approvers can trust them.
        n.spec.CopyFrom(o.spec)
    elif new.kind == "Service":  # type: ignore[attr-defined]
        _keep_allocated_service_values(n, o)
    elif new.kind == "Pod" and n.spec.node_name and not o.spec.node_name:  # type: ignore[attr-defined]
        _mark_scheduled(n)


def _mark_scheduled(pod: Any) -> None:
    """Binding (the update that sets nodeName) also records PodScheduled=True,
    as Kubernetes' binding subresource does: one write, not two."""
    for cond in pod.status.conditions:
        if cond.type == "PodScheduled":
            break
    else:
        cond = pod.status.conditions.add(type="PodScheduled")
    if cond.status != "True":
        cond.status = "True"
        cond.reason = ""
        cond.message = ""
        cond.last_transition_time = now_rfc3339()


def _keep_allocated_service_values(new: Any, old: Any) -> None:
    """An update that leaves the allocated clusterIP or nodePorts empty keeps
    them (kubectl apply of a manifest without them must not fail or free them)."""
    if not new.spec.cluster_ip and old.spec.cluster_ip:
        new.spec.cluster_ip = old.spec.cluster_ip
        del new.spec.cluster_ips[:]
        new.spec.cluster_ips.extend(old.spec.cluster_ips)
    if new.spec.type not in ("NodePort", "LoadBalancer"):
        return
    old_ports = {(p.port, p.protocol or "TCP"): p.node_port for p in old.spec.ports}
    for port in new.spec.ports:
        if not port.node_port:
            port.node_port = old_ports.get((port.port, port.protocol or "TCP"), 0)
