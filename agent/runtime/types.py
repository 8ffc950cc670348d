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


# -- what the pod workers create (added for agent/pods) ------------------------------

# The sandbox an app/init container joined (its network, IPC and UTS holder).
LABEL_SANDBOX_ID = "io.orchestrator.sandbox.id"
# Pod-level grace period and preStop presence, so a restarted agent can stop an
# orphan the way its pod asked.
LABEL_GRACE_PERIOD = "io.orchestrator.pod.termination-grace-period"
# Sandbox: "true" when the pod uses the node's network namespace, so a pod
# removed while the agent no longer has its object skips the network plugin.
LABEL_HOST_NETWORK = "io.orchestrator.pod.host-network"
# The node file bind-mounted at the container's terminationMessagePath: one
# per container instance, found again from this label after an agent restart.
LABEL_TERMINATION_MESSAGE_PATH = "io.orchestrator.container.termination-message-path"


@dataclass(frozen=True)
class Mount:
    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container of a pod (or its sandbox).

    ``entrypoint``/``cmd`` follow Kubernetes' command/args: None keeps the
    image's ENTRYPOINT/CMD, a list replaces it."""

    pod_uid: str
    pod_name: str
    pod_namespace: str
    name: str  # container name, or SANDBOX_NAME
    type: str  # sandbox | init | app
    image: str
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    working_dir: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    # The sandbox to join (app and init containers); empty for the sandbox itself.
    sandbox_id: str = ""
    hostname: str = ""  # sandbox only: app containers share the sandbox's UTS name
    cpu_limit_millis: int = 0
    memory_limit_bytes: int = 0
    cpu_request_millis: int = 0
    privileged: bool = False
    user: str = ""  # "uid" or "uid:gid"
    read_only_rootfs: bool = False
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()
    tty: bool = False
    stdin: bool = False
    stop_signal: str = ""
    restart_count: int = 0
    spec_hash: str = ""
    share_pid: bool = False
    # The node's namespaces (hostNetwork, hostPID, hostIPC): a host-network
    # pod also takes the node's hostname (UTS), as the kubelet does.
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


class ContainerCreateError(Exception):
    """The runtime refused to create or start the container (CreateContainerError,
    RunContainerError); the message is the runtime's."""


class RuntimeUnavailableError(Exception):
    """The container runtime cannot be reached (dockerd down)."""


class PodRuntime(ContainerRuntime, Protocol):
    """ContainerRuntime plus what the pod workers need to build pods."""

    async def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns its id."""
        ...

    async def start_container(self, container_id: str) -> None: ...

    async def inspect_container(self, container_id: str) -> ContainerInfo | None:
        """None when the container no longer exists."""
        ...

    async def image_present(self, image: str) -> bool: ...
