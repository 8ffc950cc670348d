"""The registry of API kinds: what each is called, where it lives, how it is stored."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from orchestrator.api.pb import (
    apps_v1_pb2,
    autoscaling_v2_pb2,
    batch_v1_pb2,
    certificates_v1_pb2,
    coordination_v1_pb2,
    core_v1_pb2,
    networking_v1_pb2,
    rbac_v1_pb2,
    scheduling_v1_pb2,
)


class UnknownKindError(LookupError):
    pass


@dataclass(frozen=True)
class KindInfo:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    message: type[Message]
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    # Kinds with a status subresource: a spec update never writes status and a
    # status update never writes anything else.
    has_status: bool = True
    # Field selectors accepted on list and watch, besides metadata.name/namespace.
    extra_fields: tuple[str, ...] = ()
    fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "fields", ("metadata.name", "metadata.namespace", *self.extra_fields)
        )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def resource(self) -> str:
        """The name kubectl shows, e.g. `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def key(self, namespace: str, name: str) -> str:
        """The store key of one object."""
        if self.namespaced:
            return f"/registry/{self.resource}/{namespace}/{name}"
        return f"/registry/{self.resource}/{name}"

    def prefix(self, namespace: str = "") -> str:
        """The store prefix of every object of this kind (in one namespace)."""
        if self.namespaced and namespace:
            return f"/registry/{self.resource}/{namespace}/"
        return f"/registry/{self.resource}/"

    def new(self) -> Any:
        """An empty object of this kind with apiVersion and kind set (typed
        loosely: callers set kind-specific fields)."""
        obj: Any = self.message()
        obj.api_version = self.api_version
        obj.kind = self.kind
        return obj


_POD_FIELDS = ("spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName")

_ALL: tuple[KindInfo, ...] = (
    KindInfo(
        "Namespace",
        "",
        "v1",
        "namespaces",
        core_v1_pb2.Namespace,
        False,
        ("ns",),
        extra_fields=("status.phase",),
    ),
    KindInfo(
        "Pod", "", "v1", "pods", core_v1_pb2.Pod, short_names=("po",), extra_fields=_POD_FIELDS
    ),
    KindInfo(
        "Service",
        "",
        "v1",
        "services",
        core_v1_pb2.Service,
        short_names=("svc",),
        extra_fields=("spec.clusterIP", "spec.type"),
    ),
    KindInfo(
        "Endpoints",
        "",
        "v1",
        "endpoints",
        core_v1_pb2.Endpoints,
        short_names=("ep",),
        has_status=False,
    ),
    KindInfo(
        "ConfigMap",
        "",
        "v1",
        "configmaps",
        core_v1_pb2.ConfigMap,
        short_names=("cm",),
        has_status=False,
    ),
    KindInfo(
        "Secret", "", "v1", "secrets", core_v1_pb2.Secret, has_status=False, extra_fields=("type",)
    ),
    KindInfo(
        "PersistentVolume",
        "",
        "v1",
        "persistentvolumes",
        core_v1_pb2.PersistentVolume,
        False,
        ("pv",),
    ),
    KindInfo(
        "PersistentVolumeClaim",
        "",
        "v1",
        "persistentvolumeclaims",
        core_v1_pb2.PersistentVolumeClaim,
        short_names=("pvc",),
    ),
    KindInfo(
        "ServiceAccount",
        "",
        "v1",
        "serviceaccounts",
        core_v1_pb2.ServiceAccount,
        short_names=("sa",),
        has_status=False,
    ),
    KindInfo(
        "Event",
        "",
        "v1",
        "events",
        core_v1_pb2.Event,
        short_names=("ev",),
        has_status=False,
        extra_fields=(
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "reason",
            "type",
        ),
    ),
    KindInfo(
        "Node",
        "",
        "v1",
        "nodes",
        core_v1_pb2.Node,
        False,
        ("no",),
        extra_fields=("spec.unschedulable",),
    ),
    KindInfo(
        "ResourceQuota",
        "",
        "v1",
        "resourcequotas",
        core_v1_pb2.ResourceQuota,
        short_names=("quota",),
    ),
    KindInfo(
        "LimitRange",
        "",
        "v1",
        "limitranges",
        core_v1_pb2.LimitRange,
        short_names=("limits",),
        has_status=False,
    ),
    KindInfo(
        "Deployment", "apps", "v1", "deployments", apps_v1_pb2.Deployment, short_names=("deploy",)
    ),
    KindInfo(
        "ReplicaSet", "apps", "v1", "replicasets", apps_v1_pb2.ReplicaSet, short_names=("rs",)
    ),
    KindInfo(
        "StatefulSet", "apps", "v1", "statefulsets", apps_v1_pb2.StatefulSet, short_names=("sts",)
    ),
    KindInfo("DaemonSet", "apps", "v1", "daemonsets", apps_v1_pb2.DaemonSet, short_names=("ds",)),
    KindInfo(
        "ControllerRevision",
        "apps",
        "v1",
        "controllerrevisions",
        apps_v1_pb2.ControllerRevision,
        has_status=False,
    ),
    KindInfo("Job", "batch", "v1", "jobs", batch_v1_pb2.Job, short_names=("job",)),
    KindInfo("CronJob", "batch", "v1", "cronjobs", batch_v1_pb2.CronJob, short_names=("cj",)),
    KindInfo(
        "HorizontalPodAutoscaler",
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        autoscaling_v2_pb2.HorizontalPodAutoscaler,
        short_names=("hpa",),
    ),
    KindInfo(
        "Ingress",
        "networking.k8s.io",
        "v1",
        "ingresses",
        networking_v1_pb2.Ingress,
        short_names=("ing",),
    ),
    KindInfo(
        "IngressClass",
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        networking_v1_pb2.IngressClass,
        False,
        has_status=False,
    ),
    KindInfo(
        "NetworkPolicy",
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        networking_v1_pb2.NetworkPolicy,
        short_names=("netpol",),
        has_status=False,
    ),
    KindInfo(
        "Role", "rbac.authorization.k8s.io", "v1", "roles", rbac_v1_pb2.Role, has_status=False
    ),
    KindInfo(
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        rbac_v1_pb2.ClusterRole,
        False,
        has_status=False,
    ),
    KindInfo(
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        rbac_v1_pb2.RoleBinding,
        has_status=False,
    ),
    KindInfo(
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        rbac_v1_pb2.ClusterRoleBinding,
        False,
        has_status=False,
    ),
    KindInfo(
        "Lease", "coordination.k8s.io", "v1", "leases", coordination_v1_pb2.Lease, has_status=False
    ),
    KindInfo(
        "CertificateSigningRequest",
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        certificates_v1_pb2.CertificateSigningRequest,
        False,
        ("csr",),
    ),
    KindInfo(
        "PriorityClass",
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        scheduling_v1_pb2.PriorityClass,
        False,
        ("pc",),
        has_status=False,
    ),
)

KINDS: dict[str, KindInfo] = {k.kind: k for k in _ALL}

_BY_NAME: dict[str, KindInfo] = {}
for _info in _ALL:
    for _name in (_info.kind.lower(), _info.plural, _info.resource, *_info.short_names):
        _BY_NAME.setdefault(_name, _info)


def all_kinds() -> Iterable[KindInfo]:
    return _ALL


def kind_info(kind: str) -> KindInfo:
    """Look up by kind name (`Deployment`)."""
    try:
        return KINDS[kind]
    except KeyError:
        raise UnknownKindError(f'unknown kind "{kind}"') from None


def resolve_resource(name: str) -> KindInfo:
    """Look up by what a user types: `pods`, `pod`, `po`, `Pod`, `deployments.apps`."""
    info = _BY_NAME.get(name.lower()) or KINDS.get(name)
    if info is None:
        raise UnknownKindError(f'the server doesn\'t have a resource type "{name}"')
    return info


def for_manifest(api_version: str, kind: str) -> KindInfo:
    """The kind a manifest declares, checking its apiVersion too."""
    info = KINDS.get(kind)
    if info is None:
        raise UnknownKindError(f'no kind "{kind}" is registered for version "{api_version}"')
    if info.api_version != api_version:
        raise UnknownKindError(
            f'no kind "{kind}" is registered for version "{api_version}" '
            f'(did you mean "{info.api_version}"?)'
        )
    return info
