"""Taints and tolerations as plain tuples, with Kubernetes' matching rules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

NO_SCHEDULE = "NoSchedule"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
NO_EXECUTE = "NoExecute"

TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"


class Taint(NamedTuple):
    key: str
    value: str
    effect: str

    def describe(self) -> str:
        # As the scheduler's reason text prints a taint: "{dedicated: db}".
        return f"{{{self.key}: {self.value}}}"


class Toleration(NamedTuple):
    key: str
    operator: str  # "Equal" (or "") or "Exists"
    value: str
    effect: str  # "" tolerates every effect

    def tolerates(self, taint: Taint) -> bool:
        """v1.Toleration.ToleratesTaint: an empty key with Exists tolerates everything."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        if self.operator in ("", "Equal"):
            return self.value == taint.value
        return False


def tolerations_from(pb_tolerations: Iterable[object]) -> tuple[Toleration, ...]:
    return tuple(
        Toleration(t.key, t.operator, t.value, t.effect)  # type: ignore[attr-defined]
        for t in pb_tolerations
    )


def tolerated(taint: Taint, tolerations: Iterable[Toleration]) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def first_untolerated(
    taints: Iterable[Taint], tolerations: tuple[Toleration, ...], effects: frozenset[str]
) -> Taint | None:
    """The first taint with one of `effects` that no toleration covers."""
    for taint in taints:
        if taint.effect in effects and not tolerated(taint, tolerations):
            return taint
    return None
