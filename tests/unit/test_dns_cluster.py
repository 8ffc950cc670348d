"""ClusterDNS fed by informers over a fake API client, served on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dnslib import RCODE, DNSRecord  # type: ignore[import-untyped]

from agent.network.dns.cluster import ClusterDNS
from orchestrator.client.client import ObjectList, WatchEvent
from tests.unit.test_dns_records import endpoints, pod, service
from tests.unit.test_dns_server import resolve

pytestmark = pytest.mark.unit


class FakeClient:
    """Lists what it was given; watches deliver what the test pushes."""

    def __init__(self, objects: dict[str, list[Any]]) -> None:
        self.objects = objects
        self.streams: dict[str, asyncio.Queue[WatchEvent]] = {}
        self.listed = asyncio.Event()
        self.hold_list = False

    async def list(self, kind: str, namespace: str | None = None, **_: Any) -> ObjectList:
        while self.hold_list:
            await asyncio.sleep(0.01)
        return ObjectList(items=list(self.objects.get(kind, [])), resource_version="1")

    async def watch(
        self, kind: str, namespace: str | None = None, **_: Any
    ) -> AsyncIterator[WatchEvent]:
        queue = self.streams.setdefault(kind, asyncio.Queue())
        while True:
            yield await queue.get()

    def push(self, kind: str, type_: str, obj: Any) -> None:
        self.streams.setdefault(kind, asyncio.Queue()).put_nowait(WatchEvent(type_, obj, "2"))


async def eventually(check: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def test_cluster_dns_serves_what_the_informers_report() -> None:
    client = FakeClient(
        {
            "Service": [service("web"), service("db", cluster_ip="None")],
            "Endpoints": [endpoints("db", ready=(("10.244.1.5", "db-0"),))],
            "Pod": [pod("db-0", "10.244.1.5")],
        }
    )
    dns = ClusterDNS(client, listen="127.0.0.1", port=0, interface=None)
    await dns.start()
    try:
        await dns.wait_synced(5)
        port = dns.port
        reply = await resolve(port, "web.default.svc.cluster.local")
        assert [str(rr.rdata) for rr in reply.rr] == ["10.96.0.20"]
        reply = await resolve(port, "db-0.db.default.svc.cluster.local")
        assert [str(rr.rdata) for rr in reply.rr] == ["10.244.1.5"]
        reply = await resolve(port, "10-244-1-5.default.pod.cluster.local")
        assert [str(rr.rdata) for rr in reply.rr] == ["10.244.1.5"]
        # No upstream configured: other names are refused.
        assert (await resolve(port, "example.com")).header.rcode == RCODE.REFUSED

        client.push("Service", "DELETED", service("web"))
        client.push("Endpoints", "MODIFIED", endpoints("db", ready=(("10.244.1.6", "db-0"),)))

        async def updated() -> bool:
            gone = await resolve(port, "web.default.svc.cluster.local")
            moved = await resolve(port, "db-0.db.default.svc.cluster.local")
            return gone.header.rcode == RCODE.NXDOMAIN and [str(r.rdata) for r in moved.rr] == [
                "10.244.1.6"
            ]

        await eventually(updated)
    finally:
        await dns.stop()


async def test_servfail_until_synced_then_answers(tmp_path: Any) -> None:
    client = FakeClient({"Service": [service("web")]})
    client.hold_list = True
    dns = ClusterDNS(client, listen="127.0.0.1", port=0, interface=None, pod_records=False)
    await dns.start()
    try:
        q = DNSRecord.question("web.default.svc.cluster.local")
        early = await resolve(dns.port, "web.default.svc.cluster.local")
        assert early.header.rcode == RCODE.SERVFAIL
        client.hold_list = False
        await dns.wait_synced(5)
        reply = await resolve(dns.port, str(q.q.qname))
        assert [str(rr.rdata) for rr in reply.rr] == ["10.96.0.20"]
    finally:
        await dns.stop()


async def test_upstreams_follow_the_resolv_conf(tmp_path: Any) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.53\n")
    dns = ClusterDNS(FakeClient({}), listen="127.0.0.1", interface=None, upstream_resolv=resolv)
    assert dns._upstreams() == [("192.0.2.53", 53)]
    resolv.write_text("nameserver 192.0.2.54\nnameserver 192.0.2.55\n")
    assert dns._upstreams() == [("192.0.2.54", 53), ("192.0.2.55", 53)]
    resolv.unlink()
    assert dns._upstreams() == []
