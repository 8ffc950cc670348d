"""The client side of the Pipeline RPC (apiserver/pipeline.py): calls become
messages on one long-lived stream, matched to their answers by id.

The stream opens on the first call and again after it breaks. A break fails
every call in flight with the stream's error (UNAVAILABLE when the
apiserver went away), exactly as the same unary calls would have failed;
whether such a call took effect is as unknown as for a unary call whose
answer was lost.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.client.errors import ApiError, UnavailableError, from_status, translate_error

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _Stream:
    """One open Pipeline call and the calls waiting on it."""

    def __init__(self, open_call: Callable[[AsyncIterator[pb.PipelineRequest]], Any]) -> None:
        self.outbox: asyncio.Queue[pb.PipelineRequest | None] = asyncio.Queue()
        self.waiting: dict[int, asyncio.Future[pb.PipelineResponse]] = {}
        self.broken: ApiError | None = None
        self.call = open_call(self._requests())
        self.reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[pb.PipelineRequest]:
        while (request := await self.outbox.get()) is not None:
            yield request

    async def _read(self) -> None:
        error: ApiError = UnavailableError(
            grpc.StatusCode.UNAVAILABLE, "the apiserver ended the pipeline stream"
        )
        try:
            async for response in self.call:
                future = self.waiting.pop(response.id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except grpc.aio.AioRpcError as exc:
            error = _stream_error(exc)
        except asyncio.CancelledError:
            error = UnavailableError(grpc.StatusCode.CANCELLED, "the client was closed")
            raise
        finally:
            self.broken = error
            self.outbox.put_nowait(None)  # ends the request generator
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(error)
            self.waiting.clear()

    def send(self, request: pb.PipelineRequest) -> asyncio.Future[pb.PipelineResponse]:
        future: asyncio.Future[pb.PipelineResponse] = asyncio.get_running_loop().create_future()
        self.waiting[request.id] = future
        self.outbox.put_nowait(request)
        return future

    def close(self) -> None:
        self.outbox.put_nowait(None)
        self.call.cancel()
        self.reader.cancel()


def _stream_error(exc: grpc.aio.AioRpcError) -> ApiError:
    """What the calls on a stream that ended with exc fail with. Refused
    credentials say so; anything else (the apiserver stopped, the connection
    dropped: gRPC says INTERNAL, CANCELLED or UNAVAILABLE) is a broken
    connection, which callers retry as they would a unary UNAVAILABLE."""
    if exc.code() in _REFUSALS:
        return translate_error(exc)
    return UnavailableError(
        grpc.StatusCode.UNAVAILABLE,
        f"the stream to the apiserver broke ({exc.code().name}: {exc.details()})",
    )


_REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


class Pipeline:
    """Sends calls over the Pipeline stream of whatever stub `stub()` returns
    (it changes when the client reconnects with renewed credentials)."""

    def __init__(self, stub: Callable[[], Any]) -> None:
        self._stub = stub
        self._stream: _Stream | None = None
        self._ids = itertools.count(1)

    async def call(self, verb: str, request: Any, timeout: float) -> pb.PipelineResponse:
        """The answer to one call; raises its error as the unary call would."""
        stream = self._stream
        if stream is None or stream.broken is not None:
            stream = self._stream = _Stream(self._stub().Pipeline)
        call_id = next(self._ids)
        future = stream.send(pb.PipelineRequest(id=call_id, **{verb: request}))
        try:
            response = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise UnavailableError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the apiserver did not answer {verb} within {timeout:g}s",
            ) from None
        finally:
            stream.waiting.pop(call_id, None)
        if response.code:
            raise from_status(_CODES.get(response.code, grpc.StatusCode.UNKNOWN), response.message)
        return response

    def reset(self) -> None:
        """Later calls open a new stream (on the stub's current channel); the
        calls in flight finish on the old one, which the client stops writing
        to, so the apiserver ends it once they are answered."""
        if self._stream is not None:
            self._stream.outbox.put_nowait(None)
        self._stream = None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
