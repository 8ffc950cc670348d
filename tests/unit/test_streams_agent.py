"""The agent side of logs and exec, without Docker: request checks, which
container, the exec relay, the thread bridge, the servicer's identity check,
and the serving certificate's CSR rules."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent import server as agent_server
from agent import streaming as st
from agent.runtime import types as rt
from certs import csr as csrlib
from certs import pki, serving
from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.controllers import csr_signer

pytestmark = pytest.mark.unit

TARGET = st.Target("default", "web", "uid-1", "main")


# -- request checks ---------------------------------------------------------------------


def test_logs_request_needs_names_and_sane_numbers() -> None:
    ok = apb.LogsRequest(namespace="default", pod="web", pod_uid="u", container="main")
    assert st.check_logs_request(ok) == st.Target("default", "web", "u", "main")
    with pytest.raises(st.StreamError, match="container must be given"):
        st.check_logs_request(apb.LogsRequest(namespace="default", pod="web"))
    with pytest.raises(st.StreamError, match="namespace, pod"):
        st.check_logs_request(apb.LogsRequest(container="c"))
    bad_tail = apb.LogsRequest(namespace="d", pod="p", container="c", tail_lines=-1)
    with pytest.raises(st.StreamError, match="tailLines"):
        st.check_logs_request(bad_tail)
    bad_since = apb.LogsRequest(namespace="d", pod="p", container="c", since_seconds=0)
    with pytest.raises(st.StreamError, match="sinceSeconds") as err:
        st.check_logs_request(bad_since)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # Zero lines of tail is a valid request (nothing but what follows).
    st.check_logs_request(apb.LogsRequest(namespace="d", pod="p", container="c", tail_lines=0))


def test_exec_start_needs_a_command_within_bounds() -> None:
    base = {"namespace": "d", "pod": "p", "container": "c"}
    assert st.check_exec_start(apb.ExecStart(command=["ls"], **base)).container == "c"
    with pytest.raises(st.StreamError, match="a command must be given"):
        st.check_exec_start(apb.ExecStart(**base))
    with pytest.raises(st.StreamError, match="arguments"):
        st.check_exec_start(apb.ExecStart(command=["x"] * (st.MAX_COMMAND_ARGS + 1), **base))
    with pytest.raises(st.StreamError, match="longer than"):
        st.check_exec_start(apb.ExecStart(command=["x" * (st.MAX_COMMAND_BYTES + 1)], **base))
    with pytest.raises(st.StreamError, match="terminal size"):
        st.check_exec_start(apb.ExecStart(command=["sh"], rows=99999, cols=80, **base))


# -- which container ------------------------------------------------------------------


def _row(cid: str, state: str, restarts: int, created: int, kind: str = "app") -> dict[str, Any]:
    return {
        "Id": cid,
        "State": state,
        "Created": created,
        "Labels": {rt.LABEL_RESTART_COUNT: str(restarts), rt.LABEL_CONTAINER_TYPE: kind},
    }


def test_candidates_are_newest_first_without_the_sandbox() -> None:
    rows = [
        _row("old", "exited", 0, 100),
        _row("sandbox", "running", 0, 50, kind="sandbox"),
        _row("new", "running", 1, 200),
        _row("odd", "exited", 0, 150),  # same restart count: creation time decides
    ]
    found = st.candidates_from_docker(rows)
    assert [c.id for c in found] == ["new", "odd", "old"]
    broken = [{"Id": "x", "State": "running", "Labels": {rt.LABEL_RESTART_COUNT: "?"}}]
    assert st.candidates_from_docker(broken)[0].restart_count == 0


def test_pick_current_and_previous() -> None:
    found = st.candidates_from_docker([_row("a", "exited", 0, 1), _row("b", "running", 1, 2)])
    assert st.pick_container(TARGET, found, previous=False).id == "b"
    assert st.pick_container(TARGET, found, previous=True).id == "a"
    with pytest.raises(st.StreamError, match='previous terminated container "main"'):
        st.pick_container(TARGET, found[:1], previous=True)
    with pytest.raises(st.StreamError, match="waiting to start"):
        st.pick_container(TARGET, [], previous=False)


def test_exec_needs_a_running_newest_instance() -> None:
    running = st.candidates_from_docker([_row("b", "running", 1, 2), _row("a", "exited", 0, 1)])
    assert st.running(TARGET, running).id == "b"
    with pytest.raises(st.StreamError, match=r'container not found \("main"\)'):
        st.running(TARGET, [])
    exited = st.candidates_from_docker([_row("a", "exited", 0, 1)])
    with pytest.raises(st.StreamError, match="is not running"):
        st.running(TARGET, exited)


# -- the exec relay --------------------------------------------------------------------


class FakeProcess:
    def __init__(self, output: Sequence[tuple[int, bytes]] = (), code: int = 0) -> None:
        self.output: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        for item in output:
            self.output.put_nowait(item)
        self.code = code
        self.stdin: list[bytes] = []
        self.stdin_closed = asyncio.Event()
        self.resizes: list[tuple[int, int]] = []
        self.closed = False

    def finish(self) -> None:
        self.output.put_nowait(None)

    async def read(self) -> tuple[int, bytes] | None:
        return await self.output.get()

    async def write(self, data: bytes) -> None:
        self.stdin.append(data)

    async def close_stdin(self) -> None:
        self.stdin_closed.set()

    async def resize(self, rows: int, cols: int) -> None:
        self.resizes.append((rows, cols))

    async def exit_code(self) -> int:
        return self.code

    async def close(self) -> None:
        self.closed = True


async def _inputs(
    *msgs: apb.ExecInput, hold: asyncio.Event | None = None
) -> AsyncIterator[apb.ExecInput]:
    for msg in msgs:
        yield msg
    if hold is not None:
        await hold.wait()


async def _collect(gen: AsyncIterator[apb.ExecOutput]) -> list[tuple[str, Any]]:
    out = []
    async for msg in gen:
        which = msg.WhichOneof("output")
        out.append((which, msg.exit.code if which == "exit" else getattr(msg, which)))
    return out


async def test_relay_passes_output_then_exit_code_and_closes() -> None:
    proc = FakeProcess([(st.STDOUT, b"hi\n"), (st.STDERR, b"oops\n")], code=3)
    proc.finish()
    got = await _collect(st.relay_exec(proc, _inputs(), stdin=False))
    assert got == [("stdout", b"hi\n"), ("stderr", b"oops\n"), ("exit", 3)]
    assert proc.closed
    assert not proc.stdin_closed.is_set()  # no stdin was asked for: nothing to close


async def test_relay_forwards_stdin_resize_and_eof() -> None:
    proc = FakeProcess()
    msgs = (
        apb.ExecInput(stdin=b"one "),
        apb.ExecInput(resize=apb.TerminalSize(rows=40, cols=120)),
        apb.ExecInput(resize=apb.TerminalSize(rows=0, cols=120)),  # nonsense: ignored
        apb.ExecInput(stdin=b"two"),
        apb.ExecInput(close_stdin=True),
        apb.ExecInput(stdin=b"late"),  # after close: dropped
    )
    relay = st.relay_exec(proc, _inputs(*msgs), stdin=True)
    task = asyncio.create_task(_collect(relay))
    await asyncio.wait_for(proc.stdin_closed.wait(), 2)
    proc.output.put_nowait((st.STDOUT, b"one two"))
    proc.finish()
    assert await asyncio.wait_for(task, 2) == [("stdout", b"one two"), ("exit", 0)]
    assert proc.stdin == [b"one ", b"two"]
    assert proc.resizes == [(40, 120)]


async def test_relay_end_of_input_closes_stdin() -> None:
    proc = FakeProcess()
    task = asyncio.create_task(
        _collect(st.relay_exec(proc, _inputs(apb.ExecInput(stdin=b"x")), stdin=True))
    )
    await asyncio.wait_for(proc.stdin_closed.wait(), 2)
    proc.finish()
    assert await asyncio.wait_for(task, 2) == [("exit", 0)]


async def test_relay_rejects_a_second_start_without_waiting_for_output() -> None:
    proc = FakeProcess()  # never produces output
    msgs = (apb.ExecInput(start=apb.ExecStart(command=["sh"])),)
    hold = asyncio.Event()
    with pytest.raises(st.StreamError, match="start may only be the first"):
        await asyncio.wait_for(
            _collect(st.relay_exec(proc, _inputs(*msgs, hold=hold), stdin=True)), 2
        )
    assert proc.closed


async def test_relay_rejects_oversized_stdin() -> None:
    proc = FakeProcess()
    big = apb.ExecInput(stdin=b"x" * (st.MAX_STDIN_MESSAGE + 1))
    with pytest.raises(st.StreamError, match="at most"):
        await asyncio.wait_for(_collect(st.relay_exec(proc, _inputs(big), stdin=True)), 2)


async def test_relay_survives_a_broken_input_stream() -> None:
    async def broken() -> AsyncIterator[apb.ExecInput]:
        yield apb.ExecInput(stdin=b"a")
        raise ConnectionResetError("caller went away")

    proc = FakeProcess([(st.STDOUT, b"done")])
    proc.finish()
    got = await asyncio.wait_for(_collect(st.relay_exec(proc, broken(), stdin=True)), 2)
    assert got == [("stdout", b"done"), ("exit", 0)]


async def test_relay_closes_the_process_when_the_caller_cancels() -> None:
    proc = FakeProcess()
    task = asyncio.create_task(_collect(st.relay_exec(proc, _inputs(), stdin=False)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proc.closed


async def test_coalesce_splits_big_frames() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"a" * 10
        yield b"b" * 3

    assert [x async for x in st.coalesce(source(), limit=4)] == [
        b"aaaa",
        b"aaaa",
        b"aa",
        b"bbb",
    ]


# -- thread bridge ---------------------------------------------------------------------


async def test_iterate_in_thread_is_bounded_and_closes() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def numbers() -> Iterator[int]:
        for i in range(1000):
            if closed.is_set():
                return
            produced.append(i)
            yield i

    it = st.iterate_in_thread(numbers, lambda _it: closed.set(), depth=4)
    first = [await anext(it) for _ in range(3)]
    assert first == [0, 1, 2]
    await asyncio.sleep(0.2)
    # The thread stops a few items ahead of the reader: it does not read everything.
    assert len(produced) <= 3 + 4 + 1
    await it.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()


async def test_iterate_in_thread_passes_errors_and_the_end() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    it = st.iterate_in_thread(failing, lambda _it: None)
    assert await anext(it) == 1
    with pytest.raises(RuntimeError, match="boom"):
        await anext(it)
    assert [x async for x in st.iterate_in_thread(lambda: iter([1, 2]), lambda _it: None)] == [
        1,
        2,
    ]


# -- the servicer ----------------------------------------------------------------------


class FakeContext:
    def __init__(self, cert_pem: bytes | None) -> None:
        self._auth = {"x509_pem_cert": [cert_pem]} if cert_pem else {}
        self.metadata: Any = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    async def send_initial_metadata(self, md: Any) -> None:
        self.metadata = md

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class FakeStreams:
    def __init__(self, rows: list[dict[str, Any]], log: bytes = b"", proc: Any = None) -> None:
        self.rows = rows
        self.log = log
        self.proc = proc
        self.asked: list[Any] = []

    async def find(self, target: st.Target) -> list[st.Candidate]:
        self.asked.append(target)
        return st.candidates_from_docker(self.rows)

    async def logs(self, container_id: str, **opts: Any) -> AsyncIterator[bytes]:
        self.asked.append((container_id, opts))
        yield self.log

    async def exec(self, container_id: str, command: Sequence[str], **opts: Any) -> Any:
        self.asked.append((container_id, list(command), opts))
        return self.proc

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("test-ca")


def _client_cert(ca: pki.KeyPair, cn: str, orgs: Sequence[str]) -> bytes:
    return pki.issue_certificate(ca, common_name=cn, organizations=orgs, client=True).cert_pem


async def test_servicer_accepts_only_the_apiserver(ca: pki.KeyPair) -> None:
    streams = FakeStreams([_row("c1", "running", 0, 1)], log=b"hello\n")
    svc = agent_server.AgentService(streams)
    req = apb.LogsRequest(
        namespace="default", pod="web", pod_uid="u", container="main", tail_lines=5
    )
    apiserver = FakeContext(
        _client_cert(ca, "orchestrator-apiserver-agent-client", ["system:masters"])
    )
    chunks = [c.data async for c in svc.Logs(req, apiserver)]
    assert chunks == [b"hello\n"]
    assert apiserver.metadata == agent_server.ANSWERED
    assert streams.asked[1] == (
        "c1",
        {"follow": False, "tail": 5, "since_seconds": None, "timestamps": False},
    )
    for cert in (_client_cert(ca, "admin", ["system:masters"]), None):
        with pytest.raises(Aborted) as err:
            [c async for c in svc.Logs(req, FakeContext(cert))]
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    node = FakeContext(_client_cert(ca, "system:node:n1", ["system:nodes"]))
    with pytest.raises(Aborted, match="only the apiserver"):
        [c async for c in svc.Logs(req, node)]


async def test_servicer_exec_reports_bad_requests(ca: pki.KeyPair) -> None:
    proc = FakeProcess([(st.STDOUT, b"hi\n")], code=0)
    proc.finish()
    streams = FakeStreams([_row("c1", "running", 0, 1)], proc=proc)
    svc = agent_server.AgentService(streams)
    ctx = FakeContext(_client_cert(ca, "orchestrator-apiserver-agent-client", ["system:masters"]))
    start = apb.ExecStart(namespace="d", pod="p", pod_uid="u", container="main", command=["echo"])
    got = [m async for m in svc.Exec(_inputs(apb.ExecInput(start=start)), ctx)]
    assert [m.WhichOneof("output") for m in got] == ["stdout", "exit"]
    assert streams.asked[-1] == (
        "c1",
        ["echo"],
        {"stdin": False, "tty": False, "rows": 0, "cols": 0},
    )
    with pytest.raises(Aborted, match="must be start") as err:
        [m async for m in svc.Exec(_inputs(apb.ExecInput(stdin=b"x")), ctx)]
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(Aborted, match="ended before its start"):
        [m async for m in svc.Exec(_inputs(), ctx)]
    stopped = FakeStreams([_row("c1", "exited", 0, 1)])
    with pytest.raises(Aborted, match="is not running"):
        [
            m
            async for m in agent_server.AgentService(stopped).Exec(
                _inputs(apb.ExecInput(start=start)), ctx
            )
        ]


# -- the serving certificate -------------------------------------------------------------


def _csr_obj(request: bytes, username: str, groups: Sequence[str], usages: Sequence[str]) -> Any:
    csr = kind_info("CertificateSigningRequest").new()
    csr.spec.request = request
    csr.spec.signer_name = serving.KUBELET_SERVING_SIGNER
    csr.spec.username = username
    csr.spec.groups.extend(groups)
    csr.spec.usages.extend(usages)
    return csr


def test_serving_csr_is_approved_only_from_its_own_node(ca: pki.KeyPair) -> None:
    req, key = serving.make_serving_csr("n1", ["192.0.2.11", "192.0.2.11"], ["n1"])
    nodes = ["system:nodes", "system:authenticated"]
    ok = _csr_obj(req, "system:node:n1", nodes, serving.SERVING_USAGES)
    assert csr_signer.review(ok) == (True, "node serving certificate request from the node itself")
    cases = [
        (_csr_obj(req, "system:node:n2", nodes, serving.SERVING_USAGES), "requested by"),
        (_csr_obj(req, "admin", ["system:masters"], serving.SERVING_USAGES), "only nodes may"),
        (
            _csr_obj(req, "system:node:n1", ["system:bootstrappers"], serving.SERVING_USAGES),
            "only nodes",
        ),
        (
            _csr_obj(req, "system:node:n1", nodes, ["digital signature", "client auth"]),
            "not allowed",
        ),
        (_csr_obj(req, "system:node:n1", nodes, ["digital signature"]), "server auth"),
    ]
    for csr, why in cases:
        approved, reason = csr_signer.review(csr)
        assert not approved and why in reason, (reason, why)
    # A CSR with no address at all, or a client-style subject, is refused.
    bare, _ = csrlib.make_csr("system:node:n1", ["system:nodes"])
    assert "at least one" in (serving.node_serving_csr_problem(bare, "system:node:n1", nodes) or "")
    wrong_org, _ = csrlib.make_csr("system:node:n1", ["system:masters"])
    assert "organization" in (
        serving.node_serving_csr_problem(wrong_org, "system:node:n1", nodes) or ""
    )
    with pytest.raises(csrlib.CSRError):
        serving.make_serving_csr("n1", [], [])

    cert_pem = csrlib.sign_csr(ca, req, valid_seconds=3600, usages=serving.SERVING_USAGES)
    cert = x509.load_pem_x509_certificate(cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pki.identity_from_cert(cert) == ("system:node:n1", ["system:nodes"])
    assert agent_server.serving_cert_usable(cert_pem, ca.cert_pem, ["192.0.2.11"], ["n1"])
    assert not agent_server.serving_cert_usable(cert_pem, ca.cert_pem, ["192.0.2.12"], ["n1"])
    other_ca = pki.create_ca("other")
    assert not agent_server.serving_cert_usable(cert_pem, other_ca.cert_pem, ["192.0.2.11"], [])
    assert key  # the key stays with the node


def test_serving_cert_near_expiry_is_not_usable(ca: pki.KeyPair) -> None:
    start = datetime.now(UTC) - timedelta(hours=9)
    old = pki.issue_certificate(
        ca,
        common_name="system:node:n1",
        organizations=["system:nodes"],
        ip_addresses=["192.0.2.11"],
        server=True,
        valid_seconds=10 * 3600,
        not_before=start,
    )
    assert not agent_server.serving_cert_usable(old.cert_pem, ca.cert_pem, ["192.0.2.11"], [])


async def test_ensure_serving_certificate_reuses_a_good_one(ca: pki.KeyPair, tmp_path: Any) -> None:
    calls: list[str] = []

    class Client:
        async def create(self, obj: Any) -> Any:
            calls.append("create")
            obj.metadata.name = "csr-1"
            self.obj = obj
            return obj

        async def get(self, kind: str, name: str) -> Any:
            approved = self.obj
            approved.status.certificate = csrlib.sign_csr(
                ca, approved.spec.request, valid_seconds=3600, usages=serving.SERVING_USAGES
            )
            return approved

    paths = agent_server.ServingPaths.under(tmp_path)
    client = Client()
    cert1, _ = await agent_server.ensure_serving_certificate(
        client, "n1", ["127.0.0.1"], ["n1"], ca.cert_pem, paths
    )
    assert paths.cert.read_bytes() == cert1 and paths.key.stat().st_mode & 0o777 == 0o600
    cert2, _ = await agent_server.ensure_serving_certificate(
        client, "n1", ["127.0.0.1"], ["n1"], ca.cert_pem, paths
    )
    assert cert2 == cert1 and calls == ["create"]
    # A new node address needs a new certificate.
    await agent_server.ensure_serving_certificate(
        client, "n1", ["127.0.0.2"], ["n1"], ca.cert_pem, paths
    )
    assert calls == ["create", "create"]


async def test_exec_exit_code_waits_for_docker_to_settle() -> None:
    # docker reports Running for a moment after the output ends.
    answers = iter([{"Running": True, "ExitCode": None}, {"Running": False, "ExitCode": 7}])

    class Streams:
        api = SimpleNamespace(exec_inspect=lambda _id: next(answers))

        async def call(self, method: str, *args: Any) -> Any:
            return getattr(self.api, method)(*args)

    proc = st.DockerExec(Streams(), "e1", asyncio.StreamReader(), None, tty=False)  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert await proc.exit_code() == 7
    assert time.monotonic() - t0 < 2


async def test_docker_multiplexed_frames_are_split_by_stream() -> None:
    reader = asyncio.StreamReader()
    frames = (
        b"\x01\x00\x00\x00\x00\x00\x00\x03out"
        + b"\x02\x00\x00\x00\x00\x00\x00\x04err!"
        + b"\x01\x00\x00\x00\x00\x00\x00\x00"  # an empty frame
        + b"\x01\x00\x00\x00\x00\x00\x00\x05ab"  # cut short: what arrived is kept
    )
    reader.feed_data(frames)
    reader.feed_eof()
    proc = st.DockerExec(None, "e1", reader, None, tty=False)  # type: ignore[arg-type]
    got = []
    while (item := await proc.read()) is not None:
        got.append(item)
    assert got == [(st.STDOUT, b"out"), (st.STDERR, b"err!"), (st.STDOUT, b"ab")]
    raw = asyncio.StreamReader()
    raw.feed_data(b"\x1b[Jtty bytes")
    raw.feed_eof()
    tty = st.DockerExec(None, "e1", raw, None, tty=True)  # type: ignore[arg-type]
    assert await tty.read() == (st.STDOUT, b"\x1b[Jtty bytes")
    assert await tty.read() is None


async def test_an_unreachable_dockerd_is_unavailable(tmp_path: Any) -> None:
    streams = st.DockerStreams(f"unix://{tmp_path}/no-such.sock", timeout=2)
    try:
        with pytest.raises(st.StreamError, match="container runtime unreachable") as err:
            await streams.find(TARGET)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(st.StreamError, match="unreachable"):
            await streams.exec("c1", ["ls"], stdin=False, tty=False)
        logs = streams.logs("c1", follow=False, tail=None, since_seconds=None, timestamps=False)
        with pytest.raises(st.StreamError, match="unreachable"):
            [x async for x in logs]
        # Every slot came back: a failed exec does not leak one.
        assert not streams._execs.locked() and streams._execs._value == st.MAX_EXEC_SESSIONS
    finally:
        await streams.close()
