"""The control plane's node IPAM controller gives every Node its own /24."""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time

import pytest

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import Client, NotFoundError
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

CLUSTER = ipaddress.ip_network("10.244.0.0/16")


def new_node(name: str) -> core.Node:
    n = core.Node(api_version="v1", kind="Node")
    n.metadata.name = name
    return n


async def wait_for_cidr(client: Client, name: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = await client.get("Node", name)
        if node.spec.pod_cidr:
            assert list(node.spec.pod_cidrs) == [node.spec.pod_cidr]
            return str(node.spec.pod_cidr)
        await asyncio.sleep(0.1)
    raise AssertionError(f"node {name} got no pod CIDR within {timeout}s")


async def all_cidrs(client: Client) -> dict[str, str]:
    nodes = (await client.list("Node")).items
    return {n.metadata.name: n.spec.pod_cidr for n in nodes if n.spec.pod_cidr}


def check_range(cidr: str) -> None:
    net = ipaddress.ip_network(cidr)
    assert net.prefixlen == 24 and net.subnet_of(CLUSTER), cidr  # type: ignore[arg-type]


async def test_nodes_get_distinct_slash24s(control_plane: ControlPlane) -> None:
    names = [f"ipam-{secrets.token_hex(3)}" for _ in range(3)]
    async with control_plane.client() as c:
        try:
            for name in names:
                await c.create(new_node(name))
            got = {name: await wait_for_cidr(c, name) for name in names}
            for cidr in got.values():
                check_range(cidr)
            assert len(set(got.values())) == 3

            # No two nodes in the cluster share one (other tests' nodes included).
            everyone = await all_cidrs(c)
            assert len(set(everyone.values())) == len(everyone)

            # A node leaves and another joins: the newcomer gets a free range
            # (possibly the one just freed), never one still held.
            await c.delete("Node", names[0])
            newcomer = f"ipam-{secrets.token_hex(3)}"
            names.append(newcomer)
            await c.create(new_node(newcomer))
            cidr = await wait_for_cidr(c, newcomer)
            check_range(cidr)
            everyone = await all_cidrs(c)
            assert len(set(everyone.values())) == len(everyone)
            assert cidr not in (got[names[1]], got[names[2]])
        finally:
            for name in names:
                try:
                    await c.delete("Node", name)
                except NotFoundError:
                    pass


async def test_assignments_survive_a_control_plane_restart(
    fresh_control_plane: ControlPlane,
) -> None:
    cp = fresh_control_plane
    async with cp.client() as c:
        for name in ("a", "b"):
            await c.create(new_node(name))
        before = {name: await wait_for_cidr(c, name) for name in ("a", "b")}

    cp.stop()
    cp.start()

    async with cp.client() as c:
        await c.create(new_node("c"))
        third = await wait_for_cidr(c, "c")
        after = await all_cidrs(c)
    assert {k: after[k] for k in ("a", "b")} == before
    assert third not in before.values()
    check_range(third)
