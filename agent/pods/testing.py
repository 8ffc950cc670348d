"""In-memory stand-ins for the API client, the pod network and mount(8), for
tests of the pod workers without a control plane, root or Docker."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agent.network.hostports import PortMapping
from agent.network.types import PodNetworkStatus
from orchestrator.api.meta import meta, now_rfc3339
from orchestrator.client.client import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    ObjectList,
    WatchEvent,
)

try:  # grpc status codes for the errors' constructors
    import grpc

    _NF = grpc.StatusCode.NOT_FOUND
    _AE = grpc.StatusCode.ALREADY_EXISTS
    _CF = grpc.StatusCode.ABORTED
except ImportError:  # pragma: no cover
    _NF = _AE = _CF = None  # type: ignore[assignment]


class FakeClient:
    """The Client methods the agent uses, over a dict; resourceVersions are checked."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Any] = {}
        self._rv = itertools.count(1)
        self.status_updates: list[Any] = []
        self.deletes: list[tuple[str, str, str, int | None]] = []
        self.conflict_next_status_update = False
        self.namespace = "default"

    def _key(self, kind: str, name: str, namespace: str | None) -> tuple[str, str, str]:
        return (kind, namespace or "", name)

    def put(self, obj: Any) -> Any:
        """Store (create or replace) an object as is, bumping its resourceVersion."""
        m = meta(obj)
        if not m.uid:
            m.uid = f"uid-{m.name}-{next(self._rv)}"
        m.resource_version = str(next(self._rv))
        if not m.creation_timestamp:
            m.creation_timestamp = now_rfc3339()
        self.objects[self._key(obj.kind, m.name, m.namespace)] = _copy(obj)
        return _copy(obj)

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        obj = self.objects.get(self._key(kind, name, namespace))
        if obj is None:
            raise NotFoundError(_NF, f'{kind.lower()} "{name}" not found')
        return _copy(obj)

    async def list(self, kind: str, namespace: str | None = None, **_: Any) -> ObjectList:
        items = [_copy(o) for (k, _ns, _n), o in self.objects.items() if k == kind]
        return ObjectList(items, str(next(self._rv)))

    async def create(self, obj: Any) -> Any:
        m = meta(obj)
        if self._key(obj.kind, m.name, m.namespace) in self.objects:
            raise AlreadyExistsError(_AE, f'{obj.kind} "{m.name}" already exists')
        return self.put(obj)

    async def update(self, obj: Any) -> Any:
        m = meta(obj)
        key = self._key(obj.kind, m.name, m.namespace)
        current = self.objects.get(key)
        if current is None:
            raise NotFoundError(_NF, f'{obj.kind} "{m.name}" not found')
        if m.resource_version and m.resource_version != meta(current).resource_version:
            raise ConflictError(_CF, "the object has been modified")
        return self.put(obj)

    async def update_status(self, obj: Any) -> Any:
        m = meta(obj)
        key = self._key(obj.kind, m.name, m.namespace)
        current = self.objects.get(key)
        if current is None:
            raise NotFoundError(_NF, f'{obj.kind} "{m.name}" not found')
        if self.conflict_next_status_update:
            self.conflict_next_status_update = False
            raise ConflictError(_CF, "the object has been modified")
        if m.resource_version and m.resource_version != meta(current).resource_version:
            raise ConflictError(_CF, "the object has been modified")
        updated = _copy(current)
        updated.status.CopyFrom(obj.status)
        self.status_updates.append(_copy(updated))
        return self.put(updated)

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        grace_period: int | None = None,
        precondition_uid: str = "",
        **_: Any,
    ) -> tuple[Any, bool]:
        key = self._key(kind, name, namespace)
        obj = self.objects.get(key)
        if obj is None:
            raise NotFoundError(_NF, f'{kind.lower()} "{name}" not found')
        if precondition_uid and meta(obj).uid != precondition_uid:
            raise ConflictError(_CF, "precondition failed: uid")
        self.deletes.append((kind, namespace or "", name, grace_period))
        del self.objects[key]
        return obj, True

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[WatchEvent]:
        if False:  # pragma: no cover - an empty stream
            yield WatchEvent("ADDED", None, "")
        return

    def events(self) -> builtins.list[Any]:
        return [o for (k, _ns, _n), o in self.objects.items() if k == "Event"]


def _copy(obj: Any) -> Any:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


class FakeNetwork:
    """Hands out 10.244.9.x addresses."""

    def __init__(self, prefix: str = "10.244.9.") -> None:
        self.prefix = prefix
        self.ips: dict[str, str] = {}
        self.netns: dict[str, str] = {}
        self.teardowns: list[str] = []
        self._next = itertools.count(2)
        self.fail_setup = ""
        self.supports_host_ports = True
        self.host_ports: dict[str, tuple[PortMapping, ...]] = {}

    async def setup(
        self, pod_uid: str, netns_path: str, port_mappings: Sequence[PortMapping] = ()
    ) -> PodNetworkStatus:
        if self.fail_setup:
            raise RuntimeError(self.fail_setup)
        if pod_uid not in self.ips:
            self.ips[pod_uid] = f"{self.prefix}{next(self._next)}"
        self.netns[pod_uid] = netns_path
        if port_mappings:
            self.host_ports[pod_uid] = tuple(port_mappings)
        return PodNetworkStatus(ip=self.ips[pod_uid], gateway=f"{self.prefix}1", prefix_len=24)

    async def teardown(self, pod_uid: str, netns_path: str | None) -> None:
        self.teardowns.append(pod_uid)
        self.host_ports.pop(pod_uid, None)
        self.ips.pop(pod_uid, None)
        self.netns.pop(pod_uid, None)

    def pod_ip(self, pod_uid: str) -> str | None:
        return self.ips.get(pod_uid)


class FakeMounter:
    def __init__(self) -> None:
        self.mounted: dict[str, int | None] = {}

    def mount_tmpfs(self, target: str, size_bytes: int | None) -> None:
        self.mounted[target] = size_bytes

    def unmount(self, target: str) -> None:
        self.mounted.pop(target, None)

    def is_mounted(self, target: str) -> bool:
        return target in self.mounted


def make_pod(manifest: dict[str, Any], *, uid: str = "", node_name: str = "node-1") -> Any:
    """A Pod from a manifest with the defaults the apiserver would have applied."""
    from orchestrator.api.codec import from_dict

    data = {"apiVersion": "v1", "kind": "Pod", **manifest}
    data.setdefault("metadata", {}).setdefault("namespace", "default")
    pod: Any = from_dict(data)
    if uid:
        pod.metadata.uid = uid
    elif not pod.metadata.uid:
        pod.metadata.uid = f"uid-{pod.metadata.name}"
    spec = pod.spec
    if not spec.node_name:
        spec.node_name = node_name
    if not spec.restart_policy:
        spec.restart_policy = "Always"
    if not spec.dns_policy:
        spec.dns_policy = "ClusterFirst"
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = 30
    for c in (*spec.init_containers, *spec.containers):
        if not c.image_pull_policy:
            c.image_pull_policy = "IfNotPresent"
        for name in ("liveness_probe", "readiness_probe", "startup_probe"):
            if c.HasField(name):
                probe = getattr(c, name)
                if not probe.timeout_seconds:
                    probe.timeout_seconds = 1
                if not probe.period_seconds:
                    probe.period_seconds = 10
                if not probe.success_threshold:
                    probe.success_threshold = 1
                if not probe.failure_threshold:
                    probe.failure_threshold = 3
    if not pod.status.phase:
        pod.status.phase = "Pending"
    return pod
