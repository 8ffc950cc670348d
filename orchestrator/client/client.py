"""The API client every component uses: typed objects in, typed objects out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo, kind_info
from orchestrator.api.meta import meta
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.api.pb import apiservice_pb2_grpc as pb_grpc
from orchestrator.client.config import Connection
from orchestrator.client.errors import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
    translate_error,
)
from orchestrator.client.pipeline import Pipeline

# The errors are defined in errors.py and re-exported: callers import them from here.
__all__ = [
    "AlreadyExistsError",
    "ApiError",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "NotFoundError",
    "ObjectList",
    "UnauthenticatedError",
    "UnavailableError",
    "WatchEvent",
    "secure_channel",
    "translate_error",
]

M = TypeVar("M", bound=Message)

MAX_MESSAGE = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED MODIFIED DELETED BOOKMARK
    object: Message | None
    resource_version: str


@dataclass(frozen=True)
class ObjectList:
    items: list[Any]
    resource_version: str
    continue_token: str = ""


def _decode(info: KindInfo, raw: bytes) -> Any:
    msg = info.message()
    msg.ParseFromString(raw)
    return msg


def secure_channel(conn: Connection, *, target_name: str | None = None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=conn.ca_pem or None,
        private_key=conn.key_pem or None,
        certificate_chain=conn.cert_pem or None,
    )
    options: list[tuple[str, Any]] = list(CHANNEL_OPTIONS)
    if target_name:
        options.append(("grpc.ssl_target_name_override", target_name))
    if conn.token:
        token_creds = grpc.access_token_call_credentials(conn.token)
        creds = grpc.composite_channel_credentials(creds, token_creds)
    return grpc.aio.secure_channel(conn.server, creds, options=options)


class Client:
    """Async client of the generic API. Use as `async with Client(conn) as c:`."""

    def __init__(self, conn: Connection, *, timeout: float = 30.0) -> None:
        self.conn = conn
        self.namespace = conn.namespace
        self.timeout = timeout
        self._channel = secure_channel(conn)
        self._stub = pb_grpc.ApiStub(self._channel)
        self._pipeline = Pipeline(lambda: self._stub)

    async def reconnect(self, conn: Connection) -> None:
        """Switch to new credentials (a renewed certificate) for later calls;
        calls and watches in flight finish on the old connection."""
        old = self._channel
        self.conn = conn
        self._channel = secure_channel(conn)
        self._stub = pb_grpc.ApiStub(self._channel)
        self._pipeline.reset()
        self._closing = asyncio.create_task(old.close(grace=30))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._pipeline.close()
        await self._channel.close()

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate_error(exc) from None

    async def _pipelined(self, verb: str, request: Any) -> pb.PipelineResponse:
        return await self._pipeline.call(verb, request, self.timeout)

    # -- verbs -------------------------------------------------------------------

    async def create(self, obj: M, *, dry_run: bool = False) -> M:
        resp = await self._pipelined(
            "create",
            pb.CreateRequest(
                object=pb.Object(kind=obj.kind, raw=obj.SerializeToString()),  # type: ignore[attr-defined]
                dry_run=dry_run,
            ),
        )
        result: M = _decode(kind_info(resp.object.kind), resp.object.raw)
        return result

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        info = kind_info(kind)
        ns = (namespace or self.namespace) if info.namespaced else ""
        resp = await self._pipelined("get", pb.GetRequest(kind=kind, namespace=ns, name=name))
        return _decode(info, resp.object.raw)

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        all_namespaces: bool = False,
        limit: int = 0,
        continue_token: str = "",
    ) -> ObjectList:
        info = kind_info(kind)
        ns = "" if all_namespaces or not info.namespaced else (namespace or self.namespace)
        resp = await self._unary(
            self._stub.List,
            pb.ListRequest(
                kind=kind,
                namespace=ns,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=limit,
                continue_token=continue_token,
            ),
        )
        return ObjectList(
            [_decode(info, raw) for raw in resp.items], resp.resource_version, resp.continue_token
        )

    async def update(self, obj: M, *, dry_run: bool = False) -> M:
        return await self._update(obj, status=False, dry_run=dry_run)

    async def update_status(self, obj: M) -> M:
        return await self._update(obj, status=True, dry_run=False)

    async def _update(self, obj: M, *, status: bool, dry_run: bool) -> M:
        resp = await self._pipelined(
            "update",
            pb.UpdateRequest(
                object=pb.Object(kind=obj.kind, raw=obj.SerializeToString()),  # type: ignore[attr-defined]
                status=status,
                dry_run=dry_run,
            ),
        )
        result: M = _decode(kind_info(resp.object.kind), resp.object.raw)
        return result

    async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> Any:
        """Assign the unbound pod namespace/name to node (pods/binding); the
        bound pod. ConflictError when it is bound already, being deleted or,
        with uid, no longer that pod."""
        request = pb.BindRequest(namespace=namespace, name=name, uid=uid, node=node)
        resp = await self._pipelined("bind", request)
        return _decode(kind_info("Pod"), resp.object.raw)

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        grace_period: int | None = None,
        propagation: str = "",
        precondition_uid: str = "",
        dry_run: bool = False,
    ) -> tuple[Any, bool]:
        """Returns (object, deleted): deleted is False while finalizers or a
        grace period still hold the object."""
        info = kind_info(kind)
        ns = (namespace or self.namespace) if info.namespaced else ""
        req = pb.DeleteRequest(
            kind=kind,
            namespace=ns,
            name=name,
            propagation_policy=propagation,
            precondition_uid=precondition_uid,
            dry_run=dry_run,
        )
        if grace_period is not None:
            req.grace_period_seconds = grace_period
        resp = await self._pipelined("delete", req)
        return _decode(info, resp.deleted.object.raw), resp.deleted.deleted

    async def apply(
        self, manifest: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False
    ) -> tuple[Any, str]:
        """Create or three-way-merge update; returns (object, outcome)."""
        resp = await self._unary(
            self._stub.Apply,
            pb.ApplyRequest(
                manifest_json=json.dumps(manifest),
                default_namespace=namespace or self.namespace,
                dry_run=dry_run,
            ),
        )
        return _decode(kind_info(resp.object.kind), resp.object.raw), resp.outcome

    async def version(self) -> pb.VersionResponse:
        resp: pb.VersionResponse = await self._unary(self._stub.Version, pb.VersionRequest())
        return resp

    async def watch(
        self,
        kind: str,
        namespace: str | None = None,
        *,
        resource_version: str = "",
        label_selector: str = "",
        field_selector: str = "",
        all_namespaces: bool = False,
        allow_bookmarks: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        """Events until the server ends the stream. Raises GoneError when
        resource_version is too old (list again, then watch from the list's)."""
        info = kind_info(kind)
        ns = "" if all_namespaces or not info.namespaced else (namespace or self.namespace)
        call = self._stub.Watch(
            pb.WatchRequest(
                kind=kind,
                namespace=ns,
                resource_version=resource_version,
                label_selector=label_selector,
                field_selector=field_selector,
                allow_bookmarks=allow_bookmarks,
            )
        )
        try:
            async for batch in call:
                for ev in batch.events:
                    obj = _decode(info, ev.raw) if ev.type != "BOOKMARK" else None
                    yield WatchEvent(ev.type, obj, ev.resource_version)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise translate_error(exc) from None
        finally:
            call.cancel()

    # -- resource metrics (apiserver/metrics.py) ----------------------------------

    async def pod_metrics(
        self,
        namespace: str | None = None,
        *,
        name: str = "",
        label_selector: str = "",
        all_namespaces: bool = False,
    ) -> Sequence[pb.PodMetrics]:
        """Current usage of the pods asked for; pods without a recent sample
        are absent (NotFoundError when `name` was given)."""
        ns = "" if all_namespaces else (namespace or self.namespace)
        resp = await self._unary(
            self._stub.PodMetrics,
            pb.PodMetricsRequest(namespace=ns, name=name, label_selector=label_selector),
        )
        return list(resp.items)

    async def node_metrics(
        self, name: str = "", *, label_selector: str = ""
    ) -> Sequence[pb.NodeMetrics]:
        resp = await self._unary(
            self._stub.NodeMetrics, pb.NodeMetricsRequest(name=name, label_selector=label_selector)
        )
        return list(resp.items)


def object_key(obj: Message) -> str:
    m = meta(obj)
    return f"{m.namespace}/{m.name}" if m.namespace else m.name
