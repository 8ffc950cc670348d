"""Admission checks that look at other objects: priority classes, LimitRanges
and ResourceQuotas, in Kubernetes' plugin order (Priority, LimitRanger,
ResourceQuota: a quota sees the requests a LimitRange filled in)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from orchestrator.api.codec import FieldError
from orchestrator.api.kinds import UnknownKindError, kind_info
from orchestrator.apiserver.admission import limitrange
from orchestrator.apiserver.admission.quota import check_quota
from orchestrator.apiserver.cache import Filter
from orchestrator.apiserver.errors import Forbidden, Invalid

if TYPE_CHECKING:
    from orchestrator.apiserver.cache import WatchCache

# Built in, as in Kubernetes.
SYSTEM_PRIORITY_CLASSES = {
    "system-cluster-critical": 2000000000,
    "system-node-critical": 2000001000,
}


async def check_quota_and_policy(obj: Message, cache: WatchCache) -> None:
    """On create: resolve the priority class, apply and enforce LimitRanges,
    then refuse what would exceed a ResourceQuota."""
    if obj.kind == "Pod":  # type: ignore[attr-defined]
        _priority(obj, cache)
        _limit_ranges(obj, cache)
    check_quota(obj, cache)


def _priority(obj: Message, cache: WatchCache) -> None:
    o: Any = obj
    if not o.spec.priority_class_name:
        return
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


def limit_items(cache: WatchCache, namespace: str) -> list[limitrange.LimitItem]:
    """The LimitRange items of a namespace, oldest-named first. None while the
    API has no LimitRange kind."""
    try:
        info = kind_info("LimitRange")
    except UnknownKindError:
        return []
    items: list[limitrange.LimitItem] = []
    for cached in cache.list(info, Filter(namespace=namespace)):
        items.extend(limitrange.limit_items(cached.decode()))
    return items


def _limit_ranges(pod: Message, cache: WatchCache) -> None:
    o: Any = pod
    items = limit_items(cache, o.metadata.namespace)
    if not items:
        return
    if limitrange.apply_defaults(o, items):
        # Imported here: validation imports this module (for the system priority classes).
        from orchestrator.apiserver.admission.validation import validate

        # The defaults may not fit what the pod set itself (a default limit
        # under its own request): refused as the pod's own error would be.
        errors = validate(pod, None)
        if errors:
            raise Invalid(f'pods "{o.metadata.name}"', errors)
    errs = limitrange.violations(o, items)
    if errs:
        raise Forbidden(
            f'pods "{o.metadata.name}" is forbidden: {limitrange.violation_message(errs)}'
        )
