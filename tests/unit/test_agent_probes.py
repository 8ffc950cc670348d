"""Probes against local HTTP/TCP servers on 127.0.0.1 and a fake runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.pods.testing import make_pod
from agent.probes import ProbeManager, http_get, run_handler, tcp_connect
from agent.runtime.fake import FakeRuntime
from agent.runtime.types import ContainerSpec, ExecResult

pytestmark = pytest.mark.unit


async def _http_server(handler_status: dict[str, int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ")[1].decode()
        if path == "/slow":
            await asyncio.sleep(5)
        code = handler_status.get(path, 404)
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    server = await _http_server({"/healthz": 200, "/redirect": 302, "/bad": 500})
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_http_get_statuses(http_port: int) -> None:
    assert (await http_get("127.0.0.1", http_port, "/healthz")).ok
    assert (await http_get("127.0.0.1", http_port, "/redirect")).ok
    bad = await http_get("127.0.0.1", http_port, "/bad")
    assert not bad.ok and "statuscode: 500" in bad.message
    slow = await http_get("127.0.0.1", http_port, "/slow", timeout=0.3)
    assert not slow.ok and "deadline exceeded" in slow.message


async def test_tcp_connect(http_port: int) -> None:
    assert (await tcp_connect("127.0.0.1", http_port)).ok
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result = await tcp_connect("127.0.0.1", closed)
    assert not result.ok and "dial tcp" in result.message


def _pod(probes: dict[str, Any], ports: list[dict[str, Any]] | None = None) -> Any:
    return make_pod(
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "app", "image": "busybox:1.36", "ports": ports or [], **probes}
                ]
            },
        }
    )


async def test_named_port_and_exec_handler(http_port: int) -> None:
    runtime = FakeRuntime()
    pod = _pod(
        {"readinessProbe": {"httpGet": {"path": "/healthz", "port": "web"}}},
        [{"name": "web", "containerPort": http_port}],
    )
    c = pod.spec.containers[0]
    ok = await run_handler(
        c.readiness_probe,
        runtime=runtime,
        container_id="x",
        container=c,
        pod_ip="127.0.0.1",
        timeout=1,
    )
    assert ok.ok

    cid = await runtime.create_container(
        ContainerSpec("u", "p", "default", "app", "app", "busybox:1.36")
    )
    await runtime.start_container(cid)
    runtime.exec_handler = lambda _c, cmd: ExecResult(0 if cmd == ["true"] else 1, b"nope")
    exec_probe = _pod({"livenessProbe": {"exec": {"command": ["false"]}}}).spec.containers[0]
    result = await run_handler(
        exec_probe.liveness_probe,
        runtime=runtime,
        container_id=cid,
        container=exec_probe,
        pod_ip="",
        timeout=1,
    )
    assert not result.ok and "exited with 1" in result.message


async def _running(runtime: FakeRuntime, pod: Any) -> Any:
    cid = await runtime.create_container(
        ContainerSpec(pod.metadata.uid, "p", "default", "app", "app", "busybox:1.36")
    )
    await runtime.start_container(cid)
    info = await runtime.inspect_container(cid)
    assert info is not None
    return info


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_readiness_flips_after_thresholds(http_port: int) -> None:
    runtime = FakeRuntime()
    statuses = {"/healthz": 200}
    server = await _http_server(statuses)
    port = server.sockets[0].getsockname()[1]
    changes: list[str] = []
    manager = ProbeManager(runtime, changes.append)
    pod = _pod(
        {
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": port},
                "periodSeconds": 1,
                "failureThreshold": 1,
                "successThreshold": 1,
            }
        }
    )
    info = await _running(runtime, pod)
    try:
        manager.update(pod, [info], "127.0.0.1")
        assert not manager.states(pod.metadata.uid)[info.id].ready
        await _until(lambda: manager.states(pod.metadata.uid)[info.id].ready)
        statuses["/healthz"] = 503
        await _until(lambda: not manager.states(pod.metadata.uid)[info.id].ready, 3)
        assert changes.count(pod.metadata.uid) >= 2
    finally:
        await manager.stop()
        server.close()


async def test_liveness_failure_marks_unhealthy_and_emits_events() -> None:
    runtime = FakeRuntime()
    runtime.exec_handler = lambda _c, _cmd: ExecResult(1, b"unhealthy")
    events: list[tuple[str, str]] = []
    manager = ProbeManager(
        runtime, lambda uid: None, events=lambda p, t, r, m: events.append((r, m))
    )
    pod = _pod(
        {
            "livenessProbe": {
                "exec": {"command": ["check"]},
                "periodSeconds": 1,
                "failureThreshold": 2,
            }
        }
    )
    info = await _running(runtime, pod)
    try:
        manager.update(pod, [info], "")
        await _until(lambda: bool(manager.unhealthy(pod.metadata.uid)), 4)
        assert "failed liveness probe" in manager.unhealthy(pod.metadata.uid)[info.id]
        assert events[0][0] == "Unhealthy" and "Liveness probe failed" in events[0][1]
    finally:
        await manager.stop()


async def test_startup_probe_gates_liveness_and_initial_delay() -> None:
    runtime = FakeRuntime()
    calls: list[list[str]] = []
    started = {"ok": False}

    def handler(_c: Any, cmd: list[str]) -> ExecResult:
        calls.append(cmd)
        if cmd == ["startup"]:
            return ExecResult(0 if started["ok"] else 1, b"")
        return ExecResult(0, b"")

    runtime.exec_handler = handler
    manager = ProbeManager(runtime, lambda uid: None)
    pod = _pod(
        {
            "startupProbe": {
                "exec": {"command": ["startup"]},
                "periodSeconds": 1,
                "failureThreshold": 30,
            },
            "livenessProbe": {"exec": {"command": ["live"]}, "periodSeconds": 1},
        }
    )
    info = await _running(runtime, pod)
    try:
        manager.update(pod, [info], "")
        await _until(lambda: ["startup"] in calls)
        assert not manager.states(pod.metadata.uid)[info.id].started
        assert ["live"] not in calls
        started["ok"] = True
        await _until(lambda: manager.states(pod.metadata.uid)[info.id].started, 3)
        await _until(lambda: ["live"] in calls, 3)
    finally:
        await manager.stop()

    # initialDelaySeconds counts from the container's start.
    clock_now = datetime.now(UTC)
    manager = ProbeManager(runtime, lambda uid: None, clock=lambda: clock_now)
    delayed = _pod({"livenessProbe": {"exec": {"command": ["d"]}, "initialDelaySeconds": 30}})
    info = await _running(runtime, delayed)
    calls.clear()
    try:
        from dataclasses import replace

        manager.update(delayed, [replace(info, started_at=clock_now - timedelta(seconds=1))], "")
        await asyncio.sleep(0.3)
        assert ["d"] not in calls
    finally:
        await manager.stop()
