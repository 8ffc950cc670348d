"""The scheduling framework: the plugin protocols and what they share.

As Kubernetes' framework, a cycle for one pod runs every PreFilter plugin
once, every Filter plugin per node until one rejects it, and every Score
plugin over the nodes that passed. Differences, all for speed in Python:

- Filter returns None for "fits" (no Status is allocated on the hot path).
- Score takes the whole list of feasible nodes and returns their final
  0..100 scores (Kubernetes' Score + NormalizeScore in one call), or None
  when it has nothing to say about this pod (every node would score alike),
  which is Kubernetes' PreScore "Skip".
- A Filter plugin may also filter a whole batch of nodes in one call
  (BatchFilterPlugin); the per-node filter() then only runs to explain
  why a pod fits nowhere.
- PreFilter may answer SKIP, and that plugin's Filter is not called for
  this pod at all (Kubernetes' PreFilter Skip).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

MAX_NODE_SCORE = 100

SUCCESS = "Success"
UNSCHEDULABLE = "Unschedulable"
# Rejected for a reason no other pod's removal can fix (wrong node name, a
# node selector): preemption, should it come, must not try these nodes.
UNRESOLVABLE = "UnschedulableAndUnresolvable"
SKIP = "Skip"
ERROR = "Error"


@dataclass(frozen=True, slots=True)
class Status:
    """A plugin's verdict with the reasons a person reads in the pod's condition."""

    code: str
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @classmethod
    def unschedulable(cls, *reasons: str, plugin: str = "") -> Status:
        return cls(UNSCHEDULABLE, reasons, plugin)

    @classmethod
    def unresolvable(cls, *reasons: str, plugin: str = "") -> Status:
        return cls(UNRESOLVABLE, reasons, plugin)

    @property
    def rejects(self) -> bool:
        return self.code in (UNSCHEDULABLE, UNRESOLVABLE, ERROR)

    @property
    def message(self) -> str:
        return ", ".join(self.reasons)


SKIP_STATUS = Status(SKIP)


class VolumeLister(Protocol):
    """The PersistentVolumeClaims and PersistentVolumes a cycle may look up
    (the scheduler's informer caches)."""

    def get_claim(self, namespace: str, name: str) -> Any | None: ...

    def get_volume(self, name: str) -> Any | None: ...


class _NoVolumes:
    """No claims or volumes at all: for snapshots built without informers."""

    def get_claim(self, namespace: str, name: str) -> Any | None:
        return None

    def get_volume(self, name: str) -> Any | None:
        return None


NO_VOLUMES: VolumeLister = _NoVolumes()


class CycleState:
    """Scratch space for one pod's cycle: PreFilter writes what Filter and
    Score read, keyed by plugin name."""

    __slots__ = ("_data", "skip_filters")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self.skip_filters: set[str] = set()

    def write(self, key: str, value: Any) -> None:
        self._data[key] = value

    def read(self, key: str) -> Any:
        """The value PreFilter stored; a KeyError here is a plugin bug."""
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)


@dataclass
class Snapshot:
    """The cluster as one cycle sees it. `nodes` are the nodes with a Node
    object (placeholders excluded), in the cache's stable order."""

    nodes: Sequence[NodeInfo]
    # How many nodes have each (normalized) image: for ImageLocality's spread.
    image_nodes: dict[str, int] = field(default_factory=dict)
    # Cluster-wide counts that let affinity plugins skip scanning every pod.
    affinity_pods: int = 0
    required_anti_affinity_pods: int = 0
    # How many nodes are cordoned / have NoSchedule-or-NoExecute taints /
    # PreferNoSchedule taints: plugins with nothing to check skip the nodes.
    unschedulable_nodes: int = 0
    hard_tainted_nodes: int = 0
    prefer_tainted_nodes: int = 0
    # Claims and volumes, for VolumeBinding (the scheduler sets its informers').
    volumes: VolumeLister = NO_VOLUMES

    @classmethod
    def of(cls, nodes: Sequence[NodeInfo]) -> Snapshot:
        """Compute everything from the nodes (the cache keeps it incrementally)."""
        images: dict[str, int] = {}
        for n in nodes:
            for image in n.image_sizes:
                images[image] = images.get(image, 0) + 1
        return cls(
            list(nodes),
            images,
            sum(n.pods_with_affinity for n in nodes),
            sum(n.pods_with_required_anti_affinity for n in nodes),
            sum(1 for n in nodes if n.unschedulable),
            sum(1 for n in nodes if n.hard_taints),
            sum(1 for n in nodes if n.prefer_taints),
        )


@runtime_checkable
class Plugin(Protocol):
    name: str


@runtime_checkable
class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status | None:
        """Precompute per-pod data once. None: go on; SKIP_STATUS: this plugin's
        Filter has nothing to check for this pod; a rejecting Status: the pod
        fits no node at all (its message says why)."""


@runtime_checkable
class FilterPlugin(Plugin, Protocol):
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """None when the pod may run on node; otherwise why not."""


@runtime_checkable
class BatchFilterPlugin(FilterPlugin, Protocol):
    def filter_nodes(
        self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]
    ) -> list[NodeInfo]:
        """The nodes that pass, in order: exactly those filter() returns None
        for, computed in one loop without a call (or a Status) per node. The
        framework uses it to search; filter() still explains rejections."""


@runtime_checkable
class ScorePlugin(Plugin, Protocol):
    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        """Scores 0..100 for `nodes`, higher is better; None: no preference."""


@runtime_checkable
class NodeLocalScorePlugin(ScorePlugin, Protocol):
    """A score that depends only on the node and on `local_key(pod)`, and
    needs no normalization across nodes (NodeResourcesFit, BalancedAllocation).

    The framework sums such plugins' weighted scores once per node and pod
    key and keeps the sum on the node until the node changes, so the
    consecutive pods of a workload look each unchanged node up instead of
    scoring it again."""

    def local_key(self, pod: PodInfo) -> Hashable:
        """What of the pod the score depends on (equal keys, equal scores)."""

    def score_node(self, pod: PodInfo, node: NodeInfo) -> int:
        """The score 0..100 of one node."""


def normalize(scores: list[int], *, reverse: bool = False) -> list[int]:
    """Kubernetes' DefaultNormalizeScore: scale so the best is 100 (or, with
    reverse, so the highest raw score becomes 0)."""
    top = max(scores, default=0)
    if top == 0:
        return [MAX_NODE_SCORE] * len(scores) if reverse else scores
    if reverse:
        return [MAX_NODE_SCORE - s * MAX_NODE_SCORE // top for s in scores]
    return [s * MAX_NODE_SCORE // top for s in scores]


def min_max_normalize(raw: list[float]) -> list[int]:
    """Map the lowest raw score to 0 and the highest to 100 (InterPodAffinity's
    normalization, which allows negative raw scores)."""
    if not raw:
        return []
    lo, hi = min(raw), max(raw)
    if hi == lo:
        return [0] * len(raw)
    span = hi - lo
    return [int(MAX_NODE_SCORE * (s - lo) / span) for s in raw]


@dataclass
class WeightedScore:
    plugin: ScorePlugin
    weight: int


@dataclass
class Profile:
    """One scheduler personality: which plugins run, and how scores weigh.

    A plugin object may appear in several lists (NodeAffinity both filters
    and scores); it is one instance, so its PreFilter data is shared."""

    scheduler_name: str
    pre_filters: list[PreFilterPlugin] = field(default_factory=list)
    filters: list[FilterPlugin] = field(default_factory=list)
    scores: list[WeightedScore] = field(default_factory=list)
    percentage_of_nodes_to_score: int | None = None

    def describe(self) -> str:
        filters = ", ".join(p.name for p in self.filters)
        scores = ", ".join(f"{s.plugin.name}={s.weight}" for s in self.scores)
        return f"{self.scheduler_name}: filters [{filters}] scores [{scores}]"
