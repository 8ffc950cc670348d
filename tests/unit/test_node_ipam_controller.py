"""The node IPAM controller: /24 allocation from the cluster CIDR, and its
decisions against a fake API."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import AlreadyExistsError, ConflictError, NotFoundError
from orchestrator.controllers.node_ipam import (
    CIDRAllocator,
    CIDRExhaustedError,
    NodeIPAMController,
)

pytestmark = pytest.mark.unit


# -- allocator ------------------------------------------------------------------------


def test_allocates_distinct_slash24s_in_order() -> None:
    alloc = CIDRAllocator("10.244.0.0/16", 24)
    assert alloc.size == 256
    assert alloc.allocate("a") == "10.244.0.0/24"
    assert alloc.allocate("b") == "10.244.1.0/24"
    assert alloc.allocate("a") == "10.244.0.0/24"  # idempotent per node
    assert alloc.cidr_of("b") == "10.244.1.0/24"
    assert alloc.owner_of("10.244.1.0/24") == "b"
    assert alloc.used == 2


def test_every_subnet_once_then_exhausted() -> None:
    alloc = CIDRAllocator("10.244.0.0/16", 24)
    got = {alloc.allocate(f"n{i}") for i in range(256)}
    assert len(got) == 256
    assert "10.244.255.0/24" in got
    with pytest.raises(CIDRExhaustedError, match=r"10\.244\.0\.0/16"):
        alloc.allocate("one-too-many")
    assert alloc.release("n17") == "10.244.17.0/24"
    assert alloc.allocate("one-too-many") == "10.244.17.0/24"


def test_release_then_round_robin() -> None:
    alloc = CIDRAllocator("10.244.0.0/22", 24)  # 4 subnets
    for n in "abc":
        alloc.allocate(n)
    assert alloc.release("a") == "10.244.0.0/24"
    assert alloc.release("a") is None
    assert alloc.allocate("d") == "10.244.3.0/24"  # not the one just freed
    assert alloc.allocate("e") == "10.244.0.0/24"  # then wraps round to it


def test_restart_recovery_from_existing_assignments() -> None:
    """A fresh allocator told what Nodes already hold never hands those out."""
    alloc = CIDRAllocator("10.244.0.0/16", 24)
    assert alloc.occupy("a", "10.244.0.0/24") is None
    assert alloc.occupy("b", "10.244.2.0/24") is None
    assert alloc.occupy("a", "10.244.0.0/24") is None  # repeated: fine
    assert alloc.allocate("c") == "10.244.1.0/24"
    assert alloc.allocate("d") == "10.244.3.0/24"


def test_occupy_reports_clashes_and_ignores_foreign_ranges() -> None:
    alloc = CIDRAllocator("10.244.0.0/16", 24)
    alloc.occupy("a", "10.244.5.0/24")
    assert alloc.occupy("b", "10.244.5.0/24") == "a"
    assert alloc.cidr_of("b") is None
    assert alloc.occupy("x", "192.168.0.0/24") is None  # not ours
    assert alloc.occupy("y", "10.244.6.0/25") is None  # not a /24
    assert alloc.occupy("z", "garbage") is None
    assert alloc.used == 1


def test_occupy_follows_what_the_node_says() -> None:
    alloc = CIDRAllocator("10.244.0.0/16", 24)
    assert alloc.allocate("a") == "10.244.0.0/24"
    alloc.occupy("a", "10.244.9.0/24")
    assert alloc.cidr_of("a") == "10.244.9.0/24"
    assert alloc.owner_of("10.244.0.0/24") is None


def test_other_sizes() -> None:
    alloc = CIDRAllocator("10.100.0.0/20", 26)
    assert alloc.size == 64
    assert alloc.allocate("a") == "10.100.0.0/26"
    assert alloc.allocate("b") == "10.100.0.64/26"
    with pytest.raises(ValueError):
        CIDRAllocator("10.244.0.0/16", 8)
    with pytest.raises(ValueError):
        CIDRAllocator("fd00::/48", 64)


# -- controller against a fake API ---------------------------------------------------


def node(name: str, cidr: str = "", uid: str = "") -> Any:
    n = core.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    n.metadata.uid = uid or f"uid-{name}"
    n.metadata.resource_version = "1"
    if cidr:
        n.spec.pod_cidr = cidr
        n.spec.pod_cidrs.append(cidr)
    return n


class FakeInformer:
    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.items.get(key)

    def list(self) -> list[Any]:
        return list(self.items.values())


class FakeClient:
    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}
        self.events: dict[str, Any] = {}
        self.conflicts = 0  # fail this many updates with a conflict
        self.updates: list[tuple[str, str]] = []

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        store = self.nodes if kind == "Node" else self.events
        if name not in store:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, name)
        copy = type(store[name])()
        copy.CopyFrom(store[name])
        return copy

    async def update(self, obj: Any) -> Any:
        if obj.kind == "Event":
            self.events[obj.metadata.name] = obj
            return obj
        if obj.metadata.name not in self.nodes:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, obj.metadata.name)
        if self.conflicts:
            self.conflicts -= 1
            raise ConflictError(grpc.StatusCode.ABORTED, "stale")
        self.nodes[obj.metadata.name] = obj
        self.updates.append((obj.metadata.name, obj.spec.pod_cidr))
        return obj

    async def create(self, obj: Any) -> Any:
        if obj.metadata.name in self.events:
            raise AlreadyExistsError(grpc.StatusCode.ALREADY_EXISTS, obj.metadata.name)
        self.events[obj.metadata.name] = obj
        return obj


class Harness:
    def __init__(self, cluster_cidr: str = "10.244.0.0/16") -> None:
        self.client = FakeClient()
        self.ctrl = NodeIPAMController(self.client, cluster_cidr=cluster_cidr)  # type: ignore[arg-type]
        self.ctrl.nodes = FakeInformer()  # type: ignore[assignment]
        self.queued: list[str] = []
        self.delayed: list[str] = []
        self.ctrl.queue.add = self._add  # type: ignore[method-assign]
        self.ctrl.queue.add_after = self._add_after  # type: ignore[method-assign]

    def _add_after(self, key: str, delay: float) -> None:
        self.delayed.append(key)

    def _add(self, key: str) -> None:
        if key not in self.queued:  # a work queue holds a key once
            self.queued.append(key)

    def add(self, n: Any) -> None:
        """A Node arrives through the informer (and exists in the API)."""
        self.client.nodes[n.metadata.name] = n
        self.ctrl.nodes.items[n.metadata.name] = n  # type: ignore[attr-defined]
        self.ctrl._on_node("ADDED", n, None)

    def delete(self, name: str) -> None:
        n = self.client.nodes.pop(name)
        self.ctrl.nodes.items.pop(name)  # type: ignore[attr-defined]
        self.ctrl._on_node("DELETED", n, None)

    async def drain(self) -> None:
        while self.queued:
            key = self.queued.pop(0)
            await self.ctrl.sync(key)
            # What the watch would deliver next, if the node changed.
            live = self.client.nodes.get(key)
            if live is not None and live is not self.ctrl.nodes.items.get(key):  # type: ignore[attr-defined]
                self.ctrl.nodes.items[key] = live  # type: ignore[attr-defined]
                self.ctrl._on_node("MODIFIED", live, None)


async def test_assigns_each_node_a_distinct_range() -> None:
    h = Harness()
    for name in ("n1", "n2", "n3"):
        h.add(node(name))
    await h.drain()
    cidrs = {n: h.client.nodes[n].spec.pod_cidr for n in ("n1", "n2", "n3")}
    assert sorted(cidrs.values()) == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    for n in cidrs:
        assert list(h.client.nodes[n].spec.pod_cidrs) == [cidrs[n]]


async def test_restart_keeps_existing_assignments() -> None:
    h = Harness()
    # The initial list: some nodes already hold ranges, one waits.
    h.add(node("old-a", "10.244.0.0/24"))
    h.add(node("new"))
    h.add(node("old-b", "10.244.1.0/24"))
    await h.drain()
    assert h.client.nodes["new"].spec.pod_cidr == "10.244.2.0/24"
    assert h.client.updates == [("new", "10.244.2.0/24")]


async def test_deletion_frees_the_range_and_wakes_waiting_nodes() -> None:
    h = Harness("10.244.0.0/23")  # room for two nodes
    h.add(node("a"))
    h.add(node("b"))
    await h.drain()
    h.add(node("c"))
    await h.drain()
    assert not h.client.nodes["c"].spec.pod_cidr
    assert h.delayed == ["c"]  # tried again later
    (event,) = h.client.events.values()
    assert event.reason == "CIDRNotAvailable" and event.type == "Warning"
    assert event.involved_object.kind == "Node" and event.involved_object.name == "c"
    assert event.metadata.namespace == "default"

    freed = h.client.nodes["a"].spec.pod_cidr
    h.delete("a")
    assert "c" in h.queued
    await h.drain()
    assert h.client.nodes["c"].spec.pod_cidr == freed


async def test_conflicts_are_retried_on_a_fresh_read() -> None:
    h = Harness()
    h.add(node("a"))
    h.client.conflicts = 2
    await h.drain()
    assert h.client.nodes["a"].spec.pod_cidr == "10.244.0.0/24"


async def test_persistent_conflicts_keep_the_reservation() -> None:
    h = Harness()
    h.add(node("a"))
    h.client.conflicts = 100
    with pytest.raises(ConflictError):
        await h.ctrl.sync("a")
    h.client.conflicts = 0
    h.add(node("b"))
    await h.ctrl.sync("a")
    await h.ctrl.sync("b")
    assert h.client.nodes["a"].spec.pod_cidr == "10.244.0.0/24"
    assert h.client.nodes["b"].spec.pod_cidr == "10.244.1.0/24"


async def test_a_node_assigned_meanwhile_is_taken_as_it_is() -> None:
    h = Harness()
    h.add(node("a"))
    # Someone set a range directly before our update landed; the cache lags.
    h.client.nodes["a"] = node("a", "10.244.7.0/24")
    await h.ctrl.sync("a")
    assert h.client.updates == []
    assert h.ctrl.allocator.cidr_of("a") == "10.244.7.0/24"
    assert h.ctrl.allocator.owner_of("10.244.0.0/24") is None


async def test_node_gone_before_update_releases() -> None:
    h = Harness()
    h.add(node("a"))
    del h.client.nodes["a"]
    await h.ctrl.sync("a")
    assert h.ctrl.allocator.used == 0


async def test_clash_is_reported_once_per_interval() -> None:
    h = Harness()
    h.add(node("a", "10.244.3.0/24"))
    h.add(node("b", "10.244.3.0/24"))
    assert h.queued == ["b"]
    await h.ctrl.sync("b")
    await h.ctrl.sync("b")
    (event,) = h.client.events.values()
    assert event.reason == "CIDRNotAvailable" and "also assigned to node a" in event.message
    assert event.count == 1
    # The first holder goes: the clashing node now owns its range.
    h.delete("a")
    await h.drain()
    assert h.ctrl.allocator.owner_of("10.244.3.0/24") == "b"
