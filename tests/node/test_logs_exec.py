"""Logs and exec on real containers: the agent API against a private dockerd,
then end to end `orchctl logs` / `orchctl exec` through a real control plane
whose apiserver proxies to that agent over mutual TLS.

The containers are made by hand with the agent's labels (as the kubelet
makes them), so these tests need only dockerd, not the whole agent.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.join import join
from agent.runtime import types as rt
from agent.server import AgentServer, AgentServerRunner
from certs import pki
from certs.bundle import ClusterPKI
from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import agent_pb2_grpc as apb_grpc
from orchestrator.client.client import Client
from orchestrator.client.config import ConfigFile
from tests.support.controlplane import ControlPlane
from tests.support.dockerd import Dockerd, build_busybox_image, dockerd_available

pytestmark = [
    pytest.mark.node,
    pytest.mark.timeout(300),
    pytest.mark.skipif(dockerd_available() is not None, reason=str(dockerd_available())),
]

IMAGE = "busybox:1.36"
# Docker copies stdout and stderr to its log on two goroutines, so two lines
# written back to back on different streams may be logged in either order.
MAIN_CMD = ["sh", "-c", "echo hello; sleep 0.2; echo oops >&2; sleep 300"]
TIMESTAMPED = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (hello|oops)$")


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    with Dockerd() as d:
        build_busybox_image(d.host, IMAGE)
        yield d


@pytest.fixture(scope="module")
def docker_api(dockerd: Dockerd) -> Iterator[Any]:
    import docker

    api = docker.APIClient(base_url=dockerd.host, version="auto", timeout=60)
    yield api
    api.close()


def run_container(
    api: Any,
    *,
    uid: str,
    pod: str,
    container: str,
    command: list[str],
    namespace: str = "default",
    restarts: int = 0,
    wait_exit: bool = False,
) -> str:
    """A container as the kubelet makes it: labelled with its pod and name."""
    labels = {
        rt.LABEL_POD_UID: uid,
        rt.LABEL_POD_NAME: pod,
        rt.LABEL_POD_NAMESPACE: namespace,
        rt.LABEL_CONTAINER_NAME: container,
        rt.LABEL_CONTAINER_TYPE: "app",
        rt.LABEL_RESTART_COUNT: str(restarts),
    }
    created = api.create_container(
        IMAGE,
        command,
        labels=labels,
        host_config=api.create_host_config(network_mode="none"),
    )
    api.start(created["Id"])
    if wait_exit:
        api.wait(created["Id"], timeout=30)
    return str(created["Id"])


def wait_for_log(api: Any, cid: str, text: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in api.logs(cid):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared in the log of {cid}")
        time.sleep(0.05)


def write_to_log(api: Any, cid: str, line: str) -> None:
    """Make the container print a line now: exec writes to its PID 1's stdout."""
    exec_id = api.exec_create(cid, ["sh", "-c", f"echo {line} >> /proc/1/fd/1"])
    api.exec_start(exec_id)


# -- the agent API alone ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("node-test-ca")


def _channel(ca: pki.KeyPair, port: int, cn: str, orgs: list[str]) -> grpc.aio.Channel:
    client = pki.issue_certificate(ca, common_name=cn, organizations=orgs, client=True)
    creds = grpc.ssl_channel_credentials(ca.cert_pem, client.key_pem, client.cert_pem)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


@pytest.fixture
async def agent(dockerd: Dockerd, ca: pki.KeyPair) -> AsyncIterator[AgentServer]:
    serving = pki.issue_certificate(
        ca,
        common_name="system:node:n1",
        organizations=["system:nodes"],
        ip_addresses=["127.0.0.1"],
        server=True,
    )
    server = AgentServer(
        dockerd.host,
        ca_pem=ca.cert_pem,
        cert_pem=serving.cert_pem,
        key_pem=serving.key_pem,
        listen="127.0.0.1:0",
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def stub(agent: AgentServer, ca: pki.KeyPair) -> AsyncIterator[apb_grpc.AgentStub]:
    channel = _channel(ca, agent.port, "orchestrator-apiserver-agent-client", ["system:masters"])
    yield apb_grpc.AgentStub(channel)
    await channel.close()


async def _logs(stub: apb_grpc.AgentStub, **kw: Any) -> bytes:
    req = apb.LogsRequest(namespace="default", **kw)
    return b"".join([c.data async for c in stub.Logs(req)])


async def _exec(
    stub: apb_grpc.AgentStub,
    target: dict[str, str],
    command: list[str],
    stdin: bytes | None = None,
    **kw: Any,
) -> tuple[bytes, bytes, int]:
    async def inputs() -> AsyncIterator[apb.ExecInput]:
        start = apb.ExecStart(
            namespace="default", command=command, stdin=stdin is not None, **target, **kw
        )
        yield apb.ExecInput(start=start)
        if stdin is not None:
            yield apb.ExecInput(stdin=stdin)
            yield apb.ExecInput(close_stdin=True)

    out, err, code = b"", b"", None
    async for msg in stub.Exec(inputs()):
        which = msg.WhichOneof("output")
        if which == "stdout":
            out += msg.stdout
        elif which == "stderr":
            err += msg.stderr
        else:
            code = msg.exit.code
    assert code is not None, "the stream ended without an exit code"
    return out, err, code


async def test_agent_logs(docker_api: Any, stub: apb_grpc.AgentStub) -> None:
    uid = str(uuid.uuid4())
    cid = run_container(docker_api, uid=uid, pod="web", container="main", command=MAIN_CMD)
    wait_for_log(docker_api, cid, b"oops")
    target = {"pod": "web", "pod_uid": uid, "container": "main"}

    assert await _logs(stub, **target) == b"hello\noops\n"
    assert await _logs(stub, tail_lines=1, **target) == b"oops\n"
    assert await _logs(stub, tail_lines=0, **target) == b""
    lines = (await _logs(stub, timestamps=True, **target)).splitlines()
    assert len(lines) == 2 and all(TIMESTAMPED.match(line) for line in lines), lines

    # --since: only what is newer.
    await asyncio.sleep(4)
    await asyncio.to_thread(write_to_log, docker_api, cid, "recent")
    assert await _logs(stub, since_seconds=2, **target) == b"recent\n"
    assert await _logs(stub, since_seconds=3600, **target) == b"hello\noops\nrecent\n"

    # --follow: a line written later still arrives.
    got = b""
    stream = stub.Logs(apb.LogsRequest(namespace="default", follow=True, **target))
    async for chunk in stream:
        got += chunk.data
        if got == b"hello\noops\nrecent\n":
            await asyncio.to_thread(write_to_log, docker_api, cid, "later")
        if b"later\n" in got:
            break
    stream.cancel()
    assert got == b"hello\noops\nrecent\nlater\n"

    # Found by the pod's uid, not its name: another pod "web" has other logs.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _logs(stub, pod="web", pod_uid="another-uid", container="main")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "waiting to start" in (err.value.details() or "")


async def test_agent_logs_previous(docker_api: Any, stub: apb_grpc.AgentStub) -> None:
    uid = str(uuid.uuid4())
    target = {"pod": "crashy", "pod_uid": uid, "container": "main"}
    run_container(
        docker_api,
        uid=uid,
        pod="crashy",
        container="main",
        command=["sh", "-c", "echo first life; exit 1"],
        wait_exit=True,
    )
    with pytest.raises(grpc.aio.AioRpcError, match='previous terminated container "main"'):
        await _logs(stub, previous=True, **target)
    cid = run_container(
        docker_api,
        uid=uid,
        pod="crashy",
        container="main",
        command=["sh", "-c", "echo second life; sleep 300"],
        restarts=1,
    )
    wait_for_log(docker_api, cid, b"second life")
    assert await _logs(stub, previous=True, **target) == b"first life\n"
    assert await _logs(stub, **target) == b"second life\n"


async def test_agent_exec(docker_api: Any, stub: apb_grpc.AgentStub) -> None:
    uid = str(uuid.uuid4())
    run_container(docker_api, uid=uid, pod="web", container="main", command=MAIN_CMD)
    target = {"pod": "web", "pod_uid": uid, "container": "main"}

    assert await _exec(stub, target, ["echo", "hi"]) == (b"hi\n", b"", 0)
    assert await _exec(stub, target, ["sh", "-c", "echo out; echo err >&2; exit 3"]) == (
        b"out\n",
        b"err\n",
        3,
    )
    assert await _exec(stub, target, ["cat"], stdin=b"round trip\n") == (b"round trip\n", b"", 0)
    big = bytes(range(256)) * 2048  # 512 KiB, binary: several messages each way
    out, _, code = await _exec(stub, target, ["cat"], stdin=big)
    assert code == 0 and out == big

    # A terminal: stdout and stderr merged, \r\n line ends, the size we asked for
    # (docker sets it just after the start: API 1.41 has no size at creation).
    out, err, code = await _exec(
        stub,
        target,
        ["sh", "-c", "sleep 0.5; busybox stty size; echo e >&2; exit 4"],
        tty=True,
        rows=30,
        cols=100,
    )
    assert (out, err, code) == (b"30 100\r\ne\r\n", b"", 4)

    # A command that does not exist: the runtime's message and a non-zero code.
    out, err, code = await _exec(stub, target, ["no-such-command"])
    assert code != 0
    assert b"no-such-command" in out + err


async def test_agent_exec_refusals(docker_api: Any, stub: apb_grpc.AgentStub) -> None:
    uid = str(uuid.uuid4())
    run_container(
        docker_api, uid=uid, pod="done", container="main", command=["true"], wait_exit=True
    )
    with pytest.raises(grpc.aio.AioRpcError, match="is not running") as err:
        await _exec(stub, {"pod": "done", "pod_uid": uid, "container": "main"}, ["ls"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError, match="container not found"):
        await _exec(stub, {"pod": "none", "pod_uid": "nope", "container": "main"}, ["ls"])


async def test_agent_accepts_only_the_apiserver(agent: AgentServer, ca: pki.KeyPair) -> None:
    req = apb.LogsRequest(namespace="default", pod="p", pod_uid="u", container="c")
    # An admin certificate from the same CA is still not the apiserver.
    channel = _channel(ca, agent.port, "admin", ["system:masters"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [c async for c in apb_grpc.AgentStub(channel).Logs(req)]
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await channel.close()
    # No client certificate at all fails the handshake.
    anonymous = grpc.aio.secure_channel(
        f"127.0.0.1:{agent.port}", grpc.ssl_channel_credentials(ca.cert_pem)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [c async for c in apb_grpc.AgentStub(anonymous).Logs(req, timeout=5)]
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    await anonymous.close()
    # A certificate from another CA fails it too.
    other = pki.create_ca("other-ca")
    foreign = _channel(other, agent.port, "orchestrator-apiserver-agent-client", ["system:masters"])
    with pytest.raises(grpc.aio.AioRpcError):
        [c async for c in apb_grpc.AgentStub(foreign).Logs(req, timeout=5)]
    await foreign.close()

    # A renewed serving certificate is used from the next handshake on. (Here
    # from another issuer, so the test can tell which one is served.)
    renewed = pki.issue_certificate(
        other,
        common_name="system:node:n1",
        organizations=["system:nodes"],
        ip_addresses=["127.0.0.1"],
        server=True,
    )
    apiserver = pki.issue_certificate(
        ca,
        common_name="orchestrator-apiserver-agent-client",
        organizations=["system:masters"],
        client=True,
    )
    trusts_other = grpc.ssl_channel_credentials(
        other.cert_pem, apiserver.key_pem, apiserver.cert_pem
    )

    async def ask() -> grpc.StatusCode:
        async with grpc.aio.secure_channel(f"127.0.0.1:{agent.port}", trusts_other) as ch:
            try:
                [c async for c in apb_grpc.AgentStub(ch).Logs(req, timeout=5)]
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert await ask() == grpc.StatusCode.UNAVAILABLE  # the old certificate: not trusted
    agent.update_certificate(renewed.cert_pem, renewed.key_pem)
    # Served now: the call gets through TLS to the agent's own answer.
    assert await ask() == grpc.StatusCode.INVALID_ARGUMENT


# -- end to end: orchctl -> apiserver -> agent -------------------------------------------------


def orchctl(
    cp: ControlPlane, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        env=cp.env,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, marker: bytes, timeout: float = 20.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{marker!r} never came; got {got!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the other side closed
                break
            if not data:
                break
            got += data
    return got


def interactive_terminal_session(cp: ControlPlane) -> None:
    """`orchctl exec -it web -- sh` on a real terminal (a pty): raw mode, the
    window size at start and after SIGWINCH, the exit code, and the
    terminal's mode restored at the end."""
    master, slave = pty.openpty()
    _set_size(slave, 33, 111)
    before = termios.tcgetattr(slave)

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli.main", "exec", "-it", "web", "--", "sh"],
        env=cp.env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    try:
        _read_until(master, b"/ # ")  # the remote shell's prompt: orchctl is in raw mode
        time.sleep(0.3)
        os.write(master, b"busybox stty size; echo A$((40+2))\r")
        assert b"33 111" in _read_until(master, b"A42")
        _set_size(master, 44, 122)  # the kernel sends orchctl SIGWINCH
        time.sleep(0.5)
        os.write(master, b"busybox stty size; echo B$((40+2))\r")
        assert b"44 122" in _read_until(master, b"B42")
        os.write(master, b"exit 7\r")
        assert proc.wait(20) == 7
        # Raw mode was undone: the terminal is as orchctl found it.
        assert termios.tcgetattr(slave) == before
        assert b"command terminated with exit code 7" in _read_until(master, b"code 7")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
        os.close(slave)


async def _node_client(cp: ControlPlane, tmp_path: Path, node: str) -> Client:
    """Join as a real node would (bootstrap token, CSR): the node's own identity."""
    args = shlex.split(cp.join_command)
    server, token, ca_hash = args[2], args[4], args[6]
    creds = await join(server, token, ca_hash, node_name=node, data_dir=tmp_path / node)
    return Client(ConfigFile.load(creds.config_path).connection())


async def _register(admin: Client, name: str, port: int) -> None:
    node = kind_info("Node").new()
    node.metadata.name = name
    # Status goes in with the create: a Node's status is kept on create, and a
    # later update would race the control plane's pod-CIDR allocator.
    node.status.addresses.add(type="InternalIP", address="127.0.0.1")
    node.status.addresses.add(type="Hostname", address=name)
    node.status.daemon_endpoints.kubelet_endpoint.port = port
    await admin.create(node)


async def _pod(admin: Client, name: str, node: str, containers: list[str]) -> Any:
    pod = kind_info("Pod").new()
    pod.metadata.name = name
    pod.metadata.namespace = "default"
    pod.spec.node_name = node
    for c in containers:
        pod.spec.containers.add(name=c, image=IMAGE, command=["sleep", "300"])
    return await admin.create(pod)


async def test_orchctl_logs_and_exec_through_the_apiserver(
    fresh_control_plane: ControlPlane, dockerd: Dockerd, docker_api: Any, tmp_path: Path
) -> None:
    cp = fresh_control_plane
    node_name = "n1"
    node_client = await _node_client(cp, tmp_path, node_name)
    ca_pem = ClusterPKI(cp.data_dir).cluster_ca().cert_pem
    # The agent's own start-up path: a serving certificate through a
    # kubelet-serving CSR that the control plane's signer approves.
    runner = AgentServerRunner(
        node_client,
        node_name,
        "127.0.0.1",
        dockerd.host,
        ca_pem,
        tmp_path / node_name,
        port=0,
        listen_host="127.0.0.1",
    )
    runner.start()
    admin = cp.client()
    try:
        await asyncio.wait_for(runner.ready.wait(), 60)
        assert runner.server is not None
        await _register(admin, node_name, runner.server.port)
        web = await _pod(admin, "web", node_name, ["main"])
        duo = await _pod(admin, "duo", node_name, ["a", "b"])
        cid = run_container(
            docker_api, uid=web.metadata.uid, pod="web", container="main", command=MAIN_CMD
        )
        for c in ("a", "b"):
            run_container(
                docker_api,
                uid=duo.metadata.uid,
                pod="duo",
                container=c,
                command=["sh", "-c", f"echo I am {c}; sleep 300"],
            )
        wait_for_log(docker_api, cid, b"oops")

        r = await asyncio.to_thread(orchctl, cp, "logs", "web")
        assert (r.returncode, r.stdout) == (0, b"hello\noops\n"), r.stderr
        r = await asyncio.to_thread(orchctl, cp, "logs", "pod/web", "--tail", "1")
        assert r.stdout == b"oops\n", r.stderr
        r = await asyncio.to_thread(orchctl, cp, "logs", "web", "--timestamps", "--since", "1h")
        assert all(TIMESTAMPED.match(line) for line in r.stdout.splitlines()), r.stdout

        r = await asyncio.to_thread(orchctl, cp, "logs", "duo")
        assert r.returncode == 1
        assert r.stderr.decode().strip() == (
            "error: a container name must be specified for pod duo, choose one of: [a b]"
        )
        r = await asyncio.to_thread(orchctl, cp, "logs", "duo", "-c", "b")
        assert r.stdout == b"I am b\n", r.stderr
        r = await asyncio.to_thread(orchctl, cp, "logs", "duo", "a")
        assert r.stdout == b"I am a\n", r.stderr
        r = await asyncio.to_thread(orchctl, cp, "logs", "missing")
        assert r.returncode == 1 and b'pods "missing" not found' in r.stderr
        r = await asyncio.to_thread(orchctl, cp, "logs", "web", "-p")
        assert r.returncode == 1
        assert r.stderr.decode().strip() == (
            'Error from server (BadRequest): previous terminated container "main" '
            'in pod "web" not found'
        )

        r = await asyncio.to_thread(orchctl, cp, "exec", "web", "--", "echo", "hi")
        assert (r.returncode, r.stdout, r.stderr) == (0, b"hi\n", b"")
        r = await asyncio.to_thread(
            orchctl, cp, "exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
        )
        assert (r.returncode, r.stdout) == (3, b"out\n")
        assert r.stderr == b"err\ncommand terminated with exit code 3\n"
        r = await asyncio.to_thread(
            orchctl, cp, "exec", "-i", "web", "--", "cat", stdin=b"round trip\n"
        )
        assert (r.returncode, r.stdout) == (0, b"round trip\n"), r.stderr
        # -t without a terminal: kubectl's warning, and no terminal.
        r = await asyncio.to_thread(orchctl, cp, "exec", "-it", "web", "--", "echo", "x")
        assert (r.returncode, r.stdout) == (0, b"x\n")
        assert b"Unable to use a TTY" in r.stderr
        r = await asyncio.to_thread(orchctl, cp, "exec", "duo", "-c", "b", "--", "echo", "b")
        assert r.stdout == b"b\n", r.stderr

        # Follow: a later line reaches orchctl while it streams.
        follow = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "logs",
            "-f",
            "web",
            env=cp.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert follow.stdout is not None
            first = await asyncio.wait_for(follow.stdout.readexactly(len(b"hello\noops\n")), 30)
            assert first == b"hello\noops\n"
            await asyncio.to_thread(write_to_log, docker_api, cid, "later")
            later = await asyncio.wait_for(follow.stdout.readline(), 20)
            assert later == b"later\n"
        finally:
            follow.terminate()
            await follow.wait()

        await asyncio.to_thread(interactive_terminal_session, cp)

        # The node's own identity may not read logs through the apiserver.
        with pytest.raises(Exception, match="pods/log"):
            from orchestrator.client.streams import pod_logs

            [c async for c in pod_logs(node_client, "default", "web", container="main")]

        # An agent nobody answers for: kubectl's "error dialing backend".
        await _register(admin, "ghost", 1)
        await _pod(admin, "haunted", "ghost", ["main"])
        r = await asyncio.to_thread(orchctl, cp, "logs", "haunted")
        assert r.returncode == 1
        assert r.stderr.decode().startswith(
            'Error from server: error dialing backend: the agent of node "ghost" at 127.0.0.1:1'
        ), r.stderr
    finally:
        await runner.stop()
        await admin.close()
        await node_client.close()
