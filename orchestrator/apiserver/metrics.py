"""The resource metrics API: metrics-server's job, done by the apiserver.

    orchctl top / HPA controller ──PodMetrics/NodeMetrics──► apiserver
        ──Stats (mTLS, as the logs proxy)──► agent of every node concerned

The apiserver picks the pods (or nodes) asked for from its watch cache, asks
the agents of their nodes for their Stats at once (at most `max_parallel`
calls in flight, each cut off after `timeout`), and keeps every agent's
answer for `ttl` seconds: the HPA controller and a few `orchctl top` users
then cost the agents one call per node per ttl, and concurrent requests for
the same node share one call. An agent that cannot be reached, or answers
with an error, only removes its own pods and node from the answer: a
metrics API that failed whole whenever one node is down would stop every
autoscaler in the cluster.

Authorization: `get`/`list` on the `metrics` subresource of pods or nodes
(admins and the controller-manager; see authz.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from orchestrator.api.kinds import kind_info
from orchestrator.api.pb import agent_pb2 as apb
from orchestrator.api.pb import apiservice_pb2 as pb
from orchestrator.api.selectors import parse_label_selector
from orchestrator.apiserver.authz import METRICS_SUBRESOURCE, Attributes, Authorizer
from orchestrator.apiserver.cache import Filter, WatchCache
from orchestrator.apiserver.errors import ApiError, BadRequest, Forbidden, NotFound
from orchestrator.apiserver.proxy import agent_target
from orchestrator.apiserver.registry import UserInfo

log = logging.getLogger(__name__)

DEFAULT_TTL = 10.0
DEFAULT_TIMEOUT = 5.0
MAX_PARALLEL = 16


# target (host:port) -> an Agent stub; the logs proxy's channel pool in production.
StubFactory = Callable[[str], Any]


@dataclass
class _Entry:
    fetched: float
    target: str
    stats: apb.StatsResponse | None  # None: the agent could not tell


class MetricsApi:
    def __init__(
        self,
        cache: WatchCache,
        authorizer: Authorizer,
        stub_for: StubFactory,
        *,
        ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        max_parallel: int = MAX_PARALLEL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.authz = authorizer
        self.stub_for = stub_for
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._parallel = asyncio.Semaphore(max_parallel)
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[apb.StatsResponse | None]] = {}

    # -- the two calls ---------------------------------------------------------------

    async def pod_metrics(
        self, user: UserInfo, request: pb.PodMetricsRequest
    ) -> pb.PodMetricsResponse:
        pods_info = kind_info("Pod")
        ns = request.namespace
        if request.name and not ns:
            ns = "default"
        self._authorize(user, "get" if request.name else "list", "Pod", ns, request.name)
        if request.name:
            cached = self.cache.get(pods_info, ns, request.name)
            pods: list[Any] = [cached.decode()] if cached is not None else []
        else:
            labels = (
                parse_label_selector(request.label_selector) if request.label_selector else None
            )
            pods = [
                o.decode() for o in self.cache.list(pods_info, Filter(namespace=ns, labels=labels))
            ]
        scheduled = [p for p in pods if p.spec.node_name]
        stats = await self._stats_of(p.spec.node_name for p in scheduled)
        by_uid: dict[tuple[str, str], apb.PodStats] = {}
        for node, answer in stats.items():
            if answer is None:
                continue
            for pod_stats in answer.pods:
                by_uid[(node, pod_stats.uid)] = pod_stats
        response = pb.PodMetricsResponse()
        for pod in sorted(scheduled, key=lambda p: (p.metadata.namespace, p.metadata.name)):
            found = by_uid.get((pod.spec.node_name, pod.metadata.uid))
            if found is None:
                continue
            response.items.add(
                namespace=pod.metadata.namespace,
                name=pod.metadata.name,
                uid=pod.metadata.uid,
                node=pod.spec.node_name,
                timestamp=found.timestamp,
                window_seconds=found.window_seconds,
                containers=list(found.containers),
            )
        if request.name and not response.items:
            raise NotFound(f'podmetrics.metrics.k8s.io "{ns}/{request.name}" not found')
        return response

    async def node_metrics(
        self, user: UserInfo, request: pb.NodeMetricsRequest
    ) -> pb.NodeMetricsResponse:
        nodes_info = kind_info("Node")
        self._authorize(user, "get" if request.name else "list", "Node", "", request.name)
        if request.name:
            cached = self.cache.get(nodes_info, "", request.name)
            names = [request.name] if cached is not None else []
        else:
            labels = (
                parse_label_selector(request.label_selector) if request.label_selector else None
            )
            names = [o.name for o in self.cache.list(nodes_info, Filter(labels=labels))]
        stats = await self._stats_of(names)
        response = pb.NodeMetricsResponse()
        for name in sorted(names):
            answer = stats.get(name)
            if answer is None or not answer.HasField("node"):
                continue
            node = answer.node
            response.items.add(
                name=name,
                timestamp=node.timestamp,
                window_seconds=node.window_seconds,
                cpu_millicores=node.cpu_millicores,
                memory_working_set_bytes=node.memory_working_set_bytes,
            )
        if request.name and not response.items:
            raise NotFound(f'nodemetrics.metrics.k8s.io "{request.name}" not found')
        return response

    # -- plumbing --------------------------------------------------------------------

    def _authorize(self, user: UserInfo, verb: str, kind: str, ns: str, name: str) -> None:
        attrs = Attributes(verb, kind_info(kind), ns, name, METRICS_SUBRESOURCE)
        decision = self.authz.authorize(user, attrs)
        if not decision.allowed:
            raise Forbidden(decision.reason or f'user "{user.name}" cannot {attrs.describe()}')

    async def _stats_of(self, nodes: Iterable[str]) -> dict[str, apb.StatsResponse | None]:
        wanted = sorted(set(nodes))
        answers = await asyncio.gather(*(self._node_stats(n) for n in wanted))
        self._forget_old()
        return dict(zip(wanted, answers, strict=True))

    async def _node_stats(self, node: str) -> apb.StatsResponse | None:
        cached_node = self.cache.get(kind_info("Node"), "", node)
        if cached_node is None:
            return None
        try:
            target = agent_target(cached_node.decode())
        except BadRequest:
            return None  # no address reported yet
        entry = self._entries.get(node)
        if entry is not None and entry.target == target and self.clock() - entry.fetched < self.ttl:
            return entry.stats
        task = self._inflight.get(node)
        if task is None:
            task = asyncio.ensure_future(self._fetch(node, target))
            self._inflight[node] = task
            task.add_done_callback(functools.partial(self._done, node))
        # Shielded: one caller giving up must not cancel the call the others await.
        return await asyncio.shield(task)

    def _done(self, node: str, _task: object) -> None:
        self._inflight.pop(node, None)

    async def _fetch(self, node: str, target: str) -> apb.StatsResponse | None:
        stats: apb.StatsResponse | None = None
        try:
            async with self._parallel:
                stats = await self.stub_for(target).Stats(apb.StatsRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            log.info(
                'metrics: the agent of node "%s" at %s: %s',
                node,
                target,
                " ".join((exc.details() or exc.code().name).split()),
            )
        except ApiError as exc:  # e.g. no agent-client certificate
            log.warning("metrics: node %s: %s", node, exc.message)
        except Exception:
            # Whatever went wrong with one node, the others' metrics still count.
            log.exception("metrics: asking the agent of node %s failed", node)
        self._entries[node] = _Entry(self.clock(), target, stats)
        return stats

    def _forget_old(self) -> None:
        """Entries of nodes nobody asked about for a while (deleted nodes) go."""
        horizon = self.clock() - 10 * self.ttl
        for node in [n for n, e in self._entries.items() if e.fetched < horizon]:
            del self._entries[node]
