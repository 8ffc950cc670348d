"""Container logs and exec on the node, for the agent API (agent/server.py).

`ContainerStreams` is what the server needs from the container runtime:
find a pod's container by its labels, stream its log, start a command in it.
`DockerStreams` implements it on the node's dockerd; tests use fakes. The
relay (`relay_exec`) and the checks are plain functions of those interfaces.

The docker SDK blocks, so its calls run on a small pool of our own threads
(never the event loop, never the default executor that the kubelet's runtime
uses). A followed log holds one dedicated thread for its lifetime, so their
number is capped. An exec's stream is docker's hijacked HTTP connection,
which we open with asyncio ourselves: the SDK's `exec_start(socket=True)`
hands back the socket but drops whatever its HTTP parser had already
buffered past the response headers, and a quick command's whole output can
sit there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import grpc

from agent.runtime.types import (
    LABEL_CONTAINER_NAME,
    LABEL_CONTAINER_TYPE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
)
from orchestrator.api.pb import agent_pb2 as apb

log = logging.getLogger(__name__)
T = TypeVar("T")

# Bounds. A log chunk and an output message stay well under gRPC's limits;
# queues between threads and the loop are short so a slow reader slows the
# container's side instead of filling memory.
CHUNK = 64 * 1024
MAX_STDIN_MESSAGE = 1024 * 1024
QUEUE_DEPTH = 16
MAX_LOG_STREAMS = 64
MAX_EXEC_SESSIONS = 64
MAX_COMMAND_ARGS = 4096
MAX_COMMAND_BYTES = 256 * 1024
MAX_TERMINAL = 10_000
# How long an exec may take to report its exit code after its output ended.
EXIT_CODE_WAIT = 10.0
STDOUT, STDERR = 1, 2


class StreamError(Exception):
    """A request that cannot be served, with the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message: str) -> StreamError:
    return StreamError(grpc.StatusCode.INVALID_ARGUMENT, message)


# -- requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A container of a pod, as the apiserver names it."""

    namespace: str
    pod: str
    pod_uid: str
    container: str

    def describe(self) -> str:
        return f'container "{self.container}" in pod "{self.pod}"'


def _target(namespace: str, pod: str, pod_uid: str, container: str) -> Target:
    missing = [
        n for n, v in (("namespace", namespace), ("pod", pod), ("container", container)) if not v
    ]
    if missing:
        raise bad_request(f"{', '.join(missing)} must be given")
    return Target(namespace, pod, pod_uid, container)


def check_logs_request(req: apb.LogsRequest) -> Target:
    target = _target(req.namespace, req.pod, req.pod_uid, req.container)
    if req.HasField("tail_lines") and req.tail_lines < 0:
        raise bad_request(f"tailLines must be 0 or more, got {req.tail_lines}")
    if req.HasField("since_seconds") and req.since_seconds <= 0:
        raise bad_request(f"sinceSeconds must be more than 0, got {req.since_seconds}")
    return target


def check_exec_start(start: apb.ExecStart) -> Target:
    target = _target(start.namespace, start.pod, start.pod_uid, start.container)
    if not start.command:
        raise bad_request("a command must be given")
    if len(start.command) > MAX_COMMAND_ARGS:
        raise bad_request(f"the command has more than {MAX_COMMAND_ARGS} arguments")
    if sum(len(a) for a in start.command) > MAX_COMMAND_BYTES:
        raise bad_request(f"the command is longer than {MAX_COMMAND_BYTES} bytes")
    if start.rows > MAX_TERMINAL or start.cols > MAX_TERMINAL:
        raise bad_request(f"terminal size {start.rows}x{start.cols} is out of range")
    return target


# -- which container ----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One docker container of the pod's container name (any instance)."""

    id: str
    state: str  # docker's: created, running, paused, restarting, exited, dead
    restart_count: int
    created: float


def candidates_from_docker(rows: Sequence[dict[str, Any]]) -> list[Candidate]:
    """Docker's container list (GET /containers/json) as candidates, newest first."""
    out = []
    for row in rows:
        labels = row.get("Labels") or {}
        if labels.get(LABEL_CONTAINER_TYPE) == "sandbox":
            continue
        try:
            restarts = int(labels.get(LABEL_RESTART_COUNT, "0"))
        except ValueError:
            restarts = 0
        out.append(
            Candidate(
                id=str(row["Id"]),
                state=str(row.get("State", "")),
                restart_count=restarts,
                created=float(row.get("Created") or 0),
            )
        )
    out.sort(key=lambda c: (c.restart_count, c.created), reverse=True)
    return out


def pick_container(target: Target, found: Sequence[Candidate], *, previous: bool) -> Candidate:
    """The current instance (the newest), or with `previous` the one before it,
    as Kubernetes' `logs --previous` shows the instance before the last restart."""
    if not previous:
        if not found:
            raise bad_request(f"{target.describe()} is waiting to start: it has not been created")
        return found[0]
    if len(found) < 2:
        raise bad_request(f"previous terminated {target.describe()} not found")
    return found[1]


def running(target: Target, found: Sequence[Candidate]) -> Candidate:
    """The container to exec in: the newest instance, which must be running."""
    if not found:
        raise bad_request(
            f'unable to upgrade connection: container not found ("{target.container}")'
        )
    if found[0].state != "running":
        raise bad_request(
            f"unable to upgrade connection: {target.describe()} is not running "
            f"(state {found[0].state})"
        )
    return found[0]


# -- the runtime side ---------------------------------------------------------------


class ExecProcess(Protocol):
    """A started command: its output, its stdin, its terminal and its exit code."""

    async def read(self) -> tuple[int, bytes] | None:
        """(STDOUT or STDERR, data), or None once the output has ended."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, rows: int, cols: int) -> None: ...

    async def exit_code(self) -> int:
        """After the output ended: the command's exit status."""
        ...

    async def close(self) -> None: ...


class ContainerStreams(Protocol):
    async def find(self, target: Target) -> list[Candidate]:
        """Every instance of the target's container on this node, newest first."""
        ...

    def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int | None,
        since_seconds: int | None,
        timestamps: bool,
    ) -> AsyncIterator[bytes]: ...

    async def exec(
        self,
        container_id: str,
        command: Sequence[str],
        *,
        stdin: bool,
        tty: bool,
        rows: int = 0,
        cols: int = 0,
    ) -> ExecProcess: ...

    async def close(self) -> None: ...


# -- relays -------------------------------------------------------------------------


async def aclose(it: AsyncIterator[Any]) -> None:
    """Close an async generator now (running its cleanup), not when collected."""
    closer = getattr(it, "aclose", None)
    if closer is not None:
        await closer()


async def coalesce(source: AsyncIterator[bytes], limit: int = CHUNK) -> AsyncIterator[bytes]:
    """Re-chunk a byte stream into pieces of at most `limit` bytes (big frames split)."""
    try:
        async for data in source:
            for i in range(0, len(data), limit):
                yield data[i : i + limit]
    finally:
        await aclose(source)


async def pump_exec_input(
    process: ExecProcess, inputs: AsyncIterator[apb.ExecInput], *, stdin: bool
) -> None:
    """Forward the caller's stdin and terminal resizes until its stream ends.
    The end of the caller's stream, like `close_stdin`, closes the command's
    stdin. Only a bad message is an error (StreamError); the caller's stream
    breaking just ends the input."""
    stdin_open = stdin
    try:
        async for msg in inputs:
            which = msg.WhichOneof("input")
            if which == "stdin":
                if len(msg.stdin) > MAX_STDIN_MESSAGE:
                    raise bad_request(
                        f"a stdin message may carry at most {MAX_STDIN_MESSAGE} bytes"
                    )
                if stdin_open and msg.stdin:
                    try:
                        await process.write(msg.stdin)
                    except (ConnectionError, OSError):
                        stdin_open = False  # the command is gone or closed its stdin
            elif which == "resize":
                rows, cols = msg.resize.rows, msg.resize.cols
                if 0 < rows <= MAX_TERMINAL and 0 < cols <= MAX_TERMINAL:
                    try:
                        await process.resize(rows, cols)
                    except StreamError as exc:  # e.g. the command just ended
                        log.debug("exec resize failed: %s", exc.message)
            elif which == "close_stdin":
                if stdin_open:
                    stdin_open = False
                    with contextlib.suppress(ConnectionError, OSError):
                        await process.close_stdin()
            elif which == "start":
                raise bad_request("start may only be the first message of an exec stream")
    except StreamError:
        raise
    except Exception as exc:
        log.debug("exec input ended: %r", exc)
    finally:
        if stdin_open:
            with contextlib.suppress(ConnectionError, OSError):
                await process.close_stdin()


def _raise_input_error(pump: asyncio.Task[None]) -> None:
    if pump.done() and not pump.cancelled() and isinstance(pump.exception(), StreamError):
        raise pump.exception()  # type: ignore[misc]


async def _next_output(process: ExecProcess, pump: asyncio.Task[None]) -> tuple[int, bytes] | None:
    """The next piece of output, unless the input fails first."""
    read = asyncio.ensure_future(process.read())
    try:
        while not pump.done():
            await asyncio.wait({read, pump}, return_when=asyncio.FIRST_COMPLETED)
            if read.done():
                return read.result()
        _raise_input_error(pump)
        return await read
    finally:
        if not read.done():
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await read


async def relay_exec(
    process: ExecProcess, inputs: AsyncIterator[apb.ExecInput], *, stdin: bool
) -> AsyncIterator[apb.ExecOutput]:
    """The command's output as ExecOutput messages, ending with its exit code,
    while the caller's input is forwarded alongside. A bad input message ends
    the relay with its error. The process is closed in every case."""
    pump = asyncio.create_task(pump_exec_input(process, inputs, stdin=stdin))
    try:
        while (item := await _next_output(process, pump)) is not None:
            stream, data = item
            if stream == STDERR:
                yield apb.ExecOutput(stderr=data)
            else:
                yield apb.ExecOutput(stdout=data)
        _raise_input_error(pump)
        yield apb.ExecOutput(exit=apb.ExecExit(code=await process.exit_code()))
    finally:
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        await process.close()


# -- threads to asyncio -------------------------------------------------------------


async def iterate_in_thread(
    open_iter: Callable[[], Iterator[T]],
    close: Callable[[Iterator[T]], None],
    *,
    depth: int = QUEUE_DEPTH,
    name: str = "stream",
) -> AsyncIterator[T]:
    """Items of a blocking iterator, read on a dedicated daemon thread.

    At most `depth` items wait in between: a slow consumer blocks the thread,
    never grows memory. Closing the async iterator (or cancelling its
    consumer) calls `close(iterator)` to unblock the thread's read, and the
    thread exits on its own.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    slots = threading.Semaphore(depth)
    stop = threading.Event()
    holder: list[Iterator[T]] = []
    lock = threading.Lock()

    def deliver(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def run() -> None:
        try:
            it = open_iter()
            with lock:
                holder.append(it)
                closed = stop.is_set()
            if closed:
                close(it)
                return
            for item in it:
                while not slots.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                deliver("item", item)
            deliver("end", None)
        except BaseException as exc:
            if not stop.is_set():
                deliver("error", exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "item":
                slots.release()
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        with lock:
            stop.set()
            its = list(holder)
        for it in its:
            with contextlib.suppress(Exception):
                close(it)


# -- Docker -------------------------------------------------------------------------


def _docker_error(exc: Exception) -> StreamError:
    explanation = getattr(exc, "explanation", None) or str(exc)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 404:
        return StreamError(grpc.StatusCode.NOT_FOUND, f"container runtime: {explanation}")
    if status == 409:
        return bad_request(f"container runtime: {explanation}")
    return StreamError(grpc.StatusCode.UNAVAILABLE, f"container runtime: {explanation}")


class DockerExec:
    """A command started with docker exec: its hijacked connection plus the
    SDK for resize and inspect."""

    def __init__(
        self,
        streams: DockerStreams,
        exec_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tty: bool,
    ) -> None:
        self._streams = streams
        self.exec_id = exec_id
        self._reader = reader
        self._writer = writer
        self._tty = tty
        self._left = 0  # bytes left in the current multiplexed frame
        self._stream = STDOUT

    async def read(self) -> tuple[int, bytes] | None:
        if self._tty:
            data = await self._reader.read(CHUNK)
            return (STDOUT, data) if data else None
        # Docker's multiplexed stream: 8-byte header (stream, 0, 0, 0, big-endian
        # size), then that many bytes. Stream 3 carries docker's own errors.
        while self._left == 0:
            try:
                header = await self._reader.readexactly(8)
            except asyncio.IncompleteReadError:
                return None
            stream, size = struct.unpack(">BxxxL", header)
            self._stream = STDERR if stream in (2, 3) else STDOUT
            self._left = size
        try:
            data = await self._reader.readexactly(min(self._left, CHUNK))
        except asyncio.IncompleteReadError as exc:
            self._left = 0
            return (self._stream, exc.partial) if exc.partial else None
        self._left -= len(data)
        return self._stream, data

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close_stdin(self) -> None:
        if self._writer.can_write_eof() and not self._writer.is_closing():
            self._writer.write_eof()

    async def resize(self, rows: int, cols: int) -> None:
        if self._tty:
            await self._streams.call("exec_resize", self.exec_id, height=rows, width=cols)

    async def exit_code(self) -> int:
        deadline = time.monotonic() + EXIT_CODE_WAIT
        delay = 0.01
        while True:
            info = await self._streams.call("exec_inspect", self.exec_id)
            code = info.get("ExitCode")
            if not info.get("Running") and code is not None:
                return int(code)
            if time.monotonic() > deadline:
                raise StreamError(
                    grpc.StatusCode.UNAVAILABLE,
                    "the command's output ended but the container runtime reports it still runs",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class DockerStreams:
    """ContainerStreams on a dockerd (`unix:///path` or `tcp://host:port`)."""

    def __init__(self, base_url: str = "unix:///run/docker.sock", *, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._api: Any = None
        self._api_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="agent-docker")
        self._log_streams = asyncio.Semaphore(MAX_LOG_STREAMS)
        self._execs = asyncio.Semaphore(MAX_EXEC_SESSIONS)

    @property
    def api(self) -> Any:
        """The SDK client, made on first use (on a worker thread: negotiating
        the API version is a request), again after a failure."""
        with self._api_lock:
            if self._api is None:
                import docker  # the agent's runtime dependency; late for the unit tests

                self._api = docker.APIClient(
                    base_url=self.base_url,
                    version="auto",
                    timeout=int(self.timeout),
                    max_pool_size=MAX_LOG_STREAMS + 8,
                )
            return self._api

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """An SDK call by name, on our threads; docker errors as StreamError."""
        import docker.errors

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, lambda: getattr(self.api, method)(*args, **kwargs)
            )
        except docker.errors.APIError as exc:
            raise _docker_error(exc) from None
        except (docker.errors.DockerException, OSError) as exc:
            raise StreamError(
                grpc.StatusCode.UNAVAILABLE, f"container runtime unreachable: {exc}"
            ) from None

    async def find(self, target: Target) -> list[Candidate]:
        labels = [f"{LABEL_CONTAINER_NAME}={target.container}"]
        if target.pod_uid:
            labels.append(f"{LABEL_POD_UID}={target.pod_uid}")
        else:
            labels += [
                f"{LABEL_POD_NAMESPACE}={target.namespace}",
                f"{LABEL_POD_NAME}={target.pod}",
            ]
        rows = await self.call("containers", all=True, filters={"label": labels})
        return candidates_from_docker(rows)

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int | None,
        since_seconds: int | None,
        timestamps: bool,
    ) -> AsyncIterator[bytes]:
        if self._log_streams.locked():
            raise StreamError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this node already serves {MAX_LOG_STREAMS} log streams; try again later",
            )
        kwargs: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "stream": True,
            "follow": follow,
            "timestamps": timestamps,
            "tail": "all" if tail is None else tail,
        }
        if since_seconds:
            kwargs["since"] = max(1, int(time.time()) - since_seconds)

        def open_logs() -> Iterator[bytes]:
            result: Iterator[bytes] = self.api.logs(container_id, **kwargs)
            return result

        def close_logs(stream: Iterator[bytes]) -> None:
            closer = getattr(stream, "close", None)
            if closer is not None:
                closer()

        import docker.errors

        async with self._log_streams:
            try:
                chunks = iterate_in_thread(open_logs, close_logs, name="agent-logs")
                try:
                    async for data in chunks:
                        yield data
                finally:
                    await aclose(chunks)
            except docker.errors.APIError as exc:
                raise _docker_error(exc) from None
            except (docker.errors.DockerException, OSError) as exc:
                raise StreamError(
                    grpc.StatusCode.UNAVAILABLE, f"container runtime unreachable: {exc}"
                ) from None

    async def exec(
        self,
        container_id: str,
        command: Sequence[str],
        *,
        stdin: bool,
        tty: bool,
        rows: int = 0,
        cols: int = 0,
    ) -> ExecProcess:
        if self._execs.locked():
            raise StreamError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this node already runs {MAX_EXEC_SESSIONS} exec sessions; try again later",
            )
        await self._execs.acquire()
        try:
            created = await self.call(
                "exec_create",
                container_id,
                list(command),
                stdout=True,
                stderr=True,
                stdin=stdin,
                tty=tty,
            )
            exec_id = str(created["Id"])
            reader, writer = await self._hijack(exec_id, tty=tty)
        except BaseException:
            self._execs.release()
            raise
        process = _ReleasingExec(self, exec_id, reader, writer, tty=tty)
        if tty and rows and cols:
            with contextlib.suppress(StreamError):
                await process.resize(rows, cols)
        return process

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = urlparse(self.base_url)
        limit = 2 * CHUNK
        if url.scheme in ("unix", "http+unix"):
            return await asyncio.open_unix_connection(url.path, limit=limit)
        if url.scheme in ("tcp", "http"):
            return await asyncio.open_connection(url.hostname, url.port or 2375, limit=limit)
        raise StreamError(
            grpc.StatusCode.UNAVAILABLE,
            f"exec needs a unix:// or tcp:// docker host, not {self.base_url}",
        )

    async def _hijack(
        self, exec_id: str, *, tty: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """POST /exec/{id}/start with `Upgrade: tcp`, as the docker CLI does;
        after the 101 the connection carries the command's stdio."""
        try:
            reader, writer = await self._open()
        except OSError as exc:
            raise StreamError(
                grpc.StatusCode.UNAVAILABLE, f"container runtime unreachable: {exc}"
            ) from None
        try:
            body = json.dumps({"Detach": False, "Tty": tty}).encode()
            path = f"/v{self.api.api_version}/exec/{exec_id}/start"
            head = (
                f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                f"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                raise StreamError(
                    grpc.StatusCode.UNAVAILABLE, f"container runtime: bad exec response ({exc})"
                ) from None
            status_line = raw.split(b"\r\n", 1)[0].decode(errors="replace")
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if status not in (101, 200):
                detail = await _error_body(reader, raw)
                exc2 = StreamError(grpc.StatusCode.UNAVAILABLE, f"container runtime: {detail}")
                if status == 404:
                    exc2 = StreamError(grpc.StatusCode.NOT_FOUND, f"container runtime: {detail}")
                elif status == 409:
                    exc2 = bad_request(f"container runtime: {detail}")
                raise exc2
            return reader, writer
        except BaseException:
            writer.close()
            raise

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            if self._api is not None:
                self._api.close()


class _ReleasingExec(DockerExec):
    """Gives its slot back to DockerStreams once closed."""

    _released = False

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if not self._released:
                self._released = True
                self._streams._execs.release()


async def _error_body(reader: asyncio.StreamReader, head: bytes) -> str:
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = min(int(value.strip()), 64 * 1024)
    body = b""
    with contextlib.suppress(Exception):
        body = await asyncio.wait_for(reader.read(length or 64 * 1024), 5)
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body.decode(errors="replace").strip()
    return message or head.split(b"\r\n", 1)[0].decode(errors="replace")
