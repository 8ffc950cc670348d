"""Pod logs and exec: the apiserver authorizes the caller, finds the pod's
node and relays the stream to and from that node's agent (DESIGN.md section 1).

    orchctl ──PodLogs/PodExec──► apiserver ──Logs/Exec (mTLS)──► agent on the pod's node

The apiserver dials the agent at the Node's InternalIP and
status.daemonEndpoints.kubeletEndpoint.Port (10250 when unset) with its
`apiserver-agent-client` certificate, and checks the agent's serving
certificate against the cluster CA: the agent names its node address in it.
Authorization is Kubernetes': `get` on pods/log, `create` on pods/exec.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from certs.bundle import ClusterPKI
from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import agent_pb2_grpc as apb_grpc
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.apiserver.authn import Authenticator
from orchestrator.apiserver.authz import Attributes, Authorizer
from orchestrator.apiserver.cache import WatchCache
from orchestrator.apiserver.errors import ApiError, BadRequest, Forbidden, NotFound
from orchestrator.apiserver.registry import UserInfo
from orchestrator.client.streams import ContainerChoiceError, choose_container

log = logging.getLogger(__name__)

DEFAULT_AGENT_PORT = 10250
# Address types tried in order, as kube-apiserver's --kubelet-preferred-address-types.
ADDRESS_TYPES = ("InternalIP", "ExternalIP", "Hostname")
# How long an exec caller has to send its `start` message.
START_TIMEOUT = 30.0
MAX_CHANNELS = 64
AGENT_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


class DialError(ApiError):
    """The agent could not be reached: kube-apiserver's 500 "error dialing backend"."""

    code = grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class Backend:
    """Where a pod's container is served: its node's agent."""

    node: str
    target: str  # host:port of the agent
    namespace: str
    pod: str
    pod_uid: str
    container: str


def agent_target(node: Any) -> str:
    """host:port of a Node's agent, from its status (addresses, daemon endpoint)."""
    by_type: dict[str, str] = {}
    for addr in node.status.addresses:
        by_type.setdefault(addr.type, addr.address)
    host = next((by_type[t] for t in ADDRESS_TYPES if by_type.get(t)), "")
    if not host:
        raise BadRequest(f'node "{node.metadata.name}" reports no address to reach its agent at')
    port = node.status.daemon_endpoints.kubelet_endpoint.port or DEFAULT_AGENT_PORT
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"{host}:{port}"


def check_logs_request(request: pb.PodLogsRequest) -> None:
    if not request.name:
        raise BadRequest("a pod name must be given")
    if request.HasField("tail_lines") and request.tail_lines < 0:
        raise BadRequest(f"tailLines must be 0 or more, got {request.tail_lines}")
    if request.HasField("since_seconds") and request.since_seconds <= 0:
        raise BadRequest(f"sinceSeconds must be more than 0, got {request.since_seconds}")


# Initial metadata every agent sends once it has accepted a call: a failure
# without it happened before the agent answered (dialing, TLS).
ANSWERED_KEY = "orch-agent"


async def _answered(call: Any) -> bool:
    try:
        md = await call.initial_metadata()
    except Exception:
        return False
    return any(key == ANSWERED_KEY for key, _ in (md or ()))


def _relay_error(
    code: grpc.StatusCode, details: str | None, backend: Backend, *, answered: bool
) -> ApiError:
    """The agent's status, passed on. The agent or its runtime being unreachable
    is a server error (kube-apiserver's 500), never UNAVAILABLE: to the caller
    that would mean the apiserver itself is down."""
    details = " ".join((details or code.name).split())
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        if not answered:
            return DialError(
                f'error dialing backend: the agent of node "{backend.node}" at '
                f"{backend.target}: {details}"
            )
        return DialError(f'the agent of node "{backend.node}": {details}')
    err = ApiError(details)
    err.code = code
    return err


class PodStreamProxy:
    def __init__(
        self,
        cache: WatchCache,
        authenticator: Authenticator,
        authorizer: Authorizer,
        pki: ClusterPKI | None,
        *,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self.cache = cache
        self.authn = authenticator
        self.authz = authorizer
        self.pki = pki
        self.max_channels = max_channels
        self._creds: grpc.ChannelCredentials | None = None
        self._channels: collections.OrderedDict[str, grpc.aio.Channel] = collections.OrderedDict()

    # -- plumbing --------------------------------------------------------------------

    def _credentials(self) -> grpc.ChannelCredentials:
        if self._creds is None:
            if self.pki is None:
                raise ApiError("this apiserver has no certificates for reaching node agents")
            try:
                client = self.pki.apiserver_agent_client()
                ca = self.pki.cluster_ca().cert_pem
            except (OSError, ValueError) as exc:
                raise ApiError(
                    "this apiserver cannot reach node agents: its agent-client certificate "
                    f"is unusable ({exc}); run `orchestrator init` again to complete the PKI"
                ) from None
            self._creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=client.key_pem, certificate_chain=client.cert_pem
            )
        return self._creds

    def stub(self, target: str) -> apb_grpc.AgentStub:
        channel = self._channels.get(target)
        if channel is None:
            channel = grpc.aio.secure_channel(
                target, self._credentials(), options=AGENT_CHANNEL_OPTIONS
            )
            self._channels[target] = channel
            while len(self._channels) > self.max_channels:
                _, old = self._channels.popitem(last=False)
                # Streams still open on it keep it until they end.
                asyncio.get_running_loop().create_task(old.close(grace=None))
        else:
            self._channels.move_to_end(target)
        return apb_grpc.AgentStub(channel)

    def _resolve(
        self,
        user: UserInfo,
        namespace: str,
        name: str,
        container: str,
        *,
        verb: str,
        subresource: str,
    ) -> Backend:
        pods = kind_info("Pod")
        ns = namespace or "default"
        if not name:
            raise BadRequest("a pod name must be given")
        # Authorize before looking: a refused caller learns nothing about the pod.
        attrs = Attributes(verb, pods, ns, name, subresource)
        decision = self.authz.authorize(user, attrs)
        if not decision.allowed:
            raise Forbidden(decision.reason or f'user "{user.name}" cannot {attrs.describe()}')
        cached = self.cache.get(pods, ns, name)
        if cached is None:
            raise NotFound(f'pods "{name}" not found')
        pod: Any = cached.decode()
        try:
            chosen = choose_container(pod, container)
        except ContainerChoiceError as exc:
            raise BadRequest(str(exc)) from None
        node_name = pod.spec.node_name
        if not node_name:
            raise BadRequest(f"pod {name} does not have a host assigned")
        node_cached = self.cache.get(kind_info("Node"), "", node_name)
        if node_cached is None:
            raise NotFound(f'nodes "{node_name}" not found')
        return Backend(
            node=node_name,
            target=agent_target(node_cached.decode()),
            namespace=ns,
            pod=name,
            pod_uid=pod.metadata.uid,
            container=chosen,
        )

    # -- logs --------------------------------------------------------------------------

    async def logs(
        self, request: pb.PodLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.LogChunk]:
        try:
            user = self.authn.authenticate(context)
            check_logs_request(request)
            backend = self._resolve(
                user,
                request.namespace,
                request.name,
                request.container,
                verb="get",
                subresource="log",
            )
            forward = apb.LogsRequest(
                namespace=backend.namespace,
                pod=backend.pod,
                pod_uid=backend.pod_uid,
                container=backend.container,
                follow=request.follow,
                timestamps=request.timestamps,
                previous=request.previous,
            )
            if request.HasField("tail_lines"):
                forward.tail_lines = request.tail_lines
            if request.HasField("since_seconds"):
                forward.since_seconds = request.since_seconds
            call = self.stub(backend.target).Logs(forward)
            received = False
            try:
                async for chunk in call:
                    received = True
                    yield chunk
            except grpc.aio.AioRpcError as exc:
                answered = received or await _answered(call)
                raise _relay_error(exc.code(), exc.details(), backend, answered=answered) from None
            finally:
                call.cancel()
        except ApiError as exc:
            await context.abort(exc.code, exc.message)

    # -- exec --------------------------------------------------------------------------

    async def exec(
        self, request_iterator: AsyncIterator[apb.ExecInput], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.ExecOutput]:
        try:
            user = self.authn.authenticate(context)
            try:
                first = await asyncio.wait_for(anext(request_iterator), START_TIMEOUT)
            except StopAsyncIteration:
                raise BadRequest("the exec stream ended before its start message") from None
            except TimeoutError:
                raise BadRequest(f"no start message within {START_TIMEOUT:.0f}s") from None
            if first.WhichOneof("input") != "start":
                raise BadRequest("the first message of an exec stream must be start")
            start = first.start
            if not start.command:
                raise BadRequest("you must specify at least one command for the container")
            backend = self._resolve(
                user, start.namespace, start.pod, start.container, verb="create", subresource="exec"
            )
            forward = apb.ExecStart()
            forward.CopyFrom(start)
            forward.namespace = backend.namespace
            forward.pod_uid = backend.pod_uid
            forward.container = backend.container
            call = self.stub(backend.target).Exec()
            pump: asyncio.Task[None] | None = None
            received = False
            try:
                await call.write(apb.ExecInput(start=forward))
                # Only after the start: the rest of the caller's input, as it comes.
                pump = asyncio.create_task(_pump(request_iterator, call))
                async for out in call:
                    received = True
                    yield out
            except grpc.aio.AioRpcError as exc:
                answered = received or await _answered(call)
                raise _relay_error(exc.code(), exc.details(), backend, answered=answered) from None
            except (grpc.aio.UsageError, asyncio.InvalidStateError):
                # write() on a call that already failed: its status says why.
                code, details = await call.code(), await call.details()
                answered = received or await _answered(call)
                raise _relay_error(code, details, backend, answered=answered) from None
            finally:
                if pump is not None:
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pump
                call.cancel()
        except ApiError as exc:
            await context.abort(exc.code, exc.message)

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close(grace=None)


async def _pump(inputs: AsyncIterator[apb.ExecInput], call: Any) -> None:
    """Caller to agent: stdin, resizes, close_stdin; then the end of input."""
    with contextlib.suppress(Exception):
        async for msg in inputs:
            await call.write(msg)
        await call.done_writing()
