"""The client's side of the Pipeline RPC, against a fake stream: answers
reach their callers by id in any order, errors become the client's error
classes, a timeout is an error of its own call only, and a broken stream
fails the calls on it and is replaced by the next call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.client.errors import (
    ConflictError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from orchestrator.client.pipeline import Pipeline

pytestmark = pytest.mark.unit


class FakeCall:
    """A Pipeline call: reads the client's requests; the test answers them."""

    def __init__(self, requests: AsyncIterator[pb.PipelineRequest]) -> None:
        self.requests: list[pb.PipelineRequest] = []
        self.answers: asyncio.Queue[pb.PipelineResponse | BaseException] = asyncio.Queue()
        self.cancelled = False
        self._pump = asyncio.create_task(self._consume(requests))

    async def _consume(self, requests: AsyncIterator[pb.PipelineRequest]) -> None:
        async for r in requests:
            self.requests.append(r)

    def __aiter__(self) -> FakeCall:
        return self

    async def __anext__(self) -> pb.PipelineResponse:
        item = await self.answers.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True
        self._pump.cancel()

    async def wait_requests(self, n: int) -> list[pb.PipelineRequest]:
        async with asyncio.timeout(5):
            while len(self.requests) < n:
                await asyncio.sleep(0)
        return self.requests


class FakeStub:
    def __init__(self) -> None:
        self.calls: list[FakeCall] = []

    def Pipeline(self, requests: AsyncIterator[pb.PipelineRequest]) -> FakeCall:
        call = FakeCall(requests)
        self.calls.append(call)
        return call


def ok(call_id: int, raw: bytes) -> pb.PipelineResponse:
    return pb.PipelineResponse(id=call_id, object=pb.Object(kind="ConfigMap", raw=raw))


def get(name: str) -> pb.GetRequest:
    return pb.GetRequest(kind="ConfigMap", namespace="default", name=name)


async def test_answers_reach_their_callers_in_any_order() -> None:
    stub = FakeStub()
    p = Pipeline(lambda: stub)
    calls = [asyncio.create_task(p.call("get", get(n), 5)) for n in ("a", "b", "c")]
    sent = await (await await_first_call(stub)).wait_requests(3)
    assert [r.get.name for r in sent] == ["a", "b", "c"]
    assert len({r.id for r in sent}) == 3
    for r in reversed(sent):
        stub.calls[0].answers.put_nowait(ok(r.id, r.get.name.encode()))
    got = await asyncio.gather(*calls)
    assert [g.object.raw for g in got] == [b"a", b"b", b"c"]
    assert len(stub.calls) == 1  # one stream for all of them
    p.close()


async def await_first_call(stub: FakeStub) -> FakeCall:
    async with asyncio.timeout(5):
        while not stub.calls:
            await asyncio.sleep(0)
    return stub.calls[0]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.ABORTED, ConflictError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
    ],
)
async def test_an_error_answer_raises_the_client_error_of_its_code(
    code: grpc.StatusCode, error: type[Exception]
) -> None:
    stub = FakeStub()
    p = Pipeline(lambda: stub)
    task = asyncio.create_task(p.call("get", get("x"), 5))
    call = await await_first_call(stub)
    (request,) = await call.wait_requests(1)
    call.answers.put_nowait(pb.PipelineResponse(id=request.id, code=code.value[0], message="why"))
    with pytest.raises(error, match="why") as raised:
        await task
    assert raised.value.code == code  # type: ignore[attr-defined]
    p.close()


async def test_a_timeout_fails_only_its_own_call() -> None:
    stub = FakeStub()
    p = Pipeline(lambda: stub)
    slow = asyncio.create_task(p.call("get", get("slow"), 0.2))
    fine = asyncio.create_task(p.call("get", get("fine"), 5))
    call = await await_first_call(stub)
    sent = await call.wait_requests(2)
    with pytest.raises(UnavailableError, match=r"did not answer get within 0\.2s") as raised:
        await slow
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # A late answer to the timed-out call is dropped; the stream goes on.
    call.answers.put_nowait(ok(sent[0].id, b"late"))
    call.answers.put_nowait(ok(sent[1].id, b"fine"))
    assert (await fine).object.raw == b"fine"
    assert len(stub.calls) == 1
    p.close()


async def test_a_broken_stream_fails_its_calls_and_the_next_call_opens_another() -> None:
    stub = FakeStub()
    p = Pipeline(lambda: stub)
    waiting = [asyncio.create_task(p.call("get", get(n), 5)) for n in ("a", "b")]
    first = await await_first_call(stub)
    await first.wait_requests(2)
    first.answers.put_nowait(
        grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            "Socket closed",
        )
    )
    for task in waiting:
        with pytest.raises(UnavailableError, match=r"broke \(UNAVAILABLE: Socket closed\)"):
            await task
    again = asyncio.create_task(p.call("get", get("c"), 5))
    async with asyncio.timeout(5):
        while len(stub.calls) < 2:
            await asyncio.sleep(0)
    (request,) = await stub.calls[1].wait_requests(1)
    stub.calls[1].answers.put_nowait(ok(request.id, b"c"))
    assert (await again).object.raw == b"c"
    p.close()


@pytest.mark.parametrize(
    ("code", "details", "error", "message"),
    [
        # What a stream in flight sees when the apiserver stops: callers get
        # the retryable error a unary call would have ended with.
        (grpc.StatusCode.INTERNAL, "from Core", UnavailableError, "INTERNAL: from Core"),
        (
            grpc.StatusCode.UNAUTHENTICATED,
            "the token is not valid",
            UnauthenticatedError,
            "the token is not valid",
        ),
    ],
)
async def test_a_broken_stream_fails_its_calls_with_what_the_caller_can_act_on(
    code: grpc.StatusCode, details: str, error: type[Exception], message: str
) -> None:
    stub = FakeStub()
    p = Pipeline(lambda: stub)
    task = asyncio.create_task(p.call("get", get("a"), 5))
    call = await await_first_call(stub)
    await call.wait_requests(1)
    call.answers.put_nowait(
        grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
    )
    with pytest.raises(error, match=message):
        await task
    p.close()


async def test_a_stream_the_server_ends_fails_the_calls_left_on_it() -> None:
    stub = FakeStub()
    p = Pipeline(lambda: stub)
    task = asyncio.create_task(p.call("get", get("a"), 5))
    call = await await_first_call(stub)
    await call.wait_requests(1)
    call.answers.put_nowait(StopAsyncIteration())
    with pytest.raises(UnavailableError, match="ended the pipeline stream"):
        await task
    p.close()


async def test_reset_sends_later_calls_on_a_new_stream_and_close_cancels() -> None:
    stubs = [FakeStub(), FakeStub()]
    current: dict[str, Any] = {"stub": stubs[0]}
    p = Pipeline(lambda: current["stub"])
    old = asyncio.create_task(p.call("get", get("old"), 5))
    old_call = await await_first_call(stubs[0])
    (old_req,) = await old_call.wait_requests(1)
    current["stub"] = stubs[1]
    p.reset()
    new = asyncio.create_task(p.call("get", get("new"), 5))
    new_call = await await_first_call(stubs[1])
    (new_req,) = await new_call.wait_requests(1)
    # The old stream is written to no more (the apiserver ends it once its
    # calls are answered); the call in flight finishes on it.
    async with asyncio.timeout(5):
        while not old_call._pump.done():
            await asyncio.sleep(0)
    old_call.answers.put_nowait(ok(old_req.id, b"old"))
    new_call.answers.put_nowait(ok(new_req.id, b"new"))
    assert (await old).object.raw == b"old" and (await new).object.raw == b"new"
    p.close()
    assert new_call.cancelled
