"""PodInfo: everything the plugins read from a pod, extracted once.

Reading protobuf fields is slow next to reading Python attributes, and the
same pod is looked at against thousands of nodes (the incoming pod) or by
thousands of cycles (a pod already placed). So a pod is turned into a
PodInfo once, when it enters the queue or the cache, and the plugins only
ever touch the PodInfo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.api.quantity import QuantityError
from orchestrator.api.selectors import (
    LabelSelector,
    Requirement,
    SelectorError,
    selector_from_match,
)
from orchestrator.scheduler.resources import Requests, pod_requests
from orchestrator.scheduler.taints import Toleration, tolerations_from

# HostPort (ip, protocol, port); "0.0.0.0" stands for every address.
HostPort = tuple[str, str, int]
WILDCARD_IP = "0.0.0.0"

# The weight existing pods' *required* affinity terms get in scoring
# (Kubernetes' hardPodAffinityWeight default).
HARD_POD_AFFINITY_WEIGHT = 1


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A PodAffinityTerm, resolved: whom it selects and over which topology."""

    selector: LabelSelector | None  # None: a nil selector, matches no pod
    namespaces: frozenset[str] | None  # None: every namespace
    topology_key: str
    weight: int = 0

    def matches(self, pod: PodInfo) -> bool:
        if self.selector is None:
            return False
        if self.namespaces is not None and pod.namespace not in self.namespaces:
            return False
        return self.selector.matches(pod.labels)


@dataclass(slots=True)
class SpreadConstraint:
    """A TopologySpreadConstraint with its selector resolved."""

    max_skew: int
    topology_key: str
    hard: bool  # whenUnsatisfiable DoNotSchedule
    selector: LabelSelector | None
    min_domains: int


@dataclass(slots=True)
class PodInfo:
    pod: Any  # the Pod message; never mutated
    key: str
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    scheduler_name: str
    node_name: str
    priority: int
    created: str  # RFC 3339, orders equal priorities (seconds resolution)
    requests: Requests
    non_zero: Requests  # requests with scoring defaults for unset cpu/memory
    host_ports: tuple[HostPort, ...]
    tolerations: tuple[Toleration, ...]
    node_selector: dict[str, str]
    images: tuple[str, ...]
    owner_uid: str  # the controller owner's uid, "" when none
    terminating: bool
    affinity: tuple[AffinityTerm, ...] = ()
    anti_affinity: tuple[AffinityTerm, ...] = ()
    preferred_affinity: tuple[AffinityTerm, ...] = ()
    preferred_anti_affinity: tuple[AffinityTerm, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    # The names of the PersistentVolumeClaims its volumes use (in its namespace).
    claims: tuple[str, ...] = ()
    # Why the pod cannot be scheduled at all (a bad quantity or selector), or "".
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_affinity(self) -> bool:
        return bool(
            self.affinity
            or self.anti_affinity
            or self.preferred_affinity
            or self.preferred_anti_affinity
        )


def label_selector(pb_selector: Any) -> LabelSelector:
    return selector_from_match(
        dict(pb_selector.match_labels),
        [(e.key, e.operator, tuple(e.values)) for e in pb_selector.match_expressions],
    )


def _with_label_keys(
    selector: LabelSelector, labels: dict[str, str], match: Any, mismatch: Any
) -> LabelSelector:
    # matchLabelKeys / mismatchLabelKeys: "the same (or another) value as mine".
    extra = [Requirement(k, "in", (labels[k],)) for k in match if k in labels]
    extra += [Requirement(k, "notin", (labels[k],)) for k in mismatch if k in labels]
    if not extra:
        return selector
    return LabelSelector(selector.requirements + tuple(extra))


def affinity_term(
    term: Any, pod_namespace: str, labels: dict[str, str], weight: int = 0
) -> AffinityTerm:
    selector: LabelSelector | None = None
    if term.HasField("label_selector"):
        selector = _with_label_keys(
            label_selector(term.label_selector),
            labels,
            term.match_label_keys,
            term.mismatch_label_keys,
        )
    namespaces: frozenset[str] | None = frozenset(term.namespaces)
    if term.HasField("namespace_selector"):
        ns_sel = term.namespace_selector
        if not ns_sel.match_labels and not ns_sel.match_expressions:
            namespaces = None  # an empty namespaceSelector selects every namespace
        # A non-empty namespaceSelector needs Namespace labels, which this
        # scheduler does not watch; the listed namespaces still apply.
    if namespaces is not None and not namespaces:
        namespaces = frozenset((pod_namespace,))
    return AffinityTerm(selector, namespaces, term.topology_key, weight)


def _spread_constraints(spec: Any, labels: dict[str, str]) -> tuple[SpreadConstraint, ...]:
    out = []
    for c in spec.topology_spread_constraints:
        selector: LabelSelector | None = None
        if c.HasField("label_selector"):
            selector = _with_label_keys(
                label_selector(c.label_selector), labels, c.match_label_keys, ()
            )
        out.append(
            SpreadConstraint(
                max_skew=c.max_skew or 1,
                topology_key=c.topology_key,
                hard=c.when_unsatisfiable != "ScheduleAnyway",
                selector=selector,
                min_domains=c.min_domains if c.HasField("min_domains") else 1,
            )
        )
    return tuple(out)


def _host_ports(spec: Any) -> tuple[HostPort, ...]:
    ports = []
    for c in (*spec.init_containers, *spec.containers):
        for p in c.ports:
            if p.host_port > 0:
                ports.append((p.host_ip or WILDCARD_IP, p.protocol or "TCP", p.host_port))
    return tuple(ports)


def _claim_names(spec: Any) -> tuple[str, ...]:
    names = [
        v.persistent_volume_claim.claim_name
        for v in spec.volumes
        if v.HasField("persistent_volume_claim")
    ]
    return tuple(dict.fromkeys(names))  # once each, in order


def normalized_image(image: str) -> str:
    """As ImageLocality compares images: a name without tag or digest means :latest."""
    last = image.rsplit("/", 1)[-1]
    if ":" in last or "@" in image:
        return image
    return image + ":latest"


def _controller_uid(m: Any) -> str:
    for ref in m.owner_references:
        if ref.controller:
            return str(ref.uid)
    return ""


def pod_info(pod: Any) -> PodInfo:
    """Extract a PodInfo; problems become `error` rather than exceptions, so one
    bad pod is reported as unschedulable instead of stopping the scheduler."""
    m = pod.metadata
    spec = pod.spec
    labels = dict(m.labels)
    namespace = m.namespace
    error = ""
    try:
        requests = pod_requests(spec)
        non_zero = pod_requests(spec, non_zero=True)
    except QuantityError as exc:
        requests, non_zero = Requests(), Requests()
        error = f"pod {namespace}/{m.name} has an invalid resource request: {exc}"
    info = PodInfo(
        pod=pod,
        key=f"{namespace}/{m.name}",
        namespace=namespace,
        name=m.name,
        uid=m.uid,
        labels=labels,
        scheduler_name=spec.scheduler_name or "default-scheduler",
        node_name=spec.node_name,
        priority=spec.priority if spec.HasField("priority") else 0,
        created=m.creation_timestamp,
        requests=requests,
        non_zero=non_zero,
        host_ports=_host_ports(spec),
        tolerations=tolerations_from(spec.tolerations),
        node_selector=dict(spec.node_selector),
        images=tuple(normalized_image(c.image) for c in (*spec.init_containers, *spec.containers)),
        owner_uid=_controller_uid(m),
        terminating=bool(m.deletion_timestamp),
        claims=_claim_names(spec),
        error=error,
    )
    try:
        _fill_affinity(info, spec, namespace, labels)
        info.spread = _spread_constraints(spec, labels)
    except SelectorError as exc:
        info.error = info.error or f"pod {info.key} has an invalid label selector: {exc}"
    return info


def _fill_affinity(info: PodInfo, spec: Any, namespace: str, labels: dict[str, str]) -> None:
    if not spec.HasField("affinity"):
        return
    aff = spec.affinity
    if aff.HasField("pod_affinity"):
        pa = aff.pod_affinity
        info.affinity = tuple(
            affinity_term(t, namespace, labels)
            for t in pa.required_during_scheduling_ignored_during_execution
        )
        info.preferred_affinity = tuple(
            affinity_term(w.pod_affinity_term, namespace, labels, w.weight)
            for w in pa.preferred_during_scheduling_ignored_during_execution
        )
    if aff.HasField("pod_anti_affinity"):
        pa = aff.pod_anti_affinity
        info.anti_affinity = tuple(
            affinity_term(t, namespace, labels)
            for t in pa.required_during_scheduling_ignored_during_execution
        )
        info.preferred_anti_affinity = tuple(
            affinity_term(w.pod_affinity_term, namespace, labels, w.weight)
            for w in pa.preferred_during_scheduling_ignored_during_execution
        )
