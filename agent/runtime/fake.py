"""An in-memory container runtime for unit tests.

Containers run until a test makes them exit (`exit`), or exit by rule as
soon as they start (`exit_on_start`); a start can fail like a missing command
(`fail_start`); exec answers come from `exec_handler`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from agent.runtime.types import (
    LABEL_CONTAINER_NAME,
    LABEL_CONTAINER_TYPE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    LABEL_SANDBOX_ID,
    LABEL_SPEC_HASH,
    ContainerCreateError,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    ExecResult,
    ImageNotPresentError,
    ImagePullError,
    RuntimeUnavailableError,
)


@dataclass
class FakeContainer:
    info: ContainerInfo
    spec: ContainerSpec
    logs: list[bytes] = field(default_factory=list)


class FakeRuntime:
    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.containers: dict[str, FakeContainer] = {}
        self.images: dict[str, str] = {"busybox:1.36": "sha256:busybox"}
        self.pullable: dict[str, str] = {}
        self.pull_errors: dict[str, str] = {}
        # container name -> exit code on start; -> error message on start.
        self.exit_on_start: dict[str, int] = {}
        self.fail_start: dict[str, str] = {}
        self.fail_create: dict[str, str] = {}
        self.exec_handler: Callable[[FakeContainer, list[str]], ExecResult] | None = None
        self.calls: list[tuple[str, Any]] = []
        self.unavailable = False
        self._ids = itertools.count(1)
        self._pids = itertools.count(1000)

    # -- test controls ----------------------------------------------------------------

    def find(self, pod_uid: str, name: str, *, running: bool | None = None) -> list[FakeContainer]:
        out = [
            c
            for c in self.containers.values()
            if c.info.pod_uid == pod_uid
            and c.info.name == name
            and (running is None or (c.info.state == ContainerState.RUNNING) == running)
        ]
        return sorted(out, key=lambda c: c.info.created_at or self.clock())

    def exit(self, container_id: str, code: int = 0, *, oom: bool = False) -> None:
        c = self.containers[container_id]
        c.info = replace(
            c.info,
            state=ContainerState.EXITED,
            exit_code=code,
            oom_killed=oom,
            finished_at=self.clock(),
            pid=0,
        )

    def running(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        return [
            c.info
            for c in self.containers.values()
            if c.info.state == ContainerState.RUNNING
            and (pod_uid is None or c.info.pod_uid == pod_uid)
        ]

    def _check(self) -> None:
        if self.unavailable:
            raise RuntimeUnavailableError("cannot reach the fake runtime")

    # -- ContainerRuntime ----------------------------------------------------------------

    async def version(self) -> str:
        return "fake://1.0"

    async def list_containers(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        self._check()
        return [
            c.info for c in self.containers.values() if pod_uid is None or c.info.pod_uid == pod_uid
        ]

    async def inspect_container(self, container_id: str) -> ContainerInfo | None:
        self._check()
        c = self.containers.get(container_id)
        return c.info if c else None

    async def image_present(self, image: str) -> bool:
        return image in self.images

    async def ensure_image(self, image: str, pull_policy: str) -> str:
        self._check()
        self.calls.append(("ensure_image", (image, pull_policy)))
        if pull_policy != "Always" and image in self.images:
            return self.images[image]
        if pull_policy == "Never":
            raise ImageNotPresentError(
                f'Container image "{image}" is not present with pull policy of Never'
            )
        if image in self.pull_errors:
            raise ImagePullError(f'Failed to pull image "{image}": {self.pull_errors[image]}')
        if image in self.pullable or image in self.images:
            self.images[image] = self.pullable.get(image) or self.images[image]
            return self.images[image]
        raise ImagePullError(f'Failed to pull image "{image}": manifest for {image} not found')

    async def list_images(self) -> list[tuple[list[str], int]]:
        return [([name], 1000) for name in self.images]

    async def remove_container(self, container_id: str) -> None:
        self._check()
        self.calls.append(("remove", container_id))
        self.containers.pop(container_id, None)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        self._check()
        self.calls.append(("stop", (container_id, timeout)))
        c = self.containers.get(container_id)
        if c is not None and c.info.state == ContainerState.RUNNING:
            self.exit(container_id, 137 if c.info.type != "sandbox" else 0)

    async def exec(
        self, container_id: str, command: Sequence[str], timeout: float | None = None
    ) -> ExecResult:
        self._check()
        self.calls.append(("exec", (container_id, list(command))))
        c = self.containers.get(container_id)
        if c is None or c.info.state != ContainerState.RUNNING:
            return ExecResult(-1, b"container is not running")
        if self.exec_handler is not None:
            return self.exec_handler(c, list(command))
        return ExecResult(0, b"")

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]:
        c = self.containers.get(container_id)
        if c is None:
            raise LookupError(f"container {container_id} not found")
        lines = c.logs if tail is None else c.logs[-tail:] if tail else []
        for line in lines:
            yield line

    # -- PodRuntime --------------------------------------------------------------------

    async def create_container(self, spec: ContainerSpec) -> str:
        self._check()
        self.calls.append(("create", spec))
        if spec.name in self.fail_create:
            raise ContainerCreateError(self.fail_create[spec.name])
        cid = f"c{next(self._ids):06d}"
        labels = {
            **spec.labels,
            LABEL_POD_UID: spec.pod_uid,
            LABEL_POD_NAME: spec.pod_name,
            LABEL_POD_NAMESPACE: spec.pod_namespace,
            LABEL_CONTAINER_NAME: spec.name,
            LABEL_CONTAINER_TYPE: spec.type,
            LABEL_RESTART_COUNT: str(spec.restart_count),
            LABEL_SPEC_HASH: spec.spec_hash,
        }
        if spec.sandbox_id:
            labels[LABEL_SANDBOX_ID] = spec.sandbox_id
        info = ContainerInfo(
            id=cid,
            pod_uid=spec.pod_uid,
            pod_name=spec.pod_name,
            pod_namespace=spec.pod_namespace,
            name=spec.name,
            type=spec.type,
            state=ContainerState.CREATED,
            image=spec.image,
            image_id=self.images.get(spec.image, ""),
            created_at=self.clock(),
            restart_count=spec.restart_count,
            spec_hash=spec.spec_hash,
            labels=labels,
        )
        self.containers[cid] = FakeContainer(info, spec)
        return cid

    async def start_container(self, container_id: str) -> None:
        self._check()
        self.calls.append(("start", container_id))
        c = self.containers[container_id]
        if c.info.name in self.fail_start:
            message = self.fail_start[c.info.name]
            c.info = replace(c.info, exit_code=127, error=message)
            raise ContainerCreateError(message)
        c.info = replace(
            c.info, state=ContainerState.RUNNING, started_at=self.clock(), pid=next(self._pids)
        )
        if c.info.name in self.exit_on_start and c.info.type != "sandbox":
            self.exit(container_id, self.exit_on_start[c.info.name])
