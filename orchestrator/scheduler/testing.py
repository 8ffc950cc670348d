"""Builders for Node and Pod messages with just the fields scheduling reads.

Shared by the scheduler's unit tests, integration tests and benchmark (the
benchmark's hollow nodes are these Nodes), so that they all describe nodes
and pods the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from orchestrator.api.pb import core_v1_pb2 as core


def make_node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: int = 110,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[tuple[str, str, str]] = (),
    ready: str | None = "True",
    unschedulable: bool = False,
    images: Sequence[tuple[Sequence[str], int]] = (),
) -> core.Node:
    """A Node as an agent would report it: capacity = allocatable, a Ready
    condition (None: no conditions at all), taints as (key, value, effect)."""
    node = core.Node(api_version="v1", kind="Node")
    node.metadata.name = name
    node.metadata.labels["kubernetes.io/hostname"] = name
    node.metadata.labels.update(labels or {})
    node.spec.unschedulable = unschedulable
    for key, value, effect in taints:
        node.spec.taints.add(key=key, value=value, effect=effect)
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    node.status.capacity.update(resources)
    node.status.allocatable.update(resources)
    if ready is not None:
        node.status.conditions.add(type="Ready", status=ready, reason="KubeletReady")
    for names, size in images:
        node.status.images.add(names=list(names), size_bytes=float(size))
    return node


def make_pod(
    name: str,
    namespace: str = "default",
    *,
    cpu: str | None = None,
    memory: str | None = None,
    labels: Mapping[str, str] | None = None,
    scheduler_name: str = "default-scheduler",
    priority: int | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    host_ports: Sequence[int] = (),
    image: str = "busybox:1.36",
    affinity: Mapping[str, Any] | None = None,
    spread: Sequence[Mapping[str, Any]] = (),
    owner_uid: str = "",
    node_name: str = "",
    created: str = "",
    uid: str = "",
) -> core.Pod:
    """A one-container pod. `affinity` and `spread` take the Kubernetes JSON
    form (as in a manifest) of spec.affinity and spec.topologySpreadConstraints."""
    pod = core.Pod(api_version="v1", kind="Pod")
    m = pod.metadata
    m.name = name
    m.namespace = namespace
    m.uid = uid or f"uid-{namespace}-{name}"
    m.labels.update(labels or {})
    if created:
        m.creation_timestamp = created
    if owner_uid:
        m.owner_references.add(
            api_version="apps/v1", kind="ReplicaSet", name="rs", uid=owner_uid, controller=True
        )
    spec = pod.spec
    spec.scheduler_name = scheduler_name
    spec.node_name = node_name
    if priority is not None:
        spec.priority = priority
    spec.node_selector.update(node_selector or {})
    for t in tolerations:
        json_format.ParseDict(dict(t), spec.tolerations.add())
    if affinity:
        json_format.ParseDict(dict(affinity), spec.affinity)
    for c in spread:
        json_format.ParseDict(dict(c), spec.topology_spread_constraints.add())
    container = spec.containers.add(name="app", image=image)
    if cpu is not None:
        container.resources.requests["cpu"] = cpu
    if memory is not None:
        container.resources.requests["memory"] = memory
    for port in host_ports:
        container.ports.add(container_port=port, host_port=port, protocol="TCP")
    return pod
