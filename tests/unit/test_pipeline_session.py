"""The apiserver's side of the Pipeline RPC: calls run concurrently, each is
answered with its own id and its own error, and the stream ends only after
the calls in flight are answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.apiserver import pipeline
from orchestrator.apiserver.errors import Conflict, NotFound
from orchestrator.apiserver.pipeline import PipelineSession
from orchestrator.apiserver.registry import UserInfo

pytestmark = pytest.mark.unit

USER = UserInfo("alice", ("system:authenticated",))


def get(call_id: int, name: str) -> pb.PipelineRequest:
    return pb.PipelineRequest(id=call_id, get=pb.GetRequest(kind="ConfigMap", name=name))


class Handlers:
    """get answers the name it was asked for, after a delay the test sets per
    name; some names raise."""

    def __init__(self) -> None:
        self.delays: dict[str, float] = {}
        self.users: list[str] = []
        self.started: list[str] = []

    async def get(self, user: UserInfo, request: pb.GetRequest) -> pb.Object:
        self.users.append(user.name)
        self.started.append(request.name)
        await asyncio.sleep(self.delays.get(request.name, 0))
        if request.name == "missing":
            raise NotFound('configmaps "missing" not found')
        if request.name == "stale":
            raise Conflict("the object has been modified")
        if request.name == "slow-store":
            raise TimeoutError
        if request.name == "bug":
            raise KeyError("oops")
        return pb.Object(kind="ConfigMap", raw=request.name.encode())

    async def delete(self, user: UserInfo, request: pb.DeleteRequest) -> pb.DeleteResponse:
        return pb.DeleteResponse(object=pb.Object(kind=request.kind), deleted=True)


async def feed(requests: list[pb.PipelineRequest], hold: asyncio.Event | None = None) -> Any:
    for r in requests:
        yield r
    if hold is not None:
        await hold.wait()


async def answers(session: PipelineSession, requests: AsyncIterator[Any]) -> list[Any]:
    return [r async for r in session.run(requests)]


async def test_calls_run_concurrently_and_are_answered_as_they_finish() -> None:
    h = Handlers()
    h.delays = {"slow": 0.3}
    session = PipelineSession({"get": h.get}, USER)
    out = await asyncio.wait_for(
        answers(session, feed([get(1, "slow"), get(2, "fast"), get(3, "also-fast")])), 5
    )
    assert [r.id for r in out][-1] == 1  # the slow call held up neither of the others
    assert {r.id: r.object.raw for r in out} == {1: b"slow", 2: b"fast", 3: b"also-fast"}
    assert all(r.code == 0 for r in out)
    assert h.users == ["alice"] * 3


async def test_each_call_gets_its_own_error_and_the_stream_goes_on() -> None:
    h = Handlers()
    session = PipelineSession({"get": h.get}, USER)
    names = ["a", "missing", "stale", "slow-store", "bug", "b"]
    out = await answers(session, feed([get(i, n) for i, n in enumerate(names, 1)]))
    by_id = {r.id: r for r in out}
    assert by_id[1].object.raw == b"a" and by_id[6].object.raw == b"b"
    assert (by_id[2].code, by_id[2].message) == (
        grpc.StatusCode.NOT_FOUND.value[0],
        'configmaps "missing" not found',
    )
    assert by_id[3].code == grpc.StatusCode.ABORTED.value[0]
    assert by_id[4].code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "did not answer in time" in by_id[4].message
    assert by_id[5].code == grpc.StatusCode.UNKNOWN.value[0]
    assert "KeyError" in by_id[5].message and not by_id[5].HasField("object")


async def test_a_call_naming_no_known_verb_is_refused_with_the_verbs_there_are() -> None:
    h = Handlers()
    session = PipelineSession({"get": h.get, "delete": h.delete}, USER)
    request = pb.PipelineRequest(id=7, bind=pb.BindRequest(name="p", node="n"))
    (unknown,) = await answers(session, feed([request]))
    assert unknown.id == 7 and unknown.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert unknown.message == "a pipelined call must be one of: delete, get"
    (empty,) = await answers(session, feed([pb.PipelineRequest(id=8)]))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_delete_answers_carry_the_delete_response() -> None:
    h = Handlers()
    session = PipelineSession({"delete": h.delete}, USER)
    request = pb.PipelineRequest(id=3, delete=pb.DeleteRequest(kind="Pod", name="p"))
    (out,) = await answers(session, feed([request]))
    assert out.WhichOneof("result") == "deleted"
    assert out.deleted.deleted and out.deleted.object.kind == "Pod"


async def test_the_stream_ends_after_the_calls_in_flight_are_answered() -> None:
    h = Handlers()
    h.delays = {"late": 0.2}
    session = PipelineSession({"get": h.get}, USER)
    # The client stops writing at once; the late call is still answered.
    out = await asyncio.wait_for(answers(session, feed([get(1, "late")])), 5)
    assert [(r.id, r.object.raw) for r in out] == [(1, b"late")]


async def test_calls_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "DEPTH", 2)
    h = Handlers()
    h.delays = {"x1": 0.3, "x2": 0.3}
    session = PipelineSession({"get": h.get}, USER)
    requests = [get(1, "x1"), get(2, "x2"), get(3, "x3")]
    run = asyncio.create_task(answers(session, feed(requests)))
    await asyncio.sleep(0.1)
    assert h.started == ["x1", "x2"]  # the third waits for room
    out = await asyncio.wait_for(run, 5)
    assert sorted(r.id for r in out) == [1, 2, 3] and h.started[-1] == "x3"


async def test_a_cancelled_stream_cancels_its_calls() -> None:
    h = Handlers()
    h.delays = {"forever": 60}
    session = PipelineSession({"get": h.get}, USER)
    hold = asyncio.Event()
    gen = session.run(feed([get(1, "forever"), get(2, "now")], hold))
    first = await asyncio.wait_for(gen.__anext__(), 5)
    assert first.id == 2
    tasks_before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert tasks_before, "the slow call and the reader are running"
    await gen.aclose()  # what grpc does when the client goes away
    await asyncio.sleep(0)
    assert all(t.done() for t in tasks_before)


async def test_answers_the_client_does_not_read_count_against_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "DEPTH", 2)
    h = Handlers()
    session = PipelineSession({"get": h.get}, USER)
    hold = asyncio.Event()
    gen = session.run(feed([get(i, f"x{i}") for i in range(1, 6)], hold))
    first = await asyncio.wait_for(gen.__anext__(), 5)  # then the client stops reading
    await asyncio.sleep(0.2)
    # Two places: the answer taken is freed only when the next is asked for,
    # so at most two calls ran while nobody read.
    assert len(h.started) == 2, h.started
    rest = [await asyncio.wait_for(gen.__anext__(), 5) for _ in range(4)]
    assert sorted([first.id, *(r.id for r in rest)]) == [1, 2, 3, 4, 5]
    await gen.aclose()
