"""The apiserver and client side of logs and exec, without a network:
container choice, --since, the agent address, authorization, and the
proxy's relay against a fake agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.apiserver import proxy as px
from orchestrator.apiserver.authz import Attributes, default_authorizer
from orchestrator.apiserver.cache import CachedObject
from orchestrator.apiserver.registry import UserInfo
from orchestrator.cli import exec as exec_cmd
from orchestrator.cli import logs as logs_cmd
from orchestrator.cli.errors import CliError
from orchestrator.client.client import ApiError
from orchestrator.client.streams import (
    ContainerChoiceError,
    ExecSession,
    choose_container,
    parse_since,
)

pytestmark = pytest.mark.unit

ADMIN = UserInfo("admin", ("system:masters", "system:authenticated"))
NODE1 = UserInfo("system:node:n1", ("system:nodes", "system:authenticated"))
SCHEDULER = UserInfo("system:kube-scheduler", ("system:authenticated",))


def _pod(
    name: str = "web",
    containers: tuple[str, ...] = ("main",),
    init: tuple[str, ...] = (),
    node: str = "n1",
    annotations: dict[str, str] | None = None,
) -> Any:
    pod = kind_info("Pod").new()
    pod.metadata.name = name
    pod.metadata.namespace = "default"
    pod.metadata.uid = f"uid-{name}"
    pod.metadata.annotations.update(annotations or {})
    pod.spec.node_name = node
    for c in containers:
        pod.spec.containers.add(name=c, image="busybox")
    for c in init:
        pod.spec.init_containers.add(name=c, image="busybox")
    return pod


def _node(name: str = "n1", ip: str = "192.0.2.11", port: int = 0) -> Any:
    node = kind_info("Node").new()
    node.metadata.name = name
    if ip:
        node.status.addresses.add(type="Hostname", address=name)
        node.status.addresses.add(type="InternalIP", address=ip)
    if port:
        node.status.daemon_endpoints.kubelet_endpoint.port = port
    return node


# -- container choice and --since ---------------------------------------------------------


def test_choose_container_like_kubectl() -> None:
    assert choose_container(_pod()) == "main"
    assert choose_container(_pod(containers=("a", "b")), "b") == "b"
    with pytest.raises(ContainerChoiceError) as err:
        choose_container(_pod(containers=("a", "b")))
    assert str(err.value) == (
        "a container name must be specified for pod web, choose one of: [a b]"
    )
    with pytest.raises(ContainerChoiceError, match=r"or one of the init containers: \[setup\]"):
        choose_container(_pod(containers=("a", "b"), init=("setup",)))
    with pytest.raises(ContainerChoiceError, match="container nope is not valid for pod web"):
        choose_container(_pod(), "nope")
    assert choose_container(_pod(init=("setup",)), "setup") == "setup"
    annotated = _pod(
        containers=("a", "b"), annotations={"kubectl.kubernetes.io/default-container": "b"}
    )
    assert choose_container(annotated) == "b"


def test_parse_since() -> None:
    assert parse_since("10s") == 10
    assert parse_since("5m") == 300
    assert parse_since("1h30m") == 5400
    assert parse_since("1500ms") == 2  # rounded up: never less than asked
    assert parse_since("1ms") == 1
    for bad in ("", "10", "5 m", "1d", "-5s", "m"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_since(bad)
    with pytest.raises(ValueError, match="more than 0"):
        parse_since("0s")


# -- where the agent is ---------------------------------------------------------------------


def test_agent_target_from_the_node_status() -> None:
    assert px.agent_target(_node()) == "192.0.2.11:10250"
    assert px.agent_target(_node(port=11250)) == "192.0.2.11:11250"
    assert px.agent_target(_node(ip="fd00::5")) == "[fd00::5]:10250"
    hostname_only = _node(ip="")
    hostname_only.status.addresses.add(type="Hostname", address="n1.example")
    assert px.agent_target(hostname_only) == "n1.example:10250"
    with pytest.raises(px.BadRequest, match="no address"):
        px.agent_target(_node(ip=""))


def test_unreachable_agent_is_a_server_error_not_unavailable() -> None:
    backend = px.Backend("n1", "192.0.2.11:10250", "default", "web", "uid", "main")
    dial = px._relay_error(
        grpc.StatusCode.UNAVAILABLE, "failed to connect\n all", backend, answered=False
    )
    assert dial.code == grpc.StatusCode.INTERNAL
    assert dial.message == (
        'error dialing backend: the agent of node "n1" at 192.0.2.11:10250: failed to connect all'
    )
    runtime = px._relay_error(
        grpc.StatusCode.UNAVAILABLE, "container runtime down", backend, answered=True
    )
    assert runtime.code == grpc.StatusCode.INTERNAL and "dialing" not in runtime.message
    passed = px._relay_error(
        grpc.StatusCode.INVALID_ARGUMENT, "previous terminated", backend, answered=True
    )
    assert (passed.code, passed.message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "previous terminated",
    )


# -- authorization ----------------------------------------------------------------------------


class FakeCache:
    def __init__(self, *objs: Any) -> None:
        self.objs = {}
        for obj in objs:
            info = kind_info(obj.kind)
            fields = {"spec.nodeName": obj.spec.node_name} if obj.kind == "Pod" else {}
            self.objs[(obj.kind, obj.metadata.namespace, obj.metadata.name)] = CachedObject(
                info,
                obj.metadata.namespace,
                obj.metadata.name,
                obj.SerializeToString(),
                1,
                {},
                fields,
            )

    def get(self, info: Any, namespace: str, name: str) -> CachedObject | None:
        return self.objs.get((info.kind, namespace, name))

    def list(self, info: Any, flt: Any) -> list[CachedObject]:
        return []


def test_only_admins_get_logs_and_exec() -> None:
    cache = FakeCache(_pod(), _node())
    authz = default_authorizer(cache)  # type: ignore[arg-type]
    pods = kind_info("Pod")
    for verb, sub in (("get", "log"), ("create", "exec")):
        attrs = Attributes(verb, pods, "default", "web", sub)
        assert authz.authorize(ADMIN, attrs).allowed
        # Not even the node the pod runs on, nor the scheduler.
        assert not authz.authorize(NODE1, attrs).allowed
        assert not authz.authorize(SCHEDULER, attrs).allowed
    # The node keeps what it had: reading its own pod.
    assert authz.authorize(NODE1, Attributes("get", pods, "default", "web")).allowed
    described = Attributes("get", pods, "default", "web", "log").describe()
    assert described == 'get resource pods/log "web" in the namespace "default"'


# -- the proxy against a fake agent -----------------------------------------------------------


class Authn:
    def __init__(self, user: UserInfo) -> None:
        self.user = user

    def authenticate(self, context: Any) -> UserInfo:
        return self.user


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeLogsCall:
    def __init__(self, chunks: list[bytes], error: grpc.aio.AioRpcError | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[apb.LogChunk]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[apb.LogChunk]:
        for c in self.chunks:
            yield apb.LogChunk(data=c)
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled = True

    async def initial_metadata(self) -> Any:
        return grpc.aio.Metadata()


class FakeExecCall:
    """An agent that echoes stdin back on stdout until stdin closes, then exits 0."""

    def __init__(self) -> None:
        self.written: list[apb.ExecInput] = []
        self.done = False
        self.cancelled = False
        self._out: asyncio.Queue[apb.ExecOutput | None] = asyncio.Queue()

    async def write(self, msg: apb.ExecInput) -> None:
        self.written.append(msg)
        if msg.WhichOneof("input") == "stdin":
            await self._out.put(apb.ExecOutput(stdout=msg.stdin))
        elif msg.WhichOneof("input") == "close_stdin":
            await self._out.put(apb.ExecOutput(exit=apb.ExecExit(code=0)))
            await self._out.put(None)

    async def done_writing(self) -> None:
        self.done = True

    def __aiter__(self) -> AsyncIterator[apb.ExecOutput]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[apb.ExecOutput]:
        while (msg := await self._out.get()) is not None:
            yield msg

    def cancel(self) -> None:
        self.cancelled = True

    async def initial_metadata(self) -> Any:
        return grpc.aio.Metadata(("orch-agent", "1"))


class FakeStub:
    def __init__(self, logs: FakeLogsCall | None = None, exec_: FakeExecCall | None = None) -> None:
        self.logs_call = logs
        self.exec_call = exec_
        self.requests: list[Any] = []

    def Logs(self, request: Any) -> FakeLogsCall:
        self.requests.append(request)
        assert self.logs_call is not None
        return self.logs_call

    def Exec(self) -> FakeExecCall:
        assert self.exec_call is not None
        return self.exec_call


def _proxy(user: UserInfo, stub: FakeStub, *objs: Any) -> tuple[px.PodStreamProxy, list[str]]:
    cache = FakeCache(*objs)
    proxy = px.PodStreamProxy(cache, Authn(user), default_authorizer(cache), None)  # type: ignore[arg-type]
    targets: list[str] = []

    def stub_for(target: str) -> FakeStub:
        targets.append(target)
        return stub

    proxy.stub = stub_for  # type: ignore[method-assign,assignment]
    return proxy, targets


async def test_proxy_logs_forwards_the_request_to_the_pods_node() -> None:
    call = FakeLogsCall([b"hello\n", b"world\n"])
    stub = FakeStub(logs=call)
    proxy, targets = _proxy(ADMIN, stub, _pod(), _node(port=12345))
    req = pb.PodLogsRequest(namespace="default", name="web", follow=True, tail_lines=0)
    got = [c.data async for c in proxy.logs(req, Context())]
    assert got == [b"hello\n", b"world\n"]
    assert targets == ["192.0.2.11:12345"]
    fwd = stub.requests[0]
    assert (fwd.namespace, fwd.pod, fwd.pod_uid, fwd.container) == (
        "default",
        "web",
        "uid-web",
        "main",
    )
    assert fwd.follow and fwd.HasField("tail_lines") and fwd.tail_lines == 0
    assert not fwd.HasField("since_seconds")
    assert call.cancelled  # the agent call is always ended


@pytest.mark.parametrize(
    ("user", "objs", "req", "code", "message"),
    [
        (NODE1, (_pod(), _node()), {"name": "web"}, "PERMISSION_DENIED", "pods/log"),
        (ADMIN, (_node(),), {"name": "web"}, "NOT_FOUND", 'pods "web" not found'),
        (ADMIN, (_pod(node=""),), {"name": "web"}, "INVALID_ARGUMENT", "does not have a host"),
        (ADMIN, (_pod(),), {"name": "web"}, "NOT_FOUND", 'nodes "n1" not found'),
        (
            ADMIN,
            (_pod(containers=("a", "b")), _node()),
            {"name": "web"},
            "INVALID_ARGUMENT",
            "choose one of: [a b]",
        ),
        (
            ADMIN,
            (_pod(), _node()),
            {"name": "web", "since_seconds": 0},
            "INVALID_ARGUMENT",
            "since",
        ),
        (ADMIN, (_pod(), _node()), {"name": ""}, "INVALID_ARGUMENT", "a pod name"),
    ],
)
async def test_proxy_logs_refusals(
    user: UserInfo, objs: tuple[Any, ...], req: dict[str, Any], code: str, message: str
) -> None:
    proxy, targets = _proxy(user, FakeStub(logs=FakeLogsCall([])), *objs)
    request = pb.PodLogsRequest(namespace="default", **req)
    with pytest.raises(Aborted) as err:
        [c async for c in proxy.logs(request, Context())]
    assert err.value.code == getattr(grpc.StatusCode, code)
    assert message in str(err.value)
    assert targets == []  # refused before dialing anyone


async def test_proxy_logs_relays_agent_errors() -> None:
    failing = FakeLogsCall([], _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    proxy, _ = _proxy(ADMIN, FakeStub(logs=failing), _pod(), _node())
    with pytest.raises(Aborted) as err:
        [c async for c in proxy.logs(pb.PodLogsRequest(name="web"), Context())]
    assert err.value.code == grpc.StatusCode.INTERNAL
    assert str(err.value).startswith("error dialing backend")
    bad = FakeLogsCall([], _rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "previous terminated"))
    proxy, _ = _proxy(ADMIN, FakeStub(logs=bad), _pod(), _node())
    with pytest.raises(Aborted) as err:
        [c async for c in proxy.logs(pb.PodLogsRequest(name="web", previous=True), Context())]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_proxy_exec_relays_both_ways() -> None:
    call = FakeExecCall()
    proxy, _ = _proxy(ADMIN, FakeStub(exec_=call), _pod(containers=("a", "b")), _node())

    async def inputs() -> AsyncIterator[apb.ExecInput]:
        start = apb.ExecStart(pod="web", container="b", command=["cat"], stdin=True, pod_uid="x")
        yield apb.ExecInput(start=start)
        yield apb.ExecInput(stdin=b"ping")
        yield apb.ExecInput(close_stdin=True)

    outs = [m async for m in proxy.exec(inputs(), Context())]
    assert [m.WhichOneof("output") for m in outs] == ["stdout", "exit"]
    assert outs[0].stdout == b"ping"
    start = call.written[0].start
    # The apiserver decides the namespace, the pod's uid and the container.
    assert (start.namespace, start.pod_uid, start.container) == ("default", "uid-web", "b")
    assert [m.WhichOneof("input") for m in call.written] == ["start", "stdin", "close_stdin"]
    assert call.cancelled


async def test_proxy_exec_refusals() -> None:
    async def only(*msgs: apb.ExecInput) -> AsyncIterator[apb.ExecInput]:
        for m in msgs:
            yield m

    objs = (_pod(), _node())
    cases = [
        (ADMIN, only(), "ended before its start"),
        (ADMIN, only(apb.ExecInput(stdin=b"x")), "must be start"),
        (ADMIN, only(apb.ExecInput(start=apb.ExecStart(pod="web"))), "at least one command"),
        (NODE1, only(apb.ExecInput(start=apb.ExecStart(pod="web", command=["sh"]))), "pods/exec"),
    ]
    for user, inputs, message in cases:
        proxy, targets = _proxy(user, FakeStub(exec_=FakeExecCall()), *objs)
        with pytest.raises(Aborted, match=message):
            [m async for m in proxy.exec(inputs, Context())]
        assert targets == []


# -- the client session and the command line ----------------------------------------------------


class ClientCall:
    def __init__(self, outs: list[apb.ExecOutput], error: Exception | None = None) -> None:
        self.outs = outs
        self.error = error
        self.written: list[apb.ExecInput] = []

    def done(self) -> bool:
        return False

    async def write(self, msg: apb.ExecInput) -> None:
        self.written.append(msg)

    def __aiter__(self) -> AsyncIterator[apb.ExecOutput]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[apb.ExecOutput]:
        for o in self.outs:
            yield o
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        pass


async def test_exec_session_reads_output_and_exit_code() -> None:
    call = ClientCall(
        [
            apb.ExecOutput(stdout=b"a"),
            apb.ExecOutput(stderr=b"b"),
            apb.ExecOutput(exit=apb.ExecExit(code=3)),
        ]
    )
    session = ExecSession(call)
    await session.send_stdin(b"x" * 70_000)  # split into bounded messages
    await session.resize(24, 80)
    await session.close_stdin()
    await session.close_stdin()  # once is enough
    await session.send_stdin(b"after")  # after close: not sent
    got = [item async for item in session.output()]
    assert got == [("stdout", b"a"), ("stderr", b"b")]
    assert session.exit_code == 3
    kinds = [m.WhichOneof("input") for m in call.written]
    assert kinds == ["stdin", "stdin", "stdin", "resize", "close_stdin"]
    assert max(len(m.stdin) for m in call.written) <= 32 * 1024


async def test_exec_session_without_exit_code_is_an_error() -> None:
    session = ExecSession(ClientCall([apb.ExecOutput(stdout=b"a")]))
    with pytest.raises(ApiError, match="without the command's exit code"):
        [item async for item in session.output()]
    failing = ExecSession(ClientCall([], _rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "nope")))
    with pytest.raises(ApiError, match="nope") as err:
        [item async for item in failing.output()]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_pieces() -> None:
    assert exec_cmd.split_command(["exec", "-it", "web", "--", "sh", "-c", "ls -l"]) == (
        ["exec", "-it", "web"],
        ["sh", "-c", "ls -l"],
    )
    assert exec_cmd.split_command(["-n", "x", "exec", "web", "--", "--"]) == (
        ["-n", "x", "exec", "web"],
        ["--"],
    )
    assert exec_cmd.split_command(["get", "pods", "--", "x"]) == (["get", "pods", "--", "x"], None)
    assert logs_cmd.pod_name("web") == "web"
    assert logs_cmd.pod_name("pod/web") == "web"
    assert logs_cmd.pod_name("po/web") == "web"
    with pytest.raises(CliError, match="only pods"):
        logs_cmd.pod_name("service/web")
    bad = ApiError(grpc.StatusCode.INVALID_ARGUMENT, "a container name must be specified")
    assert logs_cmd.stream_error(bad) == (
        "Error from server (BadRequest): a container name must be specified"
    )
    dial = ApiError(grpc.StatusCode.INTERNAL, "error dialing backend: refused")
    assert logs_cmd.stream_error(dial) == "Error from server: error dialing backend: refused"
