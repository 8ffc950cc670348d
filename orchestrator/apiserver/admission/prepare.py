"""Server-owned fields set on create, whatever the client sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from orchestrator.apiserver.admission.default_tolerations import add_default_tolerations

if TYPE_CHECKING:
    from orchestrator.apiserver.registry import UserInfo


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
