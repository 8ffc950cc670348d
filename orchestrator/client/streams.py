"""Pod logs and exec through the apiserver, which proxies them to the agent
of the pod's node (DESIGN.md section 1).

    async for data in pod_logs(client, "default", "web", follow=True):
        sys.stdout.buffer.write(data)

    async with await pod_exec(client, "default", "web", ["sh"], stdin=True, tty=True) as s:
        await s.send_stdin(b"ls\\n")
        async for stream, data in s.output():   # stream: "stdout" or "stderr"
            ...
        s.exit_code                             # the remote command's exit status
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.api.pb import apiservice_pb2_grpc as pb_grpc
from orchestrator.client.client import ApiError, Client, translate_error

# kubectl's annotation naming the container `logs` and `exec` use by default.
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
STDIN_CHUNK = 32 * 1024


class ContainerChoiceError(ValueError):
    """No container given and the pod has several, or the one given is not the pod's."""


def choose_container(pod: Any, requested: str = "") -> str:
    """The container `logs`/`exec` act on, as kubectl chooses it: the one
    named, else the pod's default-container annotation, else its only one."""
    name = pod.metadata.name
    app = [c.name for c in pod.spec.containers]
    init = [c.name for c in pod.spec.init_containers]
    ephemeral = [c.name for c in getattr(pod.spec, "ephemeral_containers", [])]
    if requested:
        if requested not in (*app, *init, *ephemeral):
            raise ContainerChoiceError(f"container {requested} is not valid for pod {name}")
        return requested
    default = pod.metadata.annotations.get(DEFAULT_CONTAINER_ANNOTATION, "")
    if default and default in app:
        return default
    if len(app) == 1:
        return app[0]
    if not app:
        raise ContainerChoiceError(f"pod {name} has no containers")
    message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(app)}]"
    if init:
        message += f" or one of the init containers: [{' '.join(init)}]"
    raise ContainerChoiceError(message)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_since(text: str) -> int:
    """kubectl's --since: a Go duration (10s, 5m, 1h, 1h30m) as whole seconds,
    rounded up (at least 1). ValueError says what is wrong."""
    value = text.strip()
    parts = _DURATION_PART.findall(value)
    if not value or not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f'invalid duration "{text}": use e.g. 10s, 5m or 1h')
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f'--since must be more than 0, got "{text}"')
    whole = int(seconds)
    return max(1, whole + (1 if seconds > whole else 0))


def _stub(client: Client) -> pb_grpc.ApiStub:
    # Read on every call: Client.reconnect swaps the stub for renewed credentials.
    return client._stub


async def pod_logs(
    client: Client,
    namespace: str,
    name: str,
    *,
    container: str = "",
    follow: bool = False,
    tail_lines: int | None = None,
    since_seconds: int | None = None,
    timestamps: bool = False,
    previous: bool = False,
) -> AsyncIterator[bytes]:
    """The container's log as it arrives. Without `follow` it ends at the end
    of the log; with it, when the container ends or the caller stops."""
    request = pb.PodLogsRequest(
        namespace=namespace,
        name=name,
        container=container,
        follow=follow,
        timestamps=timestamps,
        previous=previous,
    )
    if tail_lines is not None and tail_lines >= 0:
        request.tail_lines = tail_lines
    if since_seconds is not None:
        request.since_seconds = since_seconds
    call = _stub(client).PodLogs(request)
    try:
        async for chunk in call:
            yield chunk.data
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:
            return
        raise translate_error(exc) from None
    finally:
        call.cancel()


class ExecSession:
    """One running remote command. Read `output()` to the end, then `exit_code`."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._lock = asyncio.Lock()  # one writer at a time on the gRPC stream
        self._stdin_closed = False
        self.exit_code: int | None = None

    async def _write(self, msg: apb.ExecInput) -> None:
        async with self._lock:
            if self._call.done():
                return
            try:
                await self._call.write(msg)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                pass  # the command has ended: its output and exit code tell why

    async def send_stdin(self, data: bytes) -> None:
        if self._stdin_closed:
            return
        for i in range(0, len(data), STDIN_CHUNK):
            await self._write(apb.ExecInput(stdin=data[i : i + STDIN_CHUNK]))

    async def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            await self._write(apb.ExecInput(close_stdin=True))

    async def resize(self, rows: int, cols: int) -> None:
        await self._write(apb.ExecInput(resize=apb.TerminalSize(rows=rows, cols=cols)))

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        """("stdout" | "stderr", data) until the command ends; sets exit_code."""
        try:
            async for out in self._call:
                which = out.WhichOneof("output")
                if which == "stdout":
                    yield "stdout", out.stdout
                elif which == "stderr":
                    yield "stderr", out.stderr
                elif which == "exit":
                    self.exit_code = out.exit.code
        except grpc.aio.AioRpcError as exc:
            raise translate_error(exc) from None
        if self.exit_code is None:
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE, "the exec stream ended without the command's exit code"
            )

    async def close(self) -> None:
        self._call.cancel()

    async def __aenter__(self) -> ExecSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def pod_exec(
    client: Client,
    namespace: str,
    name: str,
    command: Sequence[str],
    *,
    container: str = "",
    stdin: bool = False,
    tty: bool = False,
    rows: int = 0,
    cols: int = 0,
) -> ExecSession:
    """Start `command` in the pod's container. Errors (pod not found, not
    running, forbidden) surface from the session's `output()`."""
    call = _stub(client).PodExec()
    session = ExecSession(call)
    start = apb.ExecStart(
        namespace=namespace,
        pod=name,
        container=container,
        command=list(command),
        stdin=stdin,
        tty=tty,
        rows=max(0, rows),
        cols=max(0, cols),
    )
    await session._write(apb.ExecInput(start=start))
    if not stdin and not tty:  # nothing more to send (a terminal still sends resizes)
        with contextlib.suppress(Exception):
            async with session._lock:
                await call.done_writing()
    return session
