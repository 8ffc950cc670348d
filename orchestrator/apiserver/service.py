"""The gRPC servicer of the generic API: authenticate, authorize, dispatch."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError as ProtoDecodeError
from google.protobuf.message import Message

from certs.bundle import ClusterPKI
from orchestrator import __version__
from orchestrator.api import codec
from orchestrator.api.codec import DecodeError
from orchestrator.api.kinds import KindInfo, UnknownKindError, kind_info
from orchestrator.api.meta import meta
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.api.pb import apiservice_pb2_grpc as pb_grpc
from orchestrator.api.selectors import SelectorError, parse_field_selector, parse_label_selector
from orchestrator.apiserver.authn import Authenticator
from orchestrator.apiserver.authz import Attributes, Authorizer
from orchestrator.apiserver.cache import Filter
from orchestrator.apiserver.errors import ApiError, BadRequest, Forbidden, Invalid
from orchestrator.apiserver.metrics import MetricsApi
from orchestrator.apiserver.pipeline import Handler, PipelineSession
from orchestrator.apiserver.proxy import PodStreamProxy
from orchestrator.apiserver.registry import Registry, UserInfo

log = logging.getLogger(__name__)
T = TypeVar("T")


def _kind(name: str) -> KindInfo:
    try:
        return kind_info(name)
    except UnknownKindError as exc:
        raise BadRequest(str(exc)) from None


def _decode(obj: pb.Object) -> tuple[KindInfo, Message]:
    info = _kind(obj.kind)
    msg = info.message()
    try:
        msg.ParseFromString(obj.raw)
    except ProtoDecodeError:
        raise BadRequest(f"the {obj.kind} sent could not be decoded") from None
    msg.kind = info.kind  # type: ignore[attr-defined]
    msg.api_version = info.api_version  # type: ignore[attr-defined]
    return info, msg


def _parse_continue(token: str) -> tuple[str, str]:
    try:
        value = json.loads(token)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) for v in value):
        raise BadRequest("the continue token is not valid: pass the one the last list returned")
    return value[0], value[1]


def _wrap(msg: Message) -> pb.Object:
    return pb.Object(kind=msg.kind, raw=msg.SerializeToString())  # type: ignore[attr-defined]


class ApiService(pb_grpc.ApiServicer):
    def __init__(
        self,
        registry: Registry,
        authenticator: Authenticator,
        authorizer: Authorizer,
        *,
        store_name: str,
        bookmark_interval: float = 30.0,
        pki: ClusterPKI | None = None,
    ) -> None:
        self.registry = registry
        self.cache = registry.cache
        self.authn = authenticator
        self.authz = authorizer
        self.store_name = store_name
        self.bookmark_interval = bookmark_interval
        self.proxy = PodStreamProxy(self.cache, authenticator, authorizer, pki)
        # Metrics reach the agents through the proxy's mTLS channels.
        self.metrics = MetricsApi(self.cache, authorizer, self.proxy.stub)
        self.pipelined: dict[str, Handler] = {
            "create": self._create,
            "get": self._get,
            "update": self._update,
            "bind": self._bind,
            "delete": self._delete,
        }

    # -- plumbing --------------------------------------------------------------------

    async def _call(
        self, context: grpc.aio.ServicerContext, fn: Callable[[UserInfo], Awaitable[T]]
    ) -> T:
        try:
            user = self.authn.authenticate(context)
            return await fn(user)
        except ApiError as exc:
            await context.abort(exc.code, exc.message)
        except (SelectorError, DecodeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the store did not answer in time")
        raise AssertionError("unreachable")

    def _authorize(self, user: UserInfo, attrs: Attributes) -> None:
        decision = self.authz.authorize(user, attrs)
        if not decision.allowed:
            raise Forbidden(decision.reason or f'user "{user.name}" cannot {attrs.describe()}')

    def _filter(self, info: KindInfo, namespace: str, labels: str, fields: str) -> Filter:
        return Filter(
            namespace=namespace if info.namespaced else "",
            labels=parse_label_selector(labels) if labels else None,
            fields=parse_field_selector(fields, info.fields) if fields else None,
        )

    # -- the API -------------------------------------------------------------------------

    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.Object:
        return await self._call(context, lambda user: self._create(user, request))

    async def _create(self, user: UserInfo, request: pb.CreateRequest) -> pb.Object:
        info, obj = _decode(request.object)
        m = meta(obj)
        ns = (m.namespace or "default") if info.namespaced else ""
        self._authorize(user, Attributes("create", info, ns, m.name, obj=obj))
        return _wrap(await self.registry.create(obj, user, dry_run=request.dry_run))

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.Object:
        return await self._call(context, lambda user: self._get(user, request))

    async def _get(self, user: UserInfo, request: pb.GetRequest) -> pb.Object:
        info = _kind(request.kind)
        ns = request.namespace if info.namespaced else ""
        if info.namespaced and not ns:
            ns = "default"
        self._authorize(user, Attributes("get", info, ns, request.name))
        cached = await self.registry.get(info, ns, request.name)
        return pb.Object(kind=info.kind, raw=cached.raw)

    async def List(self, request: pb.ListRequest, context: Any) -> pb.ListResponse:
        async def run(user: UserInfo) -> pb.ListResponse:
            info = _kind(request.kind)
            flt = self._filter(
                info, request.namespace, request.label_selector, request.field_selector
            )
            self._authorize(
                user, Attributes("list", info, flt.namespace, field_selector=flt.fields)
            )
            await self.registry.consistent()
            revision = self.cache.revision
            items = self.cache.list(info, flt)
            token = ""
            if request.continue_token:
                after = _parse_continue(request.continue_token)
                items = [o for o in items if (o.namespace, o.name) > after]
            if request.limit > 0 and len(items) > request.limit:
                items = items[: request.limit]
                token = json.dumps([items[-1].namespace, items[-1].name])
            return pb.ListResponse(
                kind=info.kind,
                items=[o.raw for o in items],
                resource_version=str(revision),
                continue_token=token,
            )

        return await self._call(context, run)

    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.Object:
        return await self._call(context, lambda user: self._update(user, request))

    async def _update(self, user: UserInfo, request: pb.UpdateRequest) -> pb.Object:
        info, obj = _decode(request.object)
        m = meta(obj)
        ns = (m.namespace or "default") if info.namespaced else ""
        sub = "status" if request.status else ""
        self._authorize(user, Attributes("update", info, ns, m.name, sub, obj=obj))
        return _wrap(
            await self.registry.update(obj, user, status=request.status, dry_run=request.dry_run)
        )

    async def Bind(self, request: pb.BindRequest, context: Any) -> pb.Object:
        return await self._call(context, lambda user: self._bind(user, request))

    async def _bind(self, user: UserInfo, request: pb.BindRequest) -> pb.Object:
        info = _kind("Pod")
        ns = request.namespace or "default"
        self._authorize(user, Attributes("create", info, ns, request.name, "binding"))
        return _wrap(await self.registry.bind(ns, request.name, request.node, uid=request.uid))

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        return await self._call(context, lambda user: self._delete(user, request))

    async def _delete(self, user: UserInfo, request: pb.DeleteRequest) -> pb.DeleteResponse:
        info = _kind(request.kind)
        ns = (request.namespace or "default") if info.namespaced else ""
        self._authorize(user, Attributes("delete", info, ns, request.name))
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
        obj, gone = await self.registry.delete(
            info,
            ns,
            request.name,
            grace_period=grace,
            propagation=request.propagation_policy,
            precondition_uid=request.precondition_uid,
            precondition_rv=request.precondition_resource_version,
            dry_run=request.dry_run,
        )
        return pb.DeleteResponse(object=_wrap(obj), deleted=gone)

    async def Pipeline(
        self, requests: AsyncIterator[pb.PipelineRequest], context: Any
    ) -> AsyncIterator[pb.PipelineResponse]:
        try:
            user = self.authn.authenticate(context)
        except ApiError as exc:
            await context.abort(exc.code, exc.message)
        async for response in PipelineSession(self.pipelined, user).run(requests):
            yield response

    async def Apply(self, request: pb.ApplyRequest, context: Any) -> pb.ApplyResponse:
        async def run(user: UserInfo) -> pb.ApplyResponse:
            try:
                manifest = json.loads(request.manifest_json)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"the manifest is not valid JSON: {exc}") from None
            info = codec.manifest_kind(manifest)
            md = codec.meta_of(manifest)
            ns = (
                md.get("namespace") or request.default_namespace or "default"
                if info.namespaced
                else ""
            )
            self._authorize(user, Attributes("create", info, ns, str(md.get("name", ""))))
            self._authorize(user, Attributes("update", info, ns, str(md.get("name", ""))))
            obj, outcome = await self.registry.apply(
                manifest, user, default_namespace=request.default_namespace, dry_run=request.dry_run
            )
            return pb.ApplyResponse(object=_wrap(obj), outcome=outcome)

        return await self._call(context, run)

    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        async def run(user: UserInfo) -> pb.VersionResponse:
            return pb.VersionResponse(
                version=__version__, store=self.store_name, user=user.name, groups=list(user.groups)
            )

        return await self._call(context, run)

    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.WatchEvents]:
        try:
            user = self.authn.authenticate(context)
            info = _kind(request.kind)
            flt = self._filter(
                info, request.namespace, request.label_selector, request.field_selector
            )
            self._authorize(
                user, Attributes("watch", info, flt.namespace, field_selector=flt.fields)
            )
            rv = request.resource_version
            if rv in ("", "0"):
                from_revision = None
            else:
                try:
                    from_revision = int(rv)
                except ValueError:
                    raise Invalid(
                        "watch",
                        [codec.FieldError("resourceVersion", f'"{rv}" is not a resource version')],
                    ) from None
            batches = self.cache.watch(info, flt, from_revision)
            try:
                async for batch in batches:
                    out = pb.WatchEvents()
                    closed = False
                    for item in batch:
                        if item is None:
                            closed = True  # by the server: the client re-watches or relists
                        elif isinstance(item, int):
                            if request.allow_bookmarks:
                                out.events.add(
                                    type="BOOKMARK", kind=info.kind, resource_version=str(item)
                                )
                        else:
                            type_, obj = item
                            out.events.add(
                                type=type_,
                                kind=info.kind,
                                raw=obj.raw,
                                resource_version=str(obj.revision),
                            )
                    if out.events:
                        yield out
                    if closed:
                        return
            finally:
                await batches.aclose()  # type: ignore[attr-defined]
        except ApiError as exc:
            await context.abort(exc.code, exc.message)
        except (SelectorError, DecodeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def PodLogs(self, request: pb.PodLogsRequest, context: Any) -> AsyncIterator[Any]:
        async for chunk in self.proxy.logs(request, context):
            yield chunk

    async def PodExec(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        async for out in self.proxy.exec(request_iterator, context):
            yield out

    async def PodMetrics(
        self, request: pb.PodMetricsRequest, context: Any
    ) -> pb.PodMetricsResponse:
        return await self._call(context, lambda user: self.metrics.pod_metrics(user, request))

    async def NodeMetrics(
        self, request: pb.NodeMetricsRequest, context: Any
    ) -> pb.NodeMetricsResponse:
        return await self._call(context, lambda user: self.metrics.node_metrics(user, request))

    async def run_bookmarks(self) -> None:
        """One ticker for every watch: each watcher that asked for bookmarks
        gets the current revision, so it can resume without replaying."""
        while True:
            await asyncio.sleep(self.bookmark_interval)
            self.cache.bookmark_all()
