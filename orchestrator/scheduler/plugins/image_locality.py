"""ImageLocality: prefer nodes that already hold the pod's images, weighted by
image size and discounted when the image is on few nodes (so that one node
with every image does not attract every pod)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.scheduler.framework import MAX_NODE_SCORE, CycleState, Snapshot
from orchestrator.scheduler.nodeinfo import NodeInfo
from orchestrator.scheduler.podinfo import PodInfo

NAME = "ImageLocality"
MB = 1024 * 1024
# Below the minimum an image is cheap to pull anyway; the maximum per
# container keeps one huge image from dominating.
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


def image_score(total: int, containers: int) -> int:
    high = MAX_CONTAINER_THRESHOLD * max(containers, 1)
    total = min(max(total, MIN_THRESHOLD), high)
    return MAX_NODE_SCORE * (total - MIN_THRESHOLD) // (high - MIN_THRESHOLD)


class ImageLocality:
    name = NAME

    def score(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int] | None:
        spread = snapshot.image_nodes
        wanted = [img for img in pod.images if img in spread]
        if not wanted:
            return None  # no node has any of them: no preference
        total_nodes = max(len(snapshot.nodes), 1)
        containers = len(pod.images)
        scores = []
        for n in nodes:
            sizes = n.image_sizes
            total = 0
            for img in wanted:
                size = sizes.get(img)
                if size is not None:
                    total += int(size * spread[img] / total_nodes)
            scores.append(image_score(total, containers))
        return scores
