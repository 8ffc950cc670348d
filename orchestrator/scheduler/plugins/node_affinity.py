"""NodeAffinity: spec.nodeSelector and required node affinity filter nodes;
preferred node affinity scores them.

Required terms are ORed, the requirements inside a term ANDed; a term with
no requirements matches no node. matchFields supports metadata.name only,
as Kubernetes does. Gt and Lt compare the label value as an integer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.scheduler.framework import (
    SKIP_STATUS,
    CycleState,
    Snapshot,
    Status,
    normalize,
)
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

NAME = "NodeAffinity"
REASON = "node(s) didn't match Pod's node affinity/selector"

# A compiled requirement: takes the node's labels and name.
Check = Callable[[dict[str, str], str], bool]
# A term: all of its checks must hold.
Term = tuple[Check, ...]


class NodeAffinityError(ValueError):
    """A node selector requirement that cannot be evaluated."""


def _int(raw: str) -> int | None:
    try:
        return int(raw)
    except ValueError:
        return None


def _label_check(key: str, op: str, values: Sequence[str], where: str) -> Check:
    wanted = frozenset(values)
    if op == "In":
        return lambda labels, _: labels.get(key) in wanted
    if op == "NotIn":
        return lambda labels, _: labels.get(key) not in wanted
    if op == "Exists":
        return lambda labels, _: key in labels
    if op == "DoesNotExist":
        return lambda labels, _: key not in labels
    if op in ("Gt", "Lt"):
        bound = _int(values[0]) if len(values) == 1 else None
        if bound is None:
            raise NodeAffinityError(
                f"{where}: operator {op} needs exactly one integer value, got {list(values)}"
            )
        greater = op == "Gt"

        def compare(labels: dict[str, str], _: str) -> bool:
            have = labels.get(key)
            number = _int(have) if have is not None else None
            if number is None:
                return False
            return number > bound if greater else number < bound

        return compare
    raise NodeAffinityError(
        f"{where}: unknown operator {op!r} (expected In, NotIn, Exists, DoesNotExist, Gt or Lt)"
    )


def _field_check(key: str, op: str, values: Sequence[str], where: str) -> Check:
    if key != "metadata.name":
        raise NodeAffinityError(f"{where}: field {key!r} is not supported (only metadata.name)")
    wanted = frozenset(values)
    if op == "In":
        return lambda _, name: name in wanted
    if op == "NotIn":
        return lambda _, name: name not in wanted
    raise NodeAffinityError(f"{where}: matchFields supports In and NotIn, not {op!r}")


def compile_term(term: Any, where: str) -> Term | None:
    """A NodeSelectorTerm as checks; None for an empty term, which matches nothing."""
    checks = [
        _label_check(r.key, r.operator, tuple(r.values), f"{where}.matchExpressions[{i}]")
        for i, r in enumerate(term.match_expressions)
    ]
    checks += [
        _field_check(r.key, r.operator, tuple(r.values), f"{where}.matchFields[{i}]")
        for i, r in enumerate(term.match_fields)
    ]
    return tuple(checks) if checks else None


def term_matches(term: Term, labels: dict[str, str], name: str) -> bool:
    return all(check(labels, name) for check in term)


class _Required:
    """What a node must satisfy for this pod: the nodeSelector and any one required term."""

    __slots__ = ("selector", "terms")

    def __init__(self, selector: dict[str, str], terms: list[Term] | None) -> None:
        self.selector = tuple(selector.items())
        self.terms = terms  # None: no required affinity

    def matches(self, labels: dict[str, str], name: str) -> bool:
        for key, value in self.selector:
            if labels.get(key) != value:
                return False
        if self.terms is None:
            return True
        return any(term_matches(t, labels, name) for t in self.terms)


def required_for(pod: PodInfo) -> _Required | None:
    """The pod's node constraints, compiled; None when it has none. Cached on the
    PodInfo: a pod retried many times is compiled once."""
    if "node_affinity.required" in pod.extra:
        cached: _Required | None = pod.extra["node_affinity.required"]
        return cached
    spec = pod.pod.spec
    terms: list[Term] | None = None
    na = spec.affinity.node_affinity if spec.HasField("affinity") else None
    if na is not None and na.HasField("required_during_scheduling_ignored_during_execution"):
        where = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        terms = []
        for i, t in enumerate(
            na.required_during_scheduling_ignored_during_execution.node_selector_terms
        ):
            compiled = compile_term(t, f"{where}.nodeSelectorTerms[{i}]")
            if compiled is not None:
                terms.append(compiled)
    result = (
        _Required(pod.node_selector, terms) if (pod.node_selector or terms is not None) else None
    )
    pod.extra["node_affinity.required"] = result
    return result


def preferred_for(pod: PodInfo) -> list[tuple[int, Term]]:
    if "node_affinity.preferred" in pod.extra:
        cached: list[tuple[int, Term]] = pod.extra["node_affinity.preferred"]
        return cached
    spec = pod.pod.spec
    out: list[tuple[int, Term]] = []
    if spec.HasField("affinity"):
        where = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"
        prefs = spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution
        for i, p in enumerate(prefs):
            compiled = compile_term(p.preference, f"{where}[{i}].preference")
            if compiled is not None and p.weight:
                out.append((p.weight, compiled))
    pod.extra["node_affinity.preferred"] = out
    return out


class NodeAffinity:
    name = NAME

    def __init__(self) -> None:
        self._rejected = Status.unresolvable(REASON, plugin=NAME)

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        try:
            required = required_for(pod)
        except NodeAffinityError as exc:
            return Status.unresolvable(f"pod {pod.key}: {exc}", plugin=NAME)
        if required is None:
            return SKIP_STATUS
        state.write(NAME, required)
        return None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        required: _Required = state.read(NAME)
        return None if required.matches(node.labels, node.name) else self._rejected

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        try:
            preferred = preferred_for(pod)
        except NodeAffinityError:
            return None  # PreFilter already reported it
        if not preferred:
            return None
        raw = [
            sum(w for w, term in preferred if term_matches(term, n.labels, n.name)) for n in nodes
        ]
        return normalize(raw)
