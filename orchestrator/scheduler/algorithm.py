"""One scheduling cycle for one pod: filter, score, pick. Pure: no I/O, no
awaiting, so the cache it reads cannot change under it.

As Kubernetes, a large cluster is not searched exhaustively: the filter
stops once it has found enough feasible nodes (percentageOfNodesToScore,
adaptive by default: 50% minus 1% per 125 nodes, at least 5%, never fewer
than 100 nodes), and the next cycle starts where this one stopped, so every
node gets its turn.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from orchestrator.scheduler.framework import (
    SKIP,
    CycleState,
    FilterPlugin,
    NodeLocalScorePlugin,
    Profile,
    Snapshot,
    Status,
    WeightedScore,
)
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
NO_NODES_MESSAGE = "no nodes available to schedule pods"
# Smallest batch of nodes filtered at once, so that a mostly full cluster is
# not searched a handful of nodes at a time.
MIN_CHUNK = 32
# Distinct (profile, pod shape) keys remembered before starting afresh.
MAX_MEMO_KEYS = 4096
_MEMO_KEY_NUMBERS = itertools.count()


def num_feasible_nodes_to_find(percentage: int, num_all_nodes: int) -> int:
    """How many feasible nodes to look for before scoring (Kubernetes' rule)."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return num_all_nodes
    if percentage <= 0:
        percentage = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def _batch_filter(
    plugin: FilterPlugin, state: CycleState, pod: PodInfo
) -> Callable[[list[NodeInfo]], list[NodeInfo]]:
    # getattr, not isinstance: a runtime Protocol check costs more than a cycle's filtering.
    batch = getattr(plugin, "filter_nodes", None)
    if batch is not None:
        return lambda nodes: batch(state, pod, nodes)  # type: ignore[no-any-return]
    f = plugin.filter
    return lambda nodes: [n for n in nodes if f(state, pod, n) is None]


class FitError(Exception):
    """No node fits the pod. str() is the message Kubernetes writes into the
    PodScheduled condition: "0/5 nodes are available: 3 Insufficient cpu, ..."."""

    def __init__(
        self,
        pod: PodInfo,
        num_all_nodes: int,
        statuses: dict[str, Status] | None = None,
        pre_filter_message: str = "",
    ) -> None:
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.statuses = statuses or {}
        self.pre_filter_message = pre_filter_message
        super().__init__(self.message())

    def histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            for reason in status.reasons:
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def message(self) -> str:
        if self.num_all_nodes == 0 and not self.pre_filter_message:
            return NO_NODES_MESSAGE
        text = f"0/{self.num_all_nodes} nodes are available:"
        if self.pre_filter_message:
            return f"{text} {self.pre_filter_message}."
        # Sorted as strings, count first, exactly as Kubernetes' FitError does.
        reasons = sorted(f"{n} {reason}" for reason, n in self.histogram().items())
        if reasons:
            text += " " + ", ".join(reasons) + "."
        return text


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    node: str
    evaluated: int  # nodes run through the filters
    feasible: int  # of which passed


class Algorithm:
    """Filters and scores for one profile set; keeps the rotating start index."""

    def __init__(self, percentage_of_nodes_to_score: int = 0, *, seed: int | None = None) -> None:
        self.percentage = percentage_of_nodes_to_score
        self.next_start = 0
        self._rng = random.Random(seed)
        self._memo_keys: dict[tuple[object, ...], int] = {}

    def schedule(self, profile: Profile, pod: PodInfo, snapshot: Snapshot) -> ScheduleResult:
        nodes = snapshot.nodes
        if pod.error:
            raise FitError(pod, len(nodes), pre_filter_message=pod.error)
        if not nodes:
            raise FitError(pod, 0)
        state = CycleState()
        for plugin in profile.pre_filters:
            status = plugin.pre_filter(state, pod, snapshot)
            if status is None:
                continue
            if status.code == SKIP:
                state.skip_filters.add(plugin.name)
            elif status.rejects:
                raise FitError(pod, len(nodes), pre_filter_message=status.message)
        feasible, statuses, evaluated = self.find_feasible(profile, state, pod, nodes)
        if not feasible:
            raise FitError(pod, len(nodes), statuses)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        totals = self.score(profile, state, pod, feasible, snapshot)
        return ScheduleResult(self.select(feasible, totals).name, evaluated, len(feasible))

    def find_feasible(
        self, profile: Profile, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]
    ) -> tuple[list[NodeInfo], dict[str, Status], int]:
        """The first `wanted` nodes from the rotating start that pass every
        filter, how many nodes that took, and (only when none passed, to
        explain it) each node's rejection."""
        percentage = profile.percentage_of_nodes_to_score
        wanted = num_feasible_nodes_to_find(
            self.percentage if percentage is None else percentage, len(nodes)
        )
        skip = state.skip_filters
        active = [p for p in profile.filters if p.name not in skip]
        batches = [_batch_filter(p, state, pod) for p in active]
        total = len(nodes)
        start = self.next_start % total
        order = list(nodes[start:]) + list(nodes[:start]) if start else list(nodes)
        feasible: list[NodeInfo] = []
        pos = 0
        # Filter in chunks of about as many nodes as are still wanted: one
        # list comprehension per plugin per chunk instead of a call per node.
        while pos < total and len(feasible) < wanted:
            need = wanted - len(feasible)
            chunk = order[pos : pos + max(need, MIN_CHUNK)]
            survivors = chunk
            for batch in batches:
                survivors = batch(survivors)
                if not survivors:
                    break
            if len(survivors) > need:
                survivors = survivors[:need]
                pos += chunk.index(survivors[-1]) + 1  # stop right after the last one taken
            else:
                pos += len(chunk)
            feasible.extend(survivors)
        self.next_start = (start + pos) % total
        statuses: dict[str, Status] = {}
        if not feasible:
            filters = [p.filter for p in active]
            for node in order:
                for f in filters:
                    status = f(state, pod, node)
                    if status is not None:
                        statuses[node.name] = status
                        break
        return feasible, statuses, pos

    def score(
        self,
        profile: Profile,
        state: CycleState,
        pod: PodInfo,
        nodes: list[NodeInfo],
        snapshot: Snapshot,
    ) -> list[int]:
        local: list[tuple[NodeLocalScorePlugin, int]] = []
        others: list[WeightedScore] = []
        for ws in profile.scores:
            if getattr(ws.plugin, "score_node", None):  # see _batch_filter: not isinstance
                local.append((cast(NodeLocalScorePlugin, ws.plugin), ws.weight))
            else:
                others.append(ws)
        totals = self._local_totals(local, pod, nodes) if local else None
        for ws in others:
            scores = ws.plugin.score(state, pod, nodes, snapshot)
            if scores is None:
                continue
            w = ws.weight
            if totals is None:
                totals = scores if w == 1 else [s * w for s in scores]
            else:
                totals = [t + s * w for t, s in zip(totals, scores, strict=True)]
        return totals if totals is not None else [0] * len(nodes)

    def _local_totals(
        self, local: list[tuple[NodeLocalScorePlugin, int]], pod: PodInfo, nodes: list[NodeInfo]
    ) -> list[int]:
        """The weighted sum of the node-local scores of each node, from each
        node's memo where the node has not changed since a pod of the same
        key was scored."""
        key = self._memo_key(local, pod)
        totals = [n.score_memo.get(key, -1) for n in nodes]
        for i, total in enumerate(totals):
            if total < 0:
                n = nodes[i]
                total = 0
                for plugin, weight in local:
                    total += weight * plugin.score_node(pod, n)
                totals[i] = n.score_memo[key] = total
        return totals

    def _memo_key(self, local: list[tuple[NodeLocalScorePlugin, int]], pod: PodInfo) -> int:
        """A small int standing for (these plugins and weights, the pod's keys):
        it is looked up on hundreds of nodes a cycle, and an int hashes at
        once where a nested tuple is hashed anew each time. Numbers are never
        reused, by this or any other Algorithm sharing the nodes, so an entry
        left on a node cannot be mistaken for another."""
        raw = tuple((plugin, weight, plugin.local_key(pod)) for plugin, weight in local)
        key = self._memo_keys.get(raw)
        if key is None:
            if len(self._memo_keys) >= MAX_MEMO_KEYS:
                self._memo_keys.clear()
            key = self._memo_keys[raw] = next(_MEMO_KEY_NUMBERS)
        return key

    def select(self, nodes: list[NodeInfo], totals: list[int]) -> NodeInfo:
        """The best-scoring node; ties broken at random so that equal nodes share load."""
        best = max(totals)
        candidates = [n for n, t in zip(nodes, totals, strict=True) if t == best]
        if len(candidates) == 1:
            return candidates[0]
        return candidates[self._rng.randrange(len(candidates))]
