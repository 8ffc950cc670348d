"""Small pure helpers about pods and their containers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from agent.runtime.types import LABEL_SANDBOX_ID, ContainerInfo, ContainerState

TERMINAL_PHASES = ("Succeeded", "Failed")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fmt_time(t: datetime | None) -> str:
    if t is None:
        return ""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> datetime | None:
    if not s:
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def container_hash(container: Any) -> str:
    """Hash of a container's spec: a changed spec (say, its image) means replace it."""
    return hashlib.sha256(container.SerializeToString(deterministic=True)).hexdigest()[:16]


def pod_hostname(pod: Any) -> str:
    name = pod.spec.hostname or pod.metadata.name
    return str(name)[:63].rstrip("-.") or "pod"


def pod_full_name(pod: Any) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def restart_policy(pod: Any) -> str:
    return str(pod.spec.restart_policy or "Always")


def is_terminal(pod: Any) -> bool:
    return pod.status.phase in TERMINAL_PHASES


def is_dead(c: ContainerInfo) -> bool:
    return c.state != ContainerState.RUNNING


def has_exited(c: ContainerInfo) -> bool:
    """Ran and stopped, or could not be started (created with an error)."""
    if c.state == ContainerState.EXITED:
        return True
    return c.state in (ContainerState.CREATED, ContainerState.UNKNOWN) and bool(
        c.error or c.finished_at
    )


def exit_failed(c: ContainerInfo) -> bool:
    return c.exit_code != 0 or c.oom_killed or (c.state == ContainerState.CREATED and bool(c.error))


def _order_key(c: ContainerInfo) -> tuple[datetime, int]:
    return (c.created_at or _EPOCH, c.restart_count)


def newest_first(containers: Iterable[ContainerInfo]) -> list[ContainerInfo]:
    return sorted(containers, key=_order_key, reverse=True)


def latest_sandbox(containers: Iterable[ContainerInfo]) -> ContainerInfo | None:
    sandboxes = newest_first(c for c in containers if c.type == "sandbox")
    running = [c for c in sandboxes if c.state == ContainerState.RUNNING]
    if running:
        return running[0]
    return sandboxes[0] if sandboxes else None


def history(containers: Iterable[ContainerInfo], name: str, type_: str) -> list[ContainerInfo]:
    """Every container of one pod container name, newest first."""
    return newest_first(c for c in containers if c.name == name and c.type == type_)


def in_sandbox(containers: Iterable[ContainerInfo], sandbox: ContainerInfo) -> list[ContainerInfo]:
    """The containers created for this sandbox (a newer sandbox starts a new attempt)."""
    out = []
    for c in containers:
        if c.type == "sandbox":
            continue
        sid = c.labels.get(LABEL_SANDBOX_ID)
        if sid:
            if sid == sandbox.id:
                out.append(c)
        elif sandbox.created_at and c.created_at and c.created_at >= sandbox.created_at:
            out.append(c)
    return out


def seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()
