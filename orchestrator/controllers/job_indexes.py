"""Completion indexes of Indexed Jobs: which index a pod works on, and the
compressed interval form of `status.completedIndexes` ("1,3-5,7")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"


def pod_index(pod: Any) -> int | None:
    """The completion index a pod was made for (annotation first, then the
    label, as Kubernetes reads them), or None if absent or not a number."""
    for source in (pod.metadata.annotations, pod.metadata.labels):
        text = source.get(COMPLETION_INDEX_KEY)
        if text is None:
            continue
        if text.isascii() and text.isdigit():
            return int(text)
        return None
    return None


def parse_indexes(text: str, limit: int | None = None) -> set[int]:
    """The indexes in an interval list. Malformed parts and indexes at or
    beyond limit are dropped rather than raised: a stale or hand-edited status
    must not stop the controller, and it rewrites the field from what it knows."""
    found: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not (first.isascii() and first.isdigit()):
            continue
        low = int(first)
        high = low
        if dash:
            if not (last.isascii() and last.isdigit()):
                continue
            high = int(last)
        if limit is not None:
            high = min(high, limit - 1)
        found.update(range(low, high + 1))
    return found


def format_indexes(indexes: Iterable[int]) -> str:
    """Sorted, every run of consecutive indexes written `a-b` (a pair too, as
    Kubernetes writes it), lone indexes as they are."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def missing_indexes(completions: int, done: set[int], running: set[int], count: int) -> list[int]:
    """The lowest `count` indexes that have neither succeeded nor a pod working on them."""
    out: list[int] = []
    for i in range(completions):
        if len(out) >= count:
            break
        if i not in done and i not in running:
            out.append(i)
    return out
