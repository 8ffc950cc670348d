"""The container runtime on Docker Engine, through the docker SDK.

The SDK blocks, so every call runs in a worker thread (asyncio.to_thread);
nothing here touches the event loop's thread for I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

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

log = logging.getLogger(__name__)

T = TypeVar("T")

CPU_PERIOD_US = 100_000
# Pull and build operations can be slow; ordinary calls should not hang forever.
API_TIMEOUT = 120


def parse_docker_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 with nanoseconds; the zero time means unset."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.replace("Z", "+00:00")
    main, _, rest = text.partition(".")
    if rest:
        digits = ""
        tz = ""
        for i, ch in enumerate(rest):
            if not ch.isdigit():
                digits, tz = rest[:i], rest[i:]
                break
        else:
            digits = rest
        text = f"{main}.{digits[:6].ljust(6, '0')}{tz}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def split_image(image: str) -> tuple[str, str]:
    """("registry:5000/app", "1.0") from "registry:5000/app:1.0"; tag "latest" if none."""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = image.rpartition(":")
        return name, tag
    return image, "latest"


def _state(raw: str) -> ContainerState:
    if raw == "running" or raw == "paused" or raw == "restarting":
        return ContainerState.RUNNING
    if raw == "created":
        return ContainerState.CREATED
    if raw in ("exited", "dead", "removing"):
        return ContainerState.EXITED
    return ContainerState.UNKNOWN


def info_from_inspect(data: dict[str, Any]) -> ContainerInfo:
    labels = (data.get("Config") or {}).get("Labels") or {}
    state = data.get("State") or {}
    status = state.get("Status", "")
    try:
        restarts = int(labels.get(LABEL_RESTART_COUNT, "0"))
    except ValueError:
        restarts = 0
    return ContainerInfo(
        id=data["Id"],
        pod_uid=labels.get(LABEL_POD_UID, ""),
        pod_name=labels.get(LABEL_POD_NAME, ""),
        pod_namespace=labels.get(LABEL_POD_NAMESPACE, ""),
        name=labels.get(LABEL_CONTAINER_NAME, ""),
        type=labels.get(LABEL_CONTAINER_TYPE, ""),
        state=_state(status),
        image=(data.get("Config") or {}).get("Image", ""),
        image_id=data.get("Image", ""),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        created_at=parse_docker_time(data.get("Created")),
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")),
        restart_count=restarts,
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        pid=int(state.get("Pid") or 0),
        labels=dict(labels),
    )


def namespace_modes(spec: ContainerSpec, sandbox_ipc: str = "shareable") -> dict[str, str]:
    """Docker's namespace options for a pod container. The sandbox holds the
    pod's network and IPC namespaces and the others join it; a host-network
    sandbox is in the node's network namespace (dockerd's, which the agent
    shares), so joining it puts the containers there too. The node's PID and
    IPC namespaces are named directly: a sandbox in the host IPC namespace is
    not "shareable", and PID is never the sandbox's unless shareProcessNamespace."""
    modes: dict[str, str] = {}
    if spec.type == "sandbox":
        modes["network_mode"] = "host" if spec.host_network else "none"
        modes["ipc_mode"] = "host" if spec.host_ipc else sandbox_ipc
    else:
        modes["network_mode"] = f"container:{spec.sandbox_id}"
        modes["ipc_mode"] = "host" if spec.host_ipc else f"container:{spec.sandbox_id}"
        if spec.share_pid and not spec.host_pid:
            modes["pid_mode"] = f"container:{spec.sandbox_id}"
    if spec.host_pid:
        modes["pid_mode"] = "host"
    if spec.host_network:
        modes["uts_mode"] = "host"
    return modes


def _message(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode(errors="replace")
        return str(explanation or exc)
    return str(exc)


class DockerRuntime:
    """ContainerRuntime and PodRuntime over one dockerd (`unix:///run/docker.sock`)."""

    def __init__(self, base_url: str = "unix:///var/run/docker.sock") -> None:
        self.base_url = base_url
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()
        # The sandbox's IPC namespace is shared with its containers.
        self.sandbox_ipc = "shareable"
        # Calls that may block for long (followed logs, exec) get threads of
        # their own so they cannot starve the ordinary ones.
        self._inspected: dict[str, tuple[str, ContainerInfo]] = {}
        self._pool = ThreadPoolExecutor(32, thread_name_prefix="docker")
        self._stream_pool = ThreadPoolExecutor(64, thread_name_prefix="docker-stream")

    # -- plumbing --------------------------------------------------------------------

    def _client(self) -> docker.APIClient:
        with self._lock:
            if self._api is None:
                try:
                    self._api = docker.APIClient(
                        base_url=self.base_url,
                        version="auto",
                        timeout=API_TIMEOUT,
                        max_pool_size=32,
                    )
                except docker.errors.DockerException as exc:
                    raise RuntimeUnavailableError(
                        f"cannot reach dockerd at {self.base_url}: {exc}"
                    ) from None
            return self._api

    async def _call(
        self, fn: Callable[..., T], *args: Any, _stream: bool = False, **kwargs: Any
    ) -> T:
        def run() -> T:
            try:
                return fn(*args, **kwargs)
            except requests.exceptions.ConnectionError as exc:
                with self._lock:
                    self._api = None  # reconnect (and re-negotiate the version) next time
                raise RuntimeUnavailableError(
                    f"cannot reach dockerd at {self.base_url}: {exc}"
                ) from None

        pool = self._stream_pool if _stream else self._pool
        return await asyncio.get_running_loop().run_in_executor(pool, run)

    async def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            await asyncio.to_thread(api.close)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stream_pool.shutdown(wait=False, cancel_futures=True)

    # -- ContainerRuntime ------------------------------------------------------------

    async def version(self) -> str:
        data = await self._call(lambda: self._client().version())
        return f"docker://{data.get('Version', 'unknown')}"

    async def list_containers(self, pod_uid: str | None = None) -> list[ContainerInfo]:
        label = f"{LABEL_POD_UID}={pod_uid}" if pod_uid else LABEL_POD_UID

        def run() -> list[ContainerInfo]:
            api = self._client()
            out = []
            seen = set()
            for summary in api.containers(all=True, filters={"label": label}):
                cid = summary["Id"]
                seen.add(cid)
                state = summary.get("State", "")
                cached = self._inspected.get(cid)
                # A running or exited container's details do not change until its
                # state does; a created one may yet record a start error.
                if cached is not None and cached[0] == state and state in ("running", "exited"):
                    out.append(cached[1])
                    continue
                try:
                    info = info_from_inspect(api.inspect_container(cid))
                except docker.errors.NotFound:
                    continue  # removed between list and inspect
                self._inspected[cid] = (state, info)
                out.append(info)
            if pod_uid is None:
                for cid in [c for c in self._inspected if c not in seen]:
                    del self._inspected[cid]
            return out

        return await self._call(run)

    async def inspect_container(self, container_id: str) -> ContainerInfo | None:
        def run() -> ContainerInfo | None:
            try:
                return info_from_inspect(self._client().inspect_container(container_id))
            except docker.errors.NotFound:
                return None

        return await self._call(run)

    async def image_present(self, image: str) -> bool:
        def run() -> bool:
            try:
                self._client().inspect_image(image)
                return True
            except docker.errors.ImageNotFound:
                return False
            except docker.errors.NotFound:
                return False

        return await self._call(run)

    async def ensure_image(self, image: str, pull_policy: str) -> str:
        def inspect() -> str | None:
            try:
                return str(self._client().inspect_image(image)["Id"])
            except docker.errors.NotFound:
                return None

        def pull() -> str:
            repo, tag = split_image(image)
            try:
                self._client().pull(repo, tag=tag)
                return str(self._client().inspect_image(image)["Id"])
            except docker.errors.APIError as exc:
                raise ImagePullError(f'Failed to pull image "{image}": {_message(exc)}') from None

        if pull_policy != "Always":
            existing = await self._call(inspect)
            if existing is not None:
                return existing
            if pull_policy == "Never":
                raise ImageNotPresentError(
                    f'Container image "{image}" is not present with pull policy of Never'
                )
        return await self._call(pull)

    async def list_images(self) -> list[tuple[list[str], int]]:
        def run() -> list[tuple[list[str], int]]:
            out = []
            for img in self._client().images():
                names = [t for t in (img.get("RepoTags") or []) if t != "<none>:<none>"]
                names += [d for d in (img.get("RepoDigests") or []) if "<none>" not in d]
                if names:
                    out.append((names, int(img.get("Size") or 0)))
            return out

        return await self._call(run)

    async def remove_container(self, container_id: str) -> None:
        def run() -> None:
            self._inspected.pop(container_id, None)
            try:
                self._client().remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if "already in progress" not in _message(exc):
                    raise

        await self._call(run)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        def run() -> None:
            api = self._client()
            try:
                # Docker's own stop: the image/container stop signal, wait, SIGKILL.
                api.stop(container_id, timeout=max(0, round(timeout)))
            except docker.errors.NotFound:
                pass
            except (requests.exceptions.ReadTimeout, docker.errors.APIError) as exc:
                log.warning("stopping %s: %s; killing it", container_id[:12], exc)
                with contextlib.suppress(docker.errors.APIError):
                    api.kill(container_id)

        await self._call(run)

    async def exec(
        self, container_id: str, command: Sequence[str], timeout: float | None = None
    ) -> ExecResult:
        def create() -> str:
            return str(
                self._client().exec_create(container_id, list(command), stdout=True, stderr=True)[
                    "Id"
                ]
            )

        def start(exec_id: str) -> ExecResult:
            api = self._client()
            out = api.exec_start(exec_id, stream=False, demux=False)
            code = api.exec_inspect(exec_id).get("ExitCode")
            return ExecResult(exit_code=int(code if code is not None else -1), output=out or b"")

        try:
            exec_id = await self._call(create)
        except docker.errors.APIError as exc:
            return ExecResult(exit_code=-1, output=_message(exc).encode())
        try:
            return await asyncio.wait_for(self._call(start, exec_id, _stream=True), timeout)
        except TimeoutError:
            # The process keeps running inside; Kubernetes treats it as a failed probe too.
            raise TimeoutError(f"command {list(command)!r} timed out after {timeout:g}s") from None
        except docker.errors.APIError as exc:
            return ExecResult(exit_code=-1, output=_message(exc).encode())

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: datetime | None = None,
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=256)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        holder: dict[str, Any] = {}

        def produce() -> None:
            try:
                kwargs: dict[str, Any] = {
                    "stdout": True,
                    "stderr": True,
                    "stream": True,
                    "follow": follow,
                    "timestamps": timestamps,
                    "tail": "all" if tail is None else tail,
                }
                if since is not None:
                    kwargs["since"] = since
                stream = self._client().logs(container_id, **kwargs)
                holder["stream"] = stream
                for chunk in stream:
                    if stop.is_set():
                        break
                    asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
                end: BaseException | None = None
            except BaseException as exc:
                end = exc
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(queue.put(end), loop).result()

        worker = loop.run_in_executor(self._stream_pool, produce)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, docker.errors.NotFound):
                        raise LookupError(f"container {container_id} not found") from None
                    raise item
                yield item
        finally:
            stop.set()
            stream = holder.get("stream")
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            # Unblock a producer waiting on a full queue.
            while not queue.empty():
                queue.get_nowait()
            if worker.done():
                with contextlib.suppress(BaseException):
                    worker.result()

    # -- PodRuntime ------------------------------------------------------------------

    async def create_container(self, spec: ContainerSpec) -> str:
        def run() -> str:
            api = self._client()
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
            host: dict[str, Any] = {
                "binds": [
                    f"{m.host_path}:{m.container_path}:{'ro' if m.read_only else 'rw'}"
                    for m in spec.mounts
                ],
                "privileged": spec.privileged,
                "read_only": spec.read_only_rootfs,
                "restart_policy": {"Name": "no"},
            }
            if spec.cap_add:
                host["cap_add"] = list(spec.cap_add)
            if spec.cap_drop:
                host["cap_drop"] = list(spec.cap_drop)
            host.update(namespace_modes(spec, self.sandbox_ipc))
            if spec.cpu_limit_millis:
                host["cpu_period"] = CPU_PERIOD_US
                host["cpu_quota"] = max(1000, spec.cpu_limit_millis * CPU_PERIOD_US // 1000)
            if spec.cpu_request_millis:
                # As the kubelet: shares proportional to the request, at least 2.
                host["cpu_shares"] = max(2, spec.cpu_request_millis * 1024 // 1000)
            if spec.memory_limit_bytes:
                host["mem_limit"] = spec.memory_limit_bytes
                host["memswap_limit"] = spec.memory_limit_bytes
            kwargs: dict[str, Any] = {
                "image": spec.image,
                "labels": labels,
                "environment": [f"{k}={v}" for k, v in spec.env.items()],
                "working_dir": spec.working_dir or None,
                "tty": spec.tty,
                "stdin_open": spec.stdin,
                "host_config": api.create_host_config(**host),
            }
            if spec.entrypoint is not None:
                kwargs["entrypoint"] = list(spec.entrypoint)
            if spec.cmd is not None:
                kwargs["command"] = list(spec.cmd)
            if spec.hostname and spec.type == "sandbox" and not spec.host_network:
                kwargs["hostname"] = spec.hostname
            if spec.user:
                kwargs["user"] = spec.user
            if spec.stop_signal:
                kwargs["stop_signal"] = spec.stop_signal
            try:
                created = api.create_container(**kwargs)
            except docker.errors.ImageNotFound as exc:
                raise ContainerCreateError(_message(exc)) from None
            except docker.errors.APIError as exc:
                raise ContainerCreateError(_message(exc)) from None
            return str(created["Id"])

        return await self._call(run)

    async def start_container(self, container_id: str) -> None:
        def run() -> None:
            try:
                self._client().start(container_id)
            except docker.errors.APIError as exc:
                raise ContainerCreateError(_message(exc)) from None

        await self._call(run)
