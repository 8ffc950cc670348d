"""What every workload controller does with a pod template: stamp out a Pod
owned by its controller, and tell which pods a controller owns.

Kept apart from any one controller so ReplicaSets, StatefulSets, DaemonSets
and Jobs make pods the same way: labels, annotations and spec copied from the
template, one controlling ownerReference (blockOwnerDeletion, as Kubernetes
sets it so foreground deletion waits for the pods).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from google.protobuf import json_format

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.api.pb import meta_pb2


def controller_ref(owner: Any) -> Any:
    """The controlling ownerReference pointing at owner."""
    ref = meta_pb2.OwnerReference()
    ref.api_version = owner.api_version
    ref.kind = owner.kind
    ref.name = owner.metadata.name
    ref.uid = owner.metadata.uid
    ref.controller = True
    ref.block_owner_deletion = True
    return ref


def controller_of(obj: Any) -> Any | None:
    """obj's controlling ownerReference, or None."""
    for ref in obj.metadata.owner_references:
        if ref.controller:
            return ref
    return None


def is_controlled_by(obj: Any, owner: Any) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref.uid == owner.metadata.uid


def pod_from_template(
    template: Any,
    owner: Any,
    *,
    name: str = "",
    generate_name: str = "",
    extra_labels: dict[str, str] | None = None,
) -> Any:
    """A new Pod (not yet created) from a PodTemplateSpec, controlled by owner."""
    pod = core.Pod(api_version="v1", kind="Pod")
    pod.metadata.namespace = owner.metadata.namespace
    if name:
        pod.metadata.name = name
    else:
        pod.metadata.generate_name = generate_name or f"{owner.metadata.name}-"
    pod.metadata.labels.update(template.metadata.labels)
    if extra_labels:
        pod.metadata.labels.update(extra_labels)
    pod.metadata.annotations.update(template.metadata.annotations)
    pod.metadata.finalizers.extend(template.metadata.finalizers)
    pod.metadata.owner_references.append(controller_ref(owner))
    pod.spec.CopyFrom(template.spec)
    return pod


def template_hash(template: Any, collision_count: int = 0) -> str:
    """A short, stable hash of a pod template (the pod-template-hash label):
    equal templates give equal hashes across processes and restarts."""
    doc = json_format.MessageToDict(template, preserving_proto_field_name=True)
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    if collision_count:
        data += f"#{collision_count}"
    digest = hashlib.sha256(data.encode()).hexdigest()
    # Kubernetes uses a safe-encoded fnv32; 10 hex digits of sha256 are as unique.
    return digest[:10]
