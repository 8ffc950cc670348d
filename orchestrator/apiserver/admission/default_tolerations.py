"""DefaultTolerationSeconds admission, as Kubernetes' plugin of that name: a
pod created without a toleration for the node.kubernetes.io/not-ready or
unreachable NoExecute taint gets one with tolerationSeconds 300.

So a pod rides out a node's short outage (a reboot, a network blip) for five
minutes before the node lifecycle controller evicts it, instead of at once.
Runs on create only: tolerations may not be changed afterwards but for their
seconds, and the user's own choices always win.
"""

from __future__ import annotations

from typing import Any, Final

from orchestrator.api.pb import core_v1_pb2 as core

NOT_READY_TAINT: Final = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT: Final = "node.kubernetes.io/unreachable"
DEFAULT_TOLERATION_SECONDS: Final = 300


def _covers(toleration: Any, key: str) -> bool:
    """Whether a toleration already speaks to the NoExecute taint `key`: the
    same test as Kubernetes' plugin (key equal or empty, effect NoExecute or
    empty), whatever its operator and seconds."""
    return toleration.key in ("", key) and toleration.effect in ("", "NoExecute")


def add_default_tolerations(
    pod: Any,
    *,
    not_ready_seconds: int = DEFAULT_TOLERATION_SECONDS,
    unreachable_seconds: int = DEFAULT_TOLERATION_SECONDS,
) -> None:
    """Add the default not-ready and unreachable tolerations to a Pod in place."""
    if getattr(pod, "kind", "") != "Pod":
        return
    tolerations = pod.spec.tolerations
    for key, seconds in (
        (NOT_READY_TAINT, not_ready_seconds),
        (UNREACHABLE_TAINT, unreachable_seconds),
    ):
        if any(_covers(t, key) for t in tolerations):
            continue
        tolerations.append(
            core.Toleration(
                key=key, operator="Exists", effect="NoExecute", toleration_seconds=seconds
            )
        )
