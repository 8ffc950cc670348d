"""Admission checks that look at other objects (quota, priority classes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from orchestrator.api.codec import FieldError
from orchestrator.api.kinds import kind_info
from orchestrator.apiserver.errors import Invalid

if TYPE_CHECKING:
    from orchestrator.apiserver.cache import WatchCache

# Built in, as in Kubernetes.
SYSTEM_PRIORITY_CLASSES = {
    "system-cluster-critical": 2000000000,
    "system-node-critical": 2000001000,
}


async def check_quota_and_policy(obj: Message, cache: WatchCache) -> None:
    o: Any = obj
    if obj.kind == "Pod" and o.spec.priority_class_name:  # type: ignore[attr-defined]
        name = o.spec.priority_class_name
        pc = cache.get(kind_info("PriorityClass"), "", name)
        if pc is None and name not in SYSTEM_PRIORITY_CLASSES:
            raise Invalid(
                f'pods "{o.metadata.name}"',
                [
                    FieldError(
                        "spec.priorityClassName", f'no PriorityClass with name "{name}" was found'
                    )
                ],
            )
        value = SYSTEM_PRIORITY_CLASSES.get(name)
        if pc is not None:
            value = pc.decode().value  # type: ignore[attr-defined]
        if value is not None:
            o.spec.priority = value
