"""Which nodes a DaemonSet's pod belongs on, and the pod made for one node.

A node is eligible when the pod template's nodeSelector and required node
affinity match it and every NoSchedule/NoExecute taint on it is tolerated,
counting the tolerations every daemon pod gets (not-ready and unreachable
NoExecute; unschedulable and disk/memory/pid pressure NoSchedule), so that
cordoned or struggling nodes keep their daemons. An existing pod may stay on
a node whose new NoSchedule taint it does not tolerate; a NoExecute one
evicts it.

Daemon pods are placed by this controller, not the scheduler: each gets
spec.nodeName directly (as Kubernetes did before 1.12), plus the required
node-affinity term `metadata.name In [node]` that Kubernetes ≥1.12 uses, so a
scheduler that does look at the pod agrees with where it already is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.controllers.history import REVISION_HASH_LABEL
from orchestrator.controllers.podtemplate import pod_from_template

NAME_FIELD = "metadata.name"
TEMPLATE_GENERATION_LABEL = "pod-template-generation"

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
PID_PRESSURE = "node.kubernetes.io/pid-pressure"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"


def daemon_tolerations(host_network: bool) -> list[core.Toleration]:
    """The tolerations Kubernetes adds to every daemon pod."""
    wanted = [
        (NOT_READY, "NoExecute"),
        (UNREACHABLE, "NoExecute"),
        (DISK_PRESSURE, "NoSchedule"),
        (MEMORY_PRESSURE, "NoSchedule"),
        (PID_PRESSURE, "NoSchedule"),
        (UNSCHEDULABLE, "NoSchedule"),
    ]
    if host_network:
        wanted.append((NETWORK_UNAVAILABLE, "NoSchedule"))
    return [core.Toleration(key=k, operator="Exists", effect=e) for k, e in wanted]


def with_daemon_tolerations(spec: core.PodSpec) -> None:
    """Add the daemon tolerations the spec does not already have (a user's own
    toleration for the same key and effect, e.g. with tolerationSeconds, wins)."""
    have = {(t.key, t.effect) for t in spec.tolerations}
    for tol in daemon_tolerations(spec.host_network):
        if (tol.key, tol.effect) not in have:
            spec.tolerations.append(tol)


# -- matching --------------------------------------------------------------------------


def tolerates(toleration: Any, taint: Any) -> bool:
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    operator = toleration.operator or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and toleration.value == taint.value


def untolerated(taints: Iterable[Any], tolerations: Sequence[Any], effects: set[str]) -> list[Any]:
    return [
        taint
        for taint in taints
        if taint.effect in effects and not any(tolerates(t, taint) for t in tolerations)
    ]


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def requirement_matches(req: Any, value: str | None) -> bool:
    """One NodeSelectorRequirement against a label (or field) value; None when
    the node has no such label."""
    op = req.operator
    if op == "In":
        return value is not None and value in req.values
    if op == "NotIn":
        return value is None or value not in req.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(req.values) == 1:
        have, bound = _int_or_none(value), _int_or_none(req.values[0])
        if have is None or bound is None:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def term_matches(term: Any, node: Any) -> bool:
    """A NodeSelectorTerm: every requirement holds; an empty term matches nothing."""
    if not term.match_expressions and not term.match_fields:
        return False
    labels = node.metadata.labels
    for req in term.match_expressions:
        if not requirement_matches(req, labels.get(req.key)):
            return False
    for req in term.match_fields:
        value = node.metadata.name if req.key == NAME_FIELD else None
        if not requirement_matches(req, value):
            return False
    return True


def node_selector_matches(selector: Any, node: Any) -> bool:
    """A NodeSelector: any of its terms matches."""
    return any(term_matches(t, node) for t in selector.node_selector_terms)


def placement_matches(spec: Any, node: Any) -> bool:
    """nodeName, nodeSelector and required node affinity, as the scheduler reads them."""
    if spec.node_name and spec.node_name != node.metadata.name:
        return False
    labels = node.metadata.labels
    if any(labels.get(k) != v for k, v in spec.node_selector.items()):
        return False
    affinity = spec.affinity.node_affinity
    if affinity.HasField("required_during_scheduling_ignored_during_execution"):
        return node_selector_matches(
            affinity.required_during_scheduling_ignored_during_execution, node
        )
    return True


@dataclass(frozen=True)
class Fit:
    should_run: bool  # a pod belongs here: create one if missing
    may_stay: bool  # an existing pod may keep running here
    reason: str = ""


def node_fit(template: Any, node: Any) -> Fit:
    """Whether a daemon pod from template belongs on node. spec.unschedulable
    does not matter: daemon pods tolerate the unschedulable taint."""
    if node.metadata.deletion_timestamp:
        return Fit(False, False, "node is being deleted")
    spec = core.PodSpec()
    spec.CopyFrom(template.spec)
    with_daemon_tolerations(spec)
    if not placement_matches(spec, node):
        return Fit(False, False, "node does not match the pod's node selector or affinity")
    taints = node.spec.taints
    evicting = untolerated(taints, spec.tolerations, {"NoExecute"})
    if evicting:
        return Fit(False, False, f"untolerated taint {evicting[0].key}:NoExecute")
    blocking = untolerated(taints, spec.tolerations, {"NoSchedule"})
    if blocking:
        return Fit(False, True, f"untolerated taint {blocking[0].key}:NoSchedule")
    return Fit(True, True)


def node_fits(template: Any, nodes: Iterable[Any]) -> dict[str, Fit]:
    return {node.metadata.name: node_fit(template, node) for node in nodes}


# -- the pod -----------------------------------------------------------------------


def daemon_pod_name(ds_name: str, node_name: str, revision_hash: str) -> str:
    """Deterministic per (node, revision): a create repeated from a stale cache
    fails with AlreadyExists instead of putting a second pod on the node."""
    digest = hashlib.sha256(f"{node_name}\x00{revision_hash}".encode()).hexdigest()[:8]
    return f"{ds_name[:244]}-{digest}"


def pin_to_node(spec: core.PodSpec, node_name: str) -> None:
    """spec.nodeName plus a required affinity to exactly this node (replacing
    the template's required terms, which the controller has already checked)."""
    spec.node_name = node_name
    required = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    del required.node_selector_terms[:]
    term = required.node_selector_terms.add()
    term.match_fields.add(key=NAME_FIELD, operator="In", values=[node_name])


def new_daemon_pod(ds: Any, node_name: str, revision_hash: str) -> core.Pod:
    pod = pod_from_template(
        ds.spec.template,
        ds,
        name=daemon_pod_name(ds.metadata.name, node_name, revision_hash),
        extra_labels={
            REVISION_HASH_LABEL: revision_hash,
            TEMPLATE_GENERATION_LABEL: str(ds.metadata.generation),
        },
    )
    pin_to_node(pod.spec, node_name)
    with_daemon_tolerations(pod.spec)
    return pod
