"""Container probes and lifecycle handlers: exec, httpGet, tcpSocket.

One asyncio task per (container, probe kind), as the kubelet's prober
workers: wait initialDelaySeconds, probe every periodSeconds with
timeoutSeconds, flip the result after successThreshold successes or
failureThreshold failures in a row. A startup probe gates the other two;
a failed liveness or startup probe marks the container unhealthy, which the
pod's sync turns into a restart; readiness drives the Ready condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.pods.status import ProbeState
from agent.runtime.types import ContainerInfo, ContainerRuntime, ContainerState

log = logging.getLogger(__name__)

MAX_BODY = 10 * 1024
USER_AGENT = "orch-probe/1.0"


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    message: str = ""


def resolve_port(port: str, container: Any) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    text = str(port)
    if text.isdigit():
        return int(text)
    for p in getattr(container, "ports", ()):
        if p.name == text:
            return int(p.container_port)
    raise ValueError(f'port "{text}" is not a number nor a named port of the container')


async def http_get(
    host: str,
    port: int,
    path: str = "/",
    *,
    scheme: str = "HTTP",
    headers: list[tuple[str, str]] | None = None,
    timeout: float = 1.0,
) -> ProbeOutcome:
    """GET over HTTP/1.1; success is a status code in [200, 400)."""

    async def go() -> ProbeOutcome:
        ctx = None
        if scheme.upper() == "HTTPS":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # as the kubelet: probes do not verify
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        try:
            host_header = f"{host}:{port}"
            lines = [f"GET {path or '/'} HTTP/1.1"]
            extra = dict((k.lower(), (k, v)) for k, v in (headers or []))
            if "host" in extra:
                host_header = extra.pop("host")[1]
            lines.append(f"Host: {host_header}")
            if "user-agent" not in extra:
                lines.append(f"User-Agent: {USER_AGENT}")
            if "accept" not in extra:
                lines.append("Accept: */*")
            for k, v in extra.values():
                lines.append(f"{k}: {v}")
            lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.decode("latin-1").split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                return ProbeOutcome(False, f"malformed HTTP response: {status_line[:80]!r}")
            code = int(parts[1])
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.read(MAX_BODY), 0.2)
            if 200 <= code < 400:
                return ProbeOutcome(True, f"HTTP probe succeeded with statuscode: {code}")
            return ProbeOutcome(False, f"HTTP probe failed with statuscode: {code}")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    url = f"{scheme.lower()}://{host}:{port}{path or '/'}"
    try:
        return await asyncio.wait_for(go(), timeout)
    except TimeoutError:
        return ProbeOutcome(
            False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded)'
        )
    except OSError as exc:
        return ProbeOutcome(False, f'Get "{url}": {exc.strerror or exc}')


async def tcp_connect(host: str, port: int, timeout: float = 1.0) -> ProbeOutcome:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return ProbeOutcome(False, f"dial tcp {host}:{port}: i/o timeout")
    except OSError as exc:
        return ProbeOutcome(False, f"dial tcp {host}:{port}: {exc.strerror or exc}")
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return ProbeOutcome(True)


async def run_handler(
    handler: Any,
    *,
    runtime: ContainerRuntime,
    container_id: str,
    container: Any,
    pod_ip: str,
    timeout: float,
) -> ProbeOutcome:
    """Run a Probe's or a LifecycleHandler's action (exec, httpGet, tcpSocket, sleep)."""
    try:
        if handler.HasField("exec"):
            command = list(handler.exec.command)
            if not command:
                return ProbeOutcome(False, "exec: no command")
            try:
                result = await runtime.exec(container_id, command, timeout=timeout)
            except TimeoutError:
                return ProbeOutcome(False, f"command {command!r} timed out")
            output = result.output.decode(errors="replace").strip()
            if result.exit_code == 0:
                return ProbeOutcome(True, output)
            return ProbeOutcome(
                False,
                f"command {command!r} exited with {result.exit_code}: {output}"
                if output
                else f"command {command!r} exited with {result.exit_code}",
            )
        if handler.HasField("http_get"):
            action = handler.http_get
            host = action.host or pod_ip or "127.0.0.1"
            port = resolve_port(action.port, container)
            headers = [(h.name, h.value) for h in action.http_headers]
            return await http_get(
                host,
                port,
                action.path or "/",
                scheme=action.scheme or "HTTP",
                headers=headers,
                timeout=timeout,
            )
        if handler.HasField("tcp_socket"):
            action = handler.tcp_socket
            host = action.host or pod_ip or "127.0.0.1"
            return await tcp_connect(host, resolve_port(action.port, container), timeout)
        if _has(handler, "sleep"):
            await asyncio.sleep(min(float(handler.sleep.seconds), timeout))
            return ProbeOutcome(True)
        if _has(handler, "grpc"):
            return ProbeOutcome(False, "gRPC probes are not supported by this node")
    except ValueError as exc:
        return ProbeOutcome(False, str(exc))
    return ProbeOutcome(False, "the handler has no action")


def _has(msg: Any, name: str) -> bool:
    try:
        return bool(msg.HasField(name))
    except ValueError:
        return False


# -- the manager -------------------------------------------------------------------------

KINDS = ("startup", "readiness", "liveness")


@dataclass
class _Result:
    ready: bool = False
    started: bool = False
    unhealthy: str = ""


EventSink = Callable[[Any, str, str, str], None]  # (pod, type, reason, message)


class ProbeManager:
    """Runs the probes of every running container of every pod."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        on_change: Callable[[str], None],
        *,
        events: EventSink | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.runtime = runtime
        self.on_change = on_change
        self.events = events
        self.clock = clock or (lambda: datetime.now(UTC))
        # (pod uid, container id, kind) -> task
        self._workers: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        # (pod uid, container id) -> result
        self._results: dict[tuple[str, str], _Result] = {}
        self._pods: dict[str, Any] = {}
        self._pod_ips: dict[str, str] = {}

    def update(self, pod: Any, containers: list[ContainerInfo], pod_ip: str | None) -> None:
        """Start probing the pod's running app containers; stop for the rest."""
        uid = pod.metadata.uid
        self._pods[uid] = pod
        if pod_ip:
            self._pod_ips[uid] = pod_ip
        specs = {c.name: c for c in pod.spec.containers}
        alive: set[tuple[str, str, str]] = set()
        for info in containers:
            if info.type != "app" or info.state != ContainerState.RUNNING:
                continue
            spec = specs.get(info.name)
            if spec is None:
                continue
            key = (uid, info.id)
            result = self._results.get(key)
            if result is None:
                result = _Result(
                    ready=not spec.HasField("readiness_probe"),
                    started=not spec.HasField("startup_probe"),
                )
                self._results[key] = result
            for kind in KINDS:
                if not spec.HasField(f"{kind}_probe"):
                    continue
                wkey = (uid, info.id, kind)
                alive.add(wkey)
                if wkey not in self._workers:
                    self._workers[wkey] = asyncio.create_task(
                        self._run(uid, info, spec, kind), name=f"probe-{kind}-{info.id[:12]}"
                    )
        for wkey in [k for k in self._workers if k[0] == uid and k not in alive]:
            self._workers.pop(wkey).cancel()
        running_ids = {c.id for c in containers if c.state == ContainerState.RUNNING}
        for rkey in [k for k in self._results if k[0] == uid and k[1] not in running_ids]:
            del self._results[rkey]

    def states(self, uid: str) -> dict[str, ProbeState]:
        return {
            cid: ProbeState(ready=r.ready and r.started, started=r.started)
            for (u, cid), r in self._results.items()
            if u == uid
        }

    def unhealthy(self, uid: str) -> dict[str, str]:
        return {
            cid: r.unhealthy for (u, cid), r in self._results.items() if u == uid and r.unhealthy
        }

    def remove_pod(self, uid: str) -> None:
        for wkey in [k for k in self._workers if k[0] == uid]:
            self._workers.pop(wkey).cancel()
        for rkey in [k for k in self._results if k[0] == uid]:
            del self._results[rkey]
        self._pods.pop(uid, None)
        self._pod_ips.pop(uid, None)

    async def stop(self) -> None:
        tasks = list(self._workers.values())
        self._workers.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _run(self, uid: str, info: ContainerInfo, spec: Any, kind: str) -> None:
        probe = getattr(spec, f"{kind}_probe")
        period = max(1, probe.period_seconds or 10)
        timeout = max(1, probe.timeout_seconds or 1)
        success_threshold = max(1, probe.success_threshold or 1)
        failure_threshold = max(1, probe.failure_threshold or 3)
        key = (uid, info.id)
        started_at = info.started_at or self.clock()
        delay = probe.initial_delay_seconds - (self.clock() - started_at).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        successes = failures = 0
        while True:
            result = self._results.get(key)
            if result is None:
                return
            if kind != "startup" and not result.started:
                await asyncio.sleep(min(period, 1))
                continue
            if kind == "startup" and result.started:
                return
            pod = self._pods.get(uid)
            try:
                outcome = await run_handler(
                    probe,
                    runtime=self.runtime,
                    container_id=info.id,
                    container=spec,
                    pod_ip=self._pod_ips.get(uid, ""),
                    timeout=float(timeout),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken runtime is a failed probe, not a dead worker
                outcome = ProbeOutcome(False, str(exc))
            result = self._results.get(key)
            if result is None:
                return
            if outcome.ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                if self.events is not None and pod is not None:
                    self.events(
                        pod,
                        "Warning",
                        "Unhealthy",
                        f"{kind.capitalize()} probe failed: {outcome.message}",
                    )
            changed = False
            if kind == "readiness":
                if outcome.ok and successes >= success_threshold and not result.ready:
                    result.ready, changed = True, True
                elif not outcome.ok and failures >= failure_threshold and result.ready:
                    result.ready, changed = False, True
            elif kind == "startup":
                if outcome.ok and successes >= success_threshold:
                    result.started, changed = True, True
                elif not outcome.ok and failures >= failure_threshold:
                    result.unhealthy = (
                        f"Container {spec.name} failed startup probe, will be restarted"
                    )
                    changed = True
            elif kind == "liveness" and not outcome.ok and failures >= failure_threshold:
                result.unhealthy = f"Container {spec.name} failed liveness probe, will be restarted"
                changed = True
            if changed:
                self.on_change(uid)
                if result.unhealthy or (kind == "startup" and result.started):
                    return
            await asyncio.sleep(period)
