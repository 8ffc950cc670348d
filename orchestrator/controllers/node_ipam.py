"""Give every Node a pod CIDR: a /24 of the cluster CIDR (10.244.0.0/16), as
Kubernetes' node IPAM controller (range allocator) does.

- Assignments already on Nodes are taken as they are: the informer's first
  list records them all before any worker decides anything, so a restarted
  controller never hands out a range that is in use.
- Ranges go round-robin from the last one given (not lowest-free), so a
  deleted node's range is not handed out at once while its routes and
  addresses may still linger.
- A deleted Node's range is freed, and Nodes still waiting get another look.
- When the range is used up, the Node gets a Warning Event `CIDRNotAvailable`
  and is retried later.

podCIDR can only be set once (the apiserver refuses to change it), so an
update that loses a race is re-read and re-decided, never forced.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from typing import Any

import grpc

from orchestrator.api.meta import now_rfc3339
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import (
    AlreadyExistsError,
    ApiError,
    Client,
    ConflictError,
    NotFoundError,
)
from orchestrator.controllers.base import Controller

log = logging.getLogger(__name__)

CLUSTER_CIDR = "10.244.0.0/16"
NODE_PREFIX_LEN = 24
EVENT_NAMESPACE = "default"  # where events about cluster-scoped objects go
COMPONENT = "node-ipam-controller"
RETRY_EXHAUSTED_AFTER = 30.0
UPDATE_ATTEMPTS = 5


class CIDRExhaustedError(Exception):
    pass


class CIDRAllocator:
    """Which /24 of the cluster CIDR belongs to which node: a table indexed by
    subnet number (a bitmap that remembers owners)."""

    def __init__(self, cluster_cidr: str = CLUSTER_CIDR, node_prefix_len: int = NODE_PREFIX_LEN):
        net = ipaddress.ip_network(cluster_cidr)
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"cluster CIDR {cluster_cidr} is not IPv4")
        if not net.prefixlen <= node_prefix_len <= 30:
            raise ValueError(
                f"node prefix /{node_prefix_len} does not fit in cluster CIDR {cluster_cidr}"
            )
        self.cluster = net
        self.node_prefix_len = node_prefix_len
        self.size = 1 << (node_prefix_len - net.prefixlen)
        self._step = 1 << (32 - node_prefix_len)
        self._owners: list[str | None] = [None] * self.size
        self._by_node: dict[str, int] = {}
        self._next = 0

    # -- index <-> CIDR --------------------------------------------------------------

    def _cidr(self, index: int) -> str:
        base = int(self.cluster.network_address) + index * self._step
        return f"{ipaddress.IPv4Address(base)}/{self.node_prefix_len}"

    def _index(self, cidr: str) -> int | None:
        """The subnet number of cidr, or None if it is not one of our /24s."""
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            return None
        if (
            not isinstance(net, ipaddress.IPv4Network)
            or net.prefixlen != self.node_prefix_len
            or not net.subnet_of(self.cluster)
        ):
            return None
        offset = int(net.network_address) - int(self.cluster.network_address)
        return offset // self._step

    # -- queries -----------------------------------------------------------------------

    def cidr_of(self, node: str) -> str | None:
        index = self._by_node.get(node)
        return None if index is None else self._cidr(index)

    def owner_of(self, cidr: str) -> str | None:
        index = self._index(cidr)
        return None if index is None else self._owners[index]

    @property
    def used(self) -> int:
        return len(self._by_node)

    # -- changes -----------------------------------------------------------------------

    def occupy(self, node: str, cidr: str) -> str | None:
        """Record that node has cidr (found on the Node). Returns the other node
        that already holds it, if any; None when recorded (or not ours to track)."""
        index = self._index(cidr)
        if index is None:
            return None  # outside the cluster CIDR: someone else's business
        owner = self._owners[index]
        if owner is not None and owner != node:
            return owner
        previous = self._by_node.get(node)
        if previous is not None and previous != index:
            self._owners[previous] = None  # the Node says otherwise: it wins
        self._owners[index] = node
        self._by_node[node] = index
        return None

    def allocate(self, node: str) -> str:
        """The node's range: the one it holds, or the next free one."""
        if node in self._by_node:
            return self._cidr(self._by_node[node])
        for offset in range(self.size):
            index = (self._next + offset) % self.size
            if self._owners[index] is None:
                self._owners[index] = node
                self._by_node[node] = index
                self._next = (index + 1) % self.size
                return self._cidr(index)
        raise CIDRExhaustedError(
            f"no /{self.node_prefix_len} left in cluster CIDR {self.cluster} "
            f"(all {self.size} are assigned)"
        )

    def release(self, node: str) -> str | None:
        index = self._by_node.pop(node, None)
        if index is None:
            return None
        self._owners[index] = None
        return self._cidr(index)


class NodeIPAMController(Controller):
    name = "node-ipam"
    workers = 1  # decisions about one shared range, one at a time

    def __init__(
        self,
        client: Client,
        *,
        cluster_cidr: str = CLUSTER_CIDR,
        node_prefix_len: int = NODE_PREFIX_LEN,
    ) -> None:
        super().__init__(client)
        self.allocator = CIDRAllocator(cluster_cidr, node_prefix_len)
        # node -> when CIDRNotAvailable was last recorded: every status update of
        # a waiting node re-queues it, and that must not mean an event each time.
        self._reported: dict[str, float] = {}

    def setup(self) -> None:
        self.nodes = self.informer("Node")
        self.nodes.add_handler(self._on_node)

    def _on_node(self, type_: str, node: Any, _old: Any) -> None:
        name = node.metadata.name
        if type_ == "DELETED":
            self._reported.pop(name, None)
            if self.allocator.release(name) is not None:
                # A range came free: nodes that waited (or clashed) get another look.
                for other in self.nodes.list():
                    if not other.spec.pod_cidr or self.allocator.cidr_of(
                        other.metadata.name
                    ) != str(other.spec.pod_cidr):
                        self.enqueue(other)
            return
        if node.spec.pod_cidr:
            # Recorded right here, not in a worker: the initial list records every
            # existing assignment before any worker may allocate.
            if self.allocator.occupy(name, node.spec.pod_cidr) is not None:
                self.enqueue(node)  # a clash: the worker reports it
            return
        self.enqueue(node)

    async def sync(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            return
        name = node.metadata.name
        if node.spec.pod_cidr:
            holder = self.allocator.occupy(name, node.spec.pod_cidr)
            if holder is None:
                self._reported.pop(name, None)
                return
            msg = f"podCIDR {node.spec.pod_cidr} is also assigned to node {holder}"
            log.error("node %s: %s", name, msg)
            await self._report_unavailable(node, msg)
            return
        try:
            cidr = self.allocator.allocate(name)
        except CIDRExhaustedError as exc:
            log.warning("node %s: %s", name, exc)
            await self._report_unavailable(node, f"Node {name} status is now: {exc}")
            self.queue.add_after(key, RETRY_EXHAUSTED_AFTER)
            return
        self._reported.pop(name, None)
        await self._assign(name, cidr)

    async def _report_unavailable(self, node: Any, message: str) -> None:
        name = node.metadata.name
        last = self._reported.get(name)
        if last is not None and time.monotonic() - last < RETRY_EXHAUSTED_AFTER:
            return
        self._reported[name] = time.monotonic()
        await self._event(node, "CIDRNotAvailable", message)

    async def _assign(self, name: str, cidr: str) -> None:
        for _ in range(UPDATE_ATTEMPTS):
            try:
                live = await self.client.get("Node", name)
            except NotFoundError:
                self.allocator.release(name)
                return
            if live.spec.pod_cidr:
                # Assigned meanwhile (our own earlier update, or someone else's).
                if str(live.spec.pod_cidr) != cidr:
                    self.allocator.release(name)
                    self.allocator.occupy(name, live.spec.pod_cidr)
                return
            live.spec.pod_cidr = cidr
            del live.spec.pod_cidrs[:]
            live.spec.pod_cidrs.append(cidr)
            try:
                await self.client.update(live)
            except ConflictError:
                continue  # the node changed under us (heartbeats, labels): re-read
            except NotFoundError:
                self.allocator.release(name)
                return
            log.info("node %s: assigned pod CIDR %s", name, cidr)
            return
        # Still contended: keep the reservation (allocate() returns it again) and
        # let the work queue retry with back-off.
        raise ConflictError(
            grpc.StatusCode.ABORTED, f"node {name} kept changing while assigning {cidr}"
        )

    async def _event(self, node: Any, reason: str, message: str) -> None:
        m = node.metadata
        name = f"{m.name}.{hashlib.sha256(f'{m.uid}/{reason}/{message}'.encode()).hexdigest()[:16]}"
        now = now_rfc3339()
        try:
            ev = core.Event(api_version="v1", kind="Event")
            ev.metadata.name = name
            ev.metadata.namespace = EVENT_NAMESPACE
            ref = ev.involved_object
            ref.kind, ref.api_version, ref.name, ref.uid = "Node", "v1", m.name, m.uid
            ev.reason, ev.message, ev.type = reason, message[:1024], "Warning"
            ev.source.component = COMPONENT
            ev.reporting_component = COMPONENT
            ev.first_timestamp = ev.last_timestamp = now
            ev.count = 1
            try:
                await self.client.create(ev)
            except AlreadyExistsError:
                existing = await self.client.get("Event", name, EVENT_NAMESPACE)
                existing.count = (existing.count or 1) + 1
                existing.last_timestamp = now
                await self.client.update(existing)
        except ApiError as exc:
            log.warning("event %s for node %s not written: %s", reason, m.name, exc.message)
