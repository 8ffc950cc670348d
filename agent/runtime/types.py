"""What the pod workers need from a container runtime, and what it reports.

The Docker implementation lives in agent/runtime/docker.py; tests use a fake.
Every container the agent creates carries these labels, so a restarted agent
finds (adopts) its containers instead of starting duplicates.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

LABEL_POD_UID = "io.orchestrator.pod.uid"
LABEL_POD_NAME = "io.orchestrator.pod.name"
LABEL_POD_NAMESPACE = "io.orchestrator.pod.namespace"
LABEL_CONTAINER_NAME = "io.orchestrator.container.name"
# "sandbox", "init" or "app".
LABEL_CONTAINER_TYPE = "io.orchestrator.container.type"
# How many times this container (by name, in this pod) had been started before.
LABEL_RESTART_COUNT = "io.orchestrator.container.restart-count"
# Hash of the container spec it was created from: a changed spec means replace.
LABEL_SPEC_HASH = "io.orchestrator.container.spec-hash"
SANDBOX_NAME = "POD"


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    pod_uid: str
    pod_name: str
    pod_namespace: str
    name: str  # the pod's container name, or SANDBOX_NAME
    type: str  # sandbox | init | app
    state: ContainerState
    image: str = ""
    image_id: str = ""
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    restart_count: int = 0
    spec_hash: str = ""
    # PID of the container's init process while running (sandbox: its netns holder).
    pid: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: bytes


class ImagePullError(Exception):
    """The image could not be pulled (ErrImagePull)."""


class ImageNotPresentError(Exception):
    """imagePullPolicy Never and the image is not on the node (ErrImageNeverPull)."""


class ContainerRuntime(Protocol):
    """The pieces of Docker the agent uses. Every method is async (the Docker
    SDK blocks, so implementations run it in worker threads)."""

    async def version(self) -> str: ...

    async def list_containers(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        """Every container the agent created (all pods, or one pod), any state."""
        ...

    async def ensure_image(self, image: str, pull_policy: str) -> str:
        """Make the image present per policy (Always/IfNotPresent/Never); returns its id."""
        ...

    async def list_images(self) -> list[tuple[list[str], int]]:
        """(names, size in bytes) of every image on the node (Node.status.images)."""
        ...

    async def remove_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, timeout: float) -> None:
        """SIGTERM, wait up to timeout seconds, then SIGKILL."""
        ...

    async def exec(
        self, container_id: str, command: Sequence[str], timeout: float | None = None
    ) -> ExecResult: ...

    def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]: ...
