"""Resource arithmetic for scheduling: what a pod asks for, what a node offers.

Quantities arrive as strings ("500m", "1Gi"); parsing them is exact but slow
(Fractions), and a cluster uses a handful of distinct values millions of
times, so every conversion here is memoised. CPU is kept in millicores,
memory and everything else in whole units, as plain ints: the hot loops of
the scheduler compare ints, never quantities.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orchestrator.api.quantity import QuantityError, cpu_millis, value

CPU = "cpu"
MEMORY = "memory"
PODS = "pods"

# What the scheduler pretends a container without requests asks for when it
# *scores* nodes (Kubernetes' DefaultMilliCPURequest / DefaultMemoryRequest),
# so that best-effort pods do not all pile onto one node. Filtering uses the
# real (zero) requests.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024


@functools.lru_cache(maxsize=4096)
def quantity_in(resource: str, raw: str) -> int:
    """A quantity as the scheduler counts it: millicores for cpu, units otherwise.

    Raises QuantityError naming the resource when the text is not a quantity."""
    try:
        return cpu_millis(raw) if resource == CPU else value(raw)
    except QuantityError as exc:
        raise QuantityError(f"{resource}: {exc}") from None


@dataclass(slots=True)
class Requests:
    """Requests of one pod: cpu (millicores), memory (bytes), other resources."""

    cpu: int = 0
    memory: int = 0
    scalar: dict[str, int] = field(default_factory=dict)

    def add(self, other: Requests) -> None:
        self.cpu += other.cpu
        self.memory += other.memory
        for name, amount in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + amount

    def max_with(self, other: Requests) -> None:
        self.cpu = max(self.cpu, other.cpu)
        self.memory = max(self.memory, other.memory)
        for name, amount in other.scalar.items():
            self.scalar[name] = max(self.scalar.get(name, 0), amount)

    def copy(self) -> Requests:
        return Requests(self.cpu, self.memory, dict(self.scalar))


def requests_from(resources: Mapping[str, str], *, non_zero: bool = False) -> Requests:
    """One container's (or the pod's) requests map as ints. With non_zero, a
    missing cpu or memory request counts as the scoring default."""
    out = Requests()
    for name, raw in resources.items():
        amount = quantity_in(name, raw)
        if name == CPU:
            out.cpu = amount
        elif name == MEMORY:
            out.memory = amount
        elif amount:
            out.scalar[name] = amount
    if non_zero:
        if CPU not in resources:
            out.cpu = DEFAULT_MILLI_CPU_REQUEST
        if MEMORY not in resources:
            out.memory = DEFAULT_MEMORY_REQUEST
    return out


def pod_requests(spec: object, *, non_zero: bool = False) -> Requests:
    """What a pod needs on a node, as Kubernetes' resource.PodRequests.

    App containers run together, so their requests add up. Init containers
    run one at a time before them, so the pod needs the larger of the app
    sum and each init container's request; restartable init containers
    (sidecars, restartPolicy Always) keep running, so they add to both.
    Pod-level requests, when given, replace the per-container sum; overhead
    is added on top.
    """
    containers: Iterable[object] = spec.containers  # type: ignore[attr-defined]
    total = Requests()
    for c in containers:
        total.add(requests_from(c.resources.requests, non_zero=non_zero))  # type: ignore[attr-defined]
    sidecars = Requests()
    init_peak = Requests()
    for c in spec.init_containers:  # type: ignore[attr-defined]
        own = requests_from(c.resources.requests, non_zero=non_zero)
        if c.restart_policy == "Always":
            total.add(own)
            sidecars.add(own)
            init_peak.max_with(sidecars)
        else:
            own.add(sidecars)
            init_peak.max_with(own)
    total.max_with(init_peak)
    pod_level = spec.resources.requests  # type: ignore[attr-defined]
    if pod_level:
        explicit = requests_from(pod_level)
        if CPU in pod_level:
            total.cpu = explicit.cpu
        if MEMORY in pod_level:
            total.memory = explicit.memory
    overhead = spec.overhead  # type: ignore[attr-defined]
    if overhead:
        total.add(requests_from(overhead))
    return total


@dataclass(slots=True)
class Allocatable:
    """What a node offers to pods: allocatable, falling back to capacity."""

    cpu: int = 0
    memory: int = 0
    pods: int = 0
    scalar: dict[str, int] = field(default_factory=dict)


def node_allocatable(status: object) -> Allocatable:
    source: Mapping[str, str] = status.allocatable or status.capacity  # type: ignore[attr-defined]
    out = Allocatable()
    for name, raw in source.items():
        try:
            amount = quantity_in(name, raw)
        except QuantityError:
            continue  # a node reporting garbage offers none of that resource
        if name == CPU:
            out.cpu = amount
        elif name == MEMORY:
            out.memory = amount
        elif name == PODS:
            out.pods = amount
        else:
            out.scalar[name] = amount
    return out
