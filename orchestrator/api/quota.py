"""Resource quota arithmetic, as Kubernetes' quota evaluators do it.

Pure functions shared by the apiserver's quota admission and the
resourcequota controller: what one object charges against a quota, which
quotas an object falls under (scopes), the usage of a namespace, whether a
request fits, and Kubernetes' own wording when it does not.

- A pod's compute usage is Kubernetes' PodRequests/PodLimits: the sum over
  its containers, at least the largest init container (restartable
  "sidecar" init containers run alongside and add up), plus the pod's
  overhead. `cpu`/`memory` are the requests' old names.
- Terminal pods (Succeeded, Failed) and pods being deleted charge nothing
  but `count/pods`, which counts every stored pod, as Kubernetes' object
  counts do.
- Services charge `services`, NodePort and LoadBalancer Services one
  `services.nodeports` per port (LoadBalancers with
  allocateLoadBalancerNodePorts=false only the ports with an explicit
  nodePort), LoadBalancers `services.loadbalancers`; claims charge
  `persistentvolumeclaims` and `requests.storage`, also per storage class.
- Every object charges `count/<resource>` (`count/deployments.apps`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from orchestrator.api.kinds import all_kinds, kind_info
from orchestrator.api.quantity import QuantityError, format_bytes, format_quantity, parse_quantity

ResourceList = dict[str, Fraction]

PODS = "pods"
REQUESTS_PREFIX = "requests."
LIMITS_PREFIX = "limits."
STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"

# Kinds whose usage is more than an object count, with the quota resources
# (besides count/<resource>) they charge.
_KIND_RESOURCES: dict[str, tuple[str, ...]] = {
    "Service": ("services", "services.nodeports", "services.loadbalancers"),
    "ConfigMap": ("configmaps",),
    "Secret": ("secrets",),
    "PersistentVolumeClaim": ("persistentvolumeclaims", "requests.storage"),
    "ResourceQuota": ("resourcequotas",),
}
# Quota resources a pod's containers must each declare once a quota tracks
# them (Kubernetes' backward-compatible "validationSet").
_MUST_DECLARE = frozenset(
    {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}
)
_BINARY = ("memory", "storage", "ephemeral-storage")
_TERMINAL = ("Succeeded", "Failed")


def quantity(text: str) -> Fraction:
    """A stored quantity; a malformed one (validation refuses them) counts as zero."""
    try:
        return parse_quantity(text)
    except QuantityError:
        return Fraction(0)


def resource_list(values: Mapping[str, str]) -> ResourceList:
    return {name: quantity(text) for name, text in values.items()}


def add(a: Mapping[str, Fraction], b: Mapping[str, Fraction]) -> ResourceList:
    out = dict(a)
    for name, v in b.items():
        out[name] = out.get(name, Fraction(0)) + v
    return out


def subtract(a: Mapping[str, Fraction], b: Mapping[str, Fraction]) -> ResourceList:
    out = dict(a)
    for name, v in b.items():
        out[name] = out.get(name, Fraction(0)) - v
    return out


def _max_into(into: ResourceList, other: Mapping[str, Fraction]) -> None:
    for name, v in other.items():
        if v > into.get(name, Fraction(0)):
            into[name] = v


def mask(values: Mapping[str, Fraction], names: Iterable[str]) -> ResourceList:
    keep = set(names)
    return {n: v for n, v in values.items() if n in keep}


def charge(new: Mapping[str, Fraction], old: Mapping[str, Fraction] | None = None) -> ResourceList:
    """What a write adds to a namespace's usage: all of a new object's usage,
    or an update's growth over the old object's (never negative); resources
    it does not add to are left out, so they are never checked."""
    out: ResourceList = {}
    for name, v in new.items():
        grown = v - (old or {}).get(name, Fraction(0))
        if grown > 0:
            out[name] = grown
    return out


# -- pods ----------------------------------------------------------------------------


def _sidecar(container: Any) -> bool:
    return container.HasField("restart_policy") and container.restart_policy == "Always"


def _aggregate(spec: Any, field: str) -> ResourceList:
    """Kubernetes' AggregateContainerRequests/Limits for one field
    ("requests" or "limits") of the containers' resources."""
    total: ResourceList = {}
    for c in spec.containers:
        total = add(total, resource_list(getattr(c.resources, field)))
    sidecars: ResourceList = {}
    init: ResourceList = {}
    for c in spec.init_containers:
        own = resource_list(getattr(c.resources, field))
        if _sidecar(c):
            # Runs alongside everything after it, including the main containers.
            total = add(total, own)
            sidecars = add(sidecars, own)
            running = sidecars
        else:
            running = add(own, sidecars)
        _max_into(init, running)
    _max_into(total, init)
    return total


def pod_requests(spec: Any, *, overhead: bool = True) -> ResourceList:
    """What a pod requests in all: containers, init containers, overhead."""
    total = _aggregate(spec, "requests")
    if overhead:
        total = add(total, resource_list(spec.overhead))
    return total


def pod_limits(spec: Any, *, overhead: bool = True) -> ResourceList:
    """A pod's limits; overhead is added only to resources that have a limit."""
    total = _aggregate(spec, "limits")
    if overhead:
        for name, v in resource_list(spec.overhead).items():
            if name in total:
                total[name] += v
    return total


def _extended(name: str) -> bool:
    """Kubernetes' IsExtendedResourceName: a domain-qualified name outside kubernetes.io."""
    if "/" not in name or name.startswith(REQUESTS_PREFIX):
        return False
    domain = name.split("/", 1)[0]
    return not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io"))


def compute_usage(requests: Mapping[str, Fraction], limits: Mapping[str, Fraction]) -> ResourceList:
    """Kubernetes' podComputeUsageHelper: the quota resources that requests and
    limits charge, one pod's worth (`pods` = 1)."""
    out: ResourceList = {PODS: Fraction(1)}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            out[name] = requests[name]
            out[REQUESTS_PREFIX + name] = requests[name]
        if name in limits:
            out[LIMITS_PREFIX + name] = limits[name]
    for name, v in requests.items():
        if name.startswith("hugepages-"):
            out[name] = v
            out[REQUESTS_PREFIX + name] = v
        elif _extended(name):
            out[REQUESTS_PREFIX + name] = v
    return out


def pod_charges_compute(pod: Any) -> bool:
    """Whether a pod still charges compute and `pods`: not finished, not on its way out."""
    return pod.status.phase not in _TERMINAL and not pod.metadata.deletion_timestamp


def pod_usage(pod: Any) -> ResourceList:
    usage: ResourceList = {"count/pods": Fraction(1)}
    if pod_charges_compute(pod):
        usage.update(compute_usage(pod_requests(pod.spec), pod_limits(pod.spec)))
    return usage


def _container_usage(container: Any) -> ResourceList:
    return compute_usage(
        resource_list(container.resources.requests), resource_list(container.resources.limits)
    )


def missing_declarations(pod: Any, tracked: Iterable[str]) -> dict[str, list[str]]:
    """Per quota-tracked compute resource, the containers that do not declare it."""
    required = _MUST_DECLARE.intersection(tracked)
    missing: dict[str, list[str]] = {}
    for c in (*pod.spec.containers, *pod.spec.init_containers):
        declared = _container_usage(c)
        for name in sorted(required - declared.keys()):
            names = missing.setdefault(name, [])
            if c.name not in names:
                names.append(c.name)
    return missing


def missing_message(missing: Mapping[str, list[str]]) -> str:
    """`must specify limits.cpu for: app; requests.cpu for: app,sidecar`."""
    parts = [f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing)]
    return "must specify " + "; ".join(parts)


# -- other kinds ----------------------------------------------------------------------


def service_usage(svc: Any) -> ResourceList:
    usage: ResourceList = {"services": Fraction(1)}
    ports = len(svc.spec.ports)
    if svc.spec.type == "NodePort":
        usage["services.nodeports"] = Fraction(ports)
    elif svc.spec.type == "LoadBalancer":
        usage["services.loadbalancers"] = Fraction(1)
        if (
            svc.spec.HasField("allocate_load_balancer_node_ports")
            and not svc.spec.allocate_load_balancer_node_ports
        ):
            ports = sum(1 for p in svc.spec.ports if p.node_port)
        usage["services.nodeports"] = Fraction(ports)
    return usage


def pvc_usage(pvc: Any) -> ResourceList:
    usage: ResourceList = {"persistentvolumeclaims": Fraction(1)}
    storage = pvc.spec.resources.requests.get("storage")
    if storage is not None:
        usage["requests.storage"] = quantity(storage)
    if pvc.spec.storage_class_name:
        prefix = pvc.spec.storage_class_name + STORAGE_CLASS_SUFFIX
        usage[prefix + "persistentvolumeclaims"] = Fraction(1)
        if storage is not None:
            usage[prefix + "requests.storage"] = quantity(storage)
    return usage


def object_usage(obj: Any) -> ResourceList:
    """Everything one stored object charges against a quota in its namespace."""
    kind = obj.kind
    if kind == "Pod":
        return pod_usage(obj)
    usage: ResourceList = {f"count/{kind_info(kind).resource}": Fraction(1)}
    if kind == "Service":
        usage.update(service_usage(obj))
    elif kind == "PersistentVolumeClaim":
        usage.update(pvc_usage(obj))
    elif kind in _KIND_RESOURCES:
        usage[_KIND_RESOURCES[kind][0]] = Fraction(1)
    return usage


def _count_kind(resource: str) -> str | None:
    for info in all_kinds():
        if info.namespaced and info.resource == resource:
            return info.kind
    return None


def charged_kinds(names: Iterable[str]) -> set[str]:
    """The kinds whose objects charge any of these quota resources."""
    kinds: set[str] = set()
    for name in names:
        if name.startswith("count/"):
            kind = _count_kind(name.removeprefix("count/"))
            if kind is not None:
                kinds.add(kind)
        elif STORAGE_CLASS_SUFFIX in name:
            kinds.add("PersistentVolumeClaim")
        else:
            owner = next((k for k, rs in _KIND_RESOURCES.items() if name in rs), "Pod")
            kinds.add(owner)
    return kinds


# -- scopes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    name: str
    operator: str = "Exists"
    values: tuple[str, ...] = ()


def quota_scopes(quota: Any) -> list[Scope]:
    """spec.scopes and spec.scopeSelector, as one list of requirements."""
    scopes = [Scope(s) for s in quota.spec.scopes]
    for expr in quota.spec.scope_selector.match_expressions:
        scopes.append(Scope(expr.scope_name, expr.operator, tuple(expr.values)))
    return scopes


def _best_effort(spec: Any) -> bool:
    for c in (*spec.containers, *spec.init_containers):
        for field in (c.resources.requests, c.resources.limits):
            if any(quantity(field[n]) > 0 for n in ("cpu", "memory") if n in field):
                return False
    return True


def _cross_namespace_affinity(spec: Any) -> bool:
    terms: list[Any] = []
    for aff in (spec.affinity.pod_affinity, spec.affinity.pod_anti_affinity):
        terms.extend(aff.required_during_scheduling_ignored_during_execution)
        terms.extend(
            w.pod_affinity_term for w in aff.preferred_during_scheduling_ignored_during_execution
        )
    return any(t.namespaces or t.HasField("namespace_selector") for t in terms)


def _pod_in_scope(pod: Any, scope: Scope) -> bool:
    spec = pod.spec
    if scope.name in ("Terminating", "NotTerminating"):
        terminating = spec.HasField("active_deadline_seconds") and spec.active_deadline_seconds >= 0
        return terminating == (scope.name == "Terminating")
    if scope.name in ("BestEffort", "NotBestEffort"):
        return _best_effort(spec) == (scope.name == "BestEffort")
    if scope.name == "PriorityClass":
        name = spec.priority_class_name
        if scope.operator == "Exists":
            return bool(name)
        if scope.operator == "In":
            return name in scope.values
        if scope.operator == "NotIn":
            return name not in scope.values
        return False  # DoesNotExist: a pod always has the key, as in Kubernetes
    if scope.name == "CrossNamespacePodAffinity":
        return _cross_namespace_affinity(spec)
    return False


def quota_covers(quota: Any, obj: Any) -> bool:
    """Whether obj falls under quota: scopes select pods only; a quota with
    none covers every object in its namespace."""
    scopes = quota_scopes(quota)
    if not scopes:
        return True
    return obj.kind == "Pod" and all(_pod_in_scope(obj, s) for s in scopes)


def namespace_usage(quota: Any, objects: Iterable[Any]) -> ResourceList:
    """status.used: for every hard resource, the sum over the objects the
    quota covers (zero when none charge it)."""
    hard = list(quota.spec.hard)
    used: ResourceList = dict.fromkeys(hard, Fraction(0))
    for obj in objects:
        if quota_covers(quota, obj):
            used = add(used, mask(object_usage(obj), hard))
    return used


# -- decisions and messages -----------------------------------------------------------


def format_resource(name: str, value: Fraction) -> str:
    """A quantity as Kubernetes prints it: memory and storage in exact binary
    units where they have one ("1536Mi"), everything else in SI ("1500m", "2")."""
    tail = name.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    binary = tail in _BINARY or tail.startswith("hugepages-")
    if binary and value.denominator == 1 and value >= 1024 and value % 1024 == 0:
        return format_bytes(int(value))
    return format_quantity(value)


def pretty(values: Mapping[str, Fraction]) -> str:
    """`limits.cpu=2,requests.cpu=1` (sorted, as Kubernetes' prettyPrint)."""
    return ",".join(f"{n}={format_resource(n, values[n])}" for n in sorted(values))


def exceeded(
    quota_name: str,
    hard: Mapping[str, Fraction],
    used: Mapping[str, Fraction],
    requested: Mapping[str, Fraction],
) -> str | None:
    """Kubernetes' refusal text if `requested` on top of `used` goes over
    `hard`, else None. Only resources the quota limits are looked at."""
    charged = mask(requested, hard)
    over = sorted(n for n, v in charged.items() if used.get(n, Fraction(0)) + v > hard[n])
    if not over:
        return None
    return (
        f"exceeded quota: {quota_name}, requested: {pretty(mask(charged, over))}, "
        f"used: {pretty({n: used.get(n, Fraction(0)) for n in over})}, "
        f"limited: {pretty(mask(hard, over))}"
    )


def status_strings(values: Mapping[str, Fraction]) -> dict[str, str]:
    return {n: format_resource(n, v) for n, v in values.items()}
