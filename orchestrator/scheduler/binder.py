"""Binding and the PodScheduled condition: the scheduler's only writes.

Binding goes through the pods/binding subresource: the apiserver sets
spec.nodeName and PodScheduled=True on the stored pod if it is still the
same pod and unbound, so a status write by someone else meanwhile does not
conflict, and nothing but names travels.
"""

from __future__ import annotations

from typing import Any

from orchestrator.api.meta import now_rfc3339
from orchestrator.client.client import ConflictError

CONDITION = "PodScheduled"
REASON_UNSCHEDULABLE = "Unschedulable"
MAX_CONFLICT_RETRIES = 5


class BindError(Exception):
    """The pod cannot be bound to the chosen node (and retrying will not help)."""


def _copy(pod: Any) -> Any:
    obj = type(pod)()
    obj.CopyFrom(pod)
    return obj


def scheduled_condition(pod: Any) -> Any | None:
    for c in pod.status.conditions:
        if c.type == CONDITION:
            return c
    return None


def needs_condition(pod: Any, status: str, reason: str, message: str) -> bool:
    c = scheduled_condition(pod)
    return c is None or (c.status, c.reason, c.message) != (status, reason, message)


def with_condition(pod: Any, status: str, reason: str, message: str) -> Any:
    """A copy of pod whose PodScheduled condition says status/reason/message;
    the transition time moves only when the status does."""
    obj = _copy(pod)
    cond = scheduled_condition(obj)
    now = now_rfc3339()
    if cond is None:
        cond = obj.status.conditions.add(type=CONDITION)
    if cond.status != status:
        cond.last_transition_time = now
    cond.status = status
    cond.reason = reason
    cond.message = message
    cond.last_probe_time = ""
    return obj


async def bind(client: Any, pod: Any, node: str) -> Any:
    """Bind pod to node through the pods/binding subresource; returns the bound
    pod. Raises BindError when the pod was bound elsewhere, replaced or is
    being deleted, and the client's errors (NotFoundError when deleted)
    otherwise. A bind whose reply was lost and is found done counts as done."""
    m = pod.metadata
    try:
        return await client.bind(m.namespace, m.name, node, uid=m.uid)
    except ConflictError as exc:
        fresh = await client.get("Pod", m.name, m.namespace)
        if fresh.metadata.uid == m.uid and fresh.spec.node_name == node:
            return fresh
        raise BindError(exc.message) from None


async def write_condition(client: Any, pod: Any, status: str, reason: str, message: str) -> bool:
    """Write the PodScheduled condition through the status subresource, only
    if it differs; False when there was nothing to write (or the pod is gone
    or bound meanwhile, for a False condition)."""
    m = pod.metadata
    current = pod
    for _ in range(MAX_CONFLICT_RETRIES):
        if not needs_condition(current, status, reason, message):
            return False
        try:
            await client.update_status(with_condition(current, status, reason, message))
            return True
        except ConflictError:
            current = await client.get("Pod", m.name, m.namespace)
            if current.metadata.uid != m.uid:
                return False
            if status == "False" and current.spec.node_name:
                return False  # bound meanwhile: "unschedulable" would be stale
    return False
