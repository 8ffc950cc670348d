"""ClusterIPs and NodePorts: handed out once, honoured when chosen, freed on delete.

The first part drives a real control plane through the API, as users do; the
second runs the allocator in-process on a real SQLite store to look at the
claims themselves (what is left after a failure, what repair does)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api import codec
from orchestrator.apiserver.allocators import (
    IP_PREFIX,
    PORT_PREFIX,
    AllocationError,
    ServiceAllocator,
)
from orchestrator.apiserver.cache import WatchCache
from orchestrator.apiserver.errors import Invalid
from orchestrator.apiserver.registry import Registry, UserInfo
from orchestrator.client.client import Client, InvalidError, NotFoundError
from orchestrator.store.sqlite import SqliteStore
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

SERVICE_NET = ipaddress.ip_network("10.96.0.0/12")


def service(name: str, ns: str, **spec: Any) -> Any:
    spec.setdefault("ports", [{"port": 80, "targetPort": 8080}])
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, **spec},
        }
    )


def namespace(name: str) -> Any:
    return codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


@pytest.fixture
async def api(control_plane: ControlPlane) -> AsyncIterator[tuple[Client, str]]:
    ns = f"alloc-{secrets.token_hex(3)}"
    async with control_plane.client() as c:
        await c.create(namespace(ns))
        try:
            yield c, ns
        finally:
            await c.delete("Namespace", ns)


async def eventually(check: Any, timeout: float = 5.0) -> Any:
    """Retry an async check until it stops raising (claims are freed from the
    watch stream, a moment after the delete returns)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, InvalidError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


# -- through the API ------------------------------------------------------------------------


async def test_cluster_ips_are_distinct_and_in_range(api: tuple[Client, str]) -> None:
    c, ns = api
    created = await asyncio.gather(*(c.create(service(f"s{i}", ns)) for i in range(30)))
    ips = [s.spec.cluster_ip for s in created]
    assert len(set(ips)) == 30
    for s in created:
        assert ipaddress.ip_address(s.spec.cluster_ip) in SERVICE_NET
        assert list(s.spec.cluster_ips) == [s.spec.cluster_ip]
    got = await c.get("Service", "s0", ns)
    assert got.spec.cluster_ip == ips[0]


async def test_chosen_ip_is_honoured_once_and_freed_on_delete(api: tuple[Client, str]) -> None:
    c, ns = api
    ip = f"10.96.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 2}"
    first = await c.create(service("first", ns, clusterIP=ip))
    assert first.spec.cluster_ip == ip
    with pytest.raises(InvalidError) as err:
        await c.create(service("second", ns, clusterIP=ip))
    assert f'spec.clusterIP: Invalid value: "{ip}": provided IP is already allocated' in str(
        err.value
    )
    await c.delete("Service", "first", ns)
    again = await eventually(lambda: c.create(service("second", ns, clusterIP=ip)))
    assert again.spec.cluster_ip == ip


async def test_ip_outside_the_range_is_refused(api: tuple[Client, str]) -> None:
    c, ns = api
    with pytest.raises(InvalidError) as err:
        await c.create(service("outside", ns, clusterIP="192.168.7.7"))
    assert "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12" in str(
        err.value
    )
    with pytest.raises(NotFoundError):  # nothing was written
        await c.get("Service", "outside", ns)


async def test_headless_and_external_name_get_no_address(api: tuple[Client, str]) -> None:
    c, ns = api
    headless = await c.create(service("headless", ns, clusterIP="None"))
    assert headless.spec.cluster_ip == "None"
    alias = await c.create(
        service("alias", ns, type="ExternalName", externalName="db.example.test", ports=[])
    )
    assert alias.spec.cluster_ip == ""


async def test_node_ports_allocated_and_conflicts_refused(api: tuple[Client, str]) -> None:
    c, ns = api
    two_ports = [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "https", "port": 443, "targetPort": 8443},
    ]
    web = await c.create(service("web", ns, type="NodePort", ports=two_ports))
    ports = [p.node_port for p in web.spec.ports]
    assert all(30000 <= p <= 32767 for p in ports) and len(set(ports)) == 2

    with pytest.raises(InvalidError) as err:
        await c.create(
            service(
                "clash",
                ns,
                type="NodePort",
                ports=[{"port": 80, "targetPort": 80, "nodePort": ports[0]}],
            )
        )
    assert f"spec.ports[0].nodePort: Invalid value: {ports[0]}: provided port is already" in str(
        err.value
    )

    # Back to ClusterIP: the node ports go, and someone else may take them.
    web.spec.type = "ClusterIP"
    for p in web.spec.ports:
        p.node_port = 0
    await c.update(web)
    taken = await eventually(
        lambda: c.create(
            service(
                "clash",
                ns,
                type="NodePort",
                ports=[{"port": 80, "targetPort": 80, "nodePort": ports[0]}],
            )
        )
    )
    assert taken.spec.ports[0].node_port == ports[0]


async def test_updates_keep_the_address_and_ports(api: tuple[Client, str]) -> None:
    c, ns = api
    svc = await c.create(service("keep", ns, type="NodePort"))
    ip, port = svc.spec.cluster_ip, svc.spec.ports[0].node_port
    svc.metadata.labels["tier"] = "web"
    updated = await c.update(svc)
    assert updated.spec.cluster_ip == ip and updated.spec.ports[0].node_port == port
    # Turning ClusterIP into NodePort adds a node port and keeps the address.
    plain = await c.create(service("plain", ns))
    plain.spec.type = "NodePort"
    grown = await c.update(plain)
    assert grown.spec.cluster_ip == plain.spec.cluster_ip
    assert 30000 <= grown.spec.ports[0].node_port <= 32767


# -- the claims themselves -----------------------------------------------------------------


ADMIN = UserInfo("test-admin", ("system:masters",))


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[Registry, ServiceAllocator, Any]]:
    store = await SqliteStore.open(tmp_path / "state.db")
    cache = WatchCache(store)
    await cache.start()
    allocator = ServiceAllocator(
        store, cache, service_cidr="10.99.0.0/29", node_port_range=(30000, 30001)
    )
    await allocator.start()
    registry = Registry(store, cache, allocator)
    await registry.create(namespace("default"), ADMIN)
    try:
        yield registry, allocator, store
    finally:
        await allocator.stop()
        await cache.stop()
        await store.close()


async def claims(store: Any) -> dict[str, str]:
    out = {}
    for prefix in (IP_PREFIX, PORT_PREFIX):
        for kv in (await store.range(prefix)).kvs:
            out[kv.key] = kv.value.decode()
    return out


async def test_a_failed_create_leaves_no_claims(
    local: tuple[Registry, ServiceAllocator, Any],
) -> None:
    registry, _, store = local
    await registry.create(
        service("a", "default", type="NodePort", ports=[{"port": 80, "nodePort": 30000}]),
        ADMIN,
    )
    before = await claims(store)
    # Port 0 would get 30001, port 1 asks for 30000 (taken): nothing may stay claimed.
    two = [{"name": "x", "port": 81}, {"name": "y", "port": 82, "nodePort": 30000}]
    with pytest.raises(Invalid, match="provided port is already allocated"):
        await registry.create(service("b", "default", type="NodePort", ports=two), ADMIN)
    assert await claims(store) == before


async def test_a_small_range_runs_out_clearly(
    local: tuple[Registry, ServiceAllocator, Any],
) -> None:
    registry, _, store = local
    # A /29 has 6 usable addresses.
    made = [await registry.create(service(f"s{i}", "default"), ADMIN) for i in range(6)]
    assert len({m.spec.cluster_ip for m in made}) == 6
    with pytest.raises(
        Invalid, match=re.escape("no addresses left in the service range 10.99.0.0/29")
    ):
        await registry.create(service("one-too-many", "default"), ADMIN)
    owners = set((await claims(store)).values())
    assert owners == {f"default/s{i}/{m.metadata.uid}" for i, m in enumerate(made)}


async def test_repair_releases_orphans_and_restores_missing_claims(
    local: tuple[Registry, ServiceAllocator, Any],
) -> None:
    registry, allocator, store = local
    svc = await registry.create(service("kept", "default"), ADMIN)
    kept_key = IP_PREFIX + svc.spec.cluster_ip
    # An apiserver died between claiming and writing its Service (on an address
    # other than the one "kept" drew at random from the six):
    ghost_key = IP_PREFIX + ("10.99.0.6" if svc.spec.cluster_ip != "10.99.0.6" else "10.99.0.5")
    await store.create(ghost_key, b"default/ghost/uid-1")
    # and a backup restored a Service without its claim:
    await store.delete(kept_key)

    await allocator.repair()
    got = await claims(store)
    assert got[kept_key] == f"default/kept/{svc.metadata.uid}"
    assert ghost_key in got  # one pass may catch a write in flight: keep it
    await allocator.repair()
    assert ghost_key not in await claims(store)


async def test_allocation_error_names_the_field(
    local: tuple[Registry, ServiceAllocator, Any],
) -> None:
    _, allocator, _ = local
    with pytest.raises(AllocationError) as err:
        await allocator.allocate(service("x", "default", clusterIP="10.99.0.0"), None)
    assert err.value.error.path == "spec.clusterIP"
