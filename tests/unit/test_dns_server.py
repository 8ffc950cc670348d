"""The cluster DNS server on 127.0.0.1: wire format, flags, truncation, forwarding.

Forwarding goes to a fake upstream on 127.0.0.1 that this test runs; nothing
is ever sent off the machine.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped]

from agent.network.dns.records import Answer, DNSTable, Record, Soa
from agent.network.dns.server import DNSServer, Upstream, upstreams_from_resolv
from orchestrator.api.pb import core_v1_pb2 as core

pytestmark = pytest.mark.unit


class FakeTable:
    """Answers big.test with `count` A records, small.test with one, and
    cluster.local names NXDOMAIN; everything else is not ours."""

    ttl = 7

    def __init__(self, count: int = 60) -> None:
        self.count = count
        self.asked: list[tuple[str, str]] = []

    def soa(self) -> Soa:
        return Soa("ns.dns.cluster.local", "hostmaster.cluster.local", 42, minimum=3)

    def lookup(self, qname: str, qtype: str) -> Answer | None:
        self.asked.append((qname, qtype))
        name = qname.rstrip(".").lower()
        if name == "big.test":
            ips = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(self.count)]
            return Answer("NOERROR", answers=tuple(Record(name, "A", ip) for ip in ips))
        if name == "small.test":
            return Answer("NOERROR", answers=(Record(name, "A", "10.2.0.1"),))
        if name.endswith("cluster.local"):
            return Answer("NXDOMAIN", authority=(Record("cluster.local", "SOA", "x"),))
        return None


async def udp_query(port: int, packet: bytes, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, packet)
        async with asyncio.timeout(timeout):
            return await loop.sock_recv(sock, 65535)


async def tcp_query(port: int, packet: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack("!H", len(packet)) + packet)
        await writer.drain()
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)
    finally:
        writer.close()


async def resolve(port: int, name: str, qtype: str = "A", *, edns: int = 0) -> Any:
    """As a stub resolver: UDP first, TCP again when the answer is truncated."""
    q = DNSRecord.question(name, qtype)
    if edns:
        q.add_ar(EDNS0(udp_len=edns))
    reply = DNSRecord.parse(await udp_query(port, q.pack()))
    if reply.header.tc:
        reply = DNSRecord.parse(await tcp_query(port, q.pack()))
    return reply


@pytest.fixture
async def server() -> AsyncIterator[DNSServer]:
    srv = DNSServer(FakeTable(), host="127.0.0.1", port=0)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_answer_has_flags_ttl_and_the_askers_spelling(server: DNSServer) -> None:
    q = DNSRecord.question("Small.TEST", "A")
    reply = DNSRecord.parse(await udp_query(server.port, q.pack()))
    assert reply.header.id == q.header.id
    assert (reply.header.qr, reply.header.aa, reply.header.rd, reply.header.ra) == (1, 1, 1, 0)
    assert reply.header.rcode == RCODE.NOERROR
    assert str(reply.q.qname) == "Small.TEST."
    assert [(str(rr.rname), str(rr.rdata), rr.ttl) for rr in reply.rr] == [
        ("Small.TEST.", "10.2.0.1", 7)
    ]


async def test_nxdomain_carries_the_soa_with_its_negative_ttl(server: DNSServer) -> None:
    reply = await resolve(server.port, "nope.default.svc.cluster.local")
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert reply.header.aa == 1
    assert [(rr.rtype, rr.ttl) for rr in reply.auth] == [(QTYPE.SOA, 3)]
    assert reply.auth[0].rdata.times[0] == 42


async def test_large_udp_answer_is_truncated_and_complete_over_tcp(server: DNSServer) -> None:
    q = DNSRecord.question("big.test", "A")
    raw = await udp_query(server.port, q.pack())
    assert len(raw) <= 512
    short = DNSRecord.parse(raw)
    assert short.header.tc == 1 and short.rr == [] and str(short.q.qname) == "big.test."
    full = await resolve(server.port, "big.test")
    assert full.header.tc == 0
    assert len(full.rr) == 60


async def test_edns_buffer_size_allows_larger_udp_answers() -> None:
    srv = DNSServer(FakeTable(count=40), host="127.0.0.1", port=0)
    await srv.start()
    try:
        q = DNSRecord.question("big.test", "A")
        q.add_ar(EDNS0(udp_len=4096))
        raw = await udp_query(srv.port, q.pack())
        reply = DNSRecord.parse(raw)
        assert 512 < len(raw) <= 1232
        assert reply.header.tc == 0 and len(reply.rr) == 40
        assert [rr.rtype for rr in reply.ar] == [41]
        assert reply.ar[0].rclass == 1232
        # Without EDNS the same answer does not fit.
        plain = DNSRecord.parse(await udp_query(srv.port, DNSRecord.question("big.test").pack()))
        assert plain.header.tc == 1
    finally:
        await srv.stop()


async def test_tcp_connection_carries_several_queries(server: DNSServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for name in ("small.test", "big.test"):
            packet = DNSRecord.question(name).pack()
            writer.write(struct.pack("!H", len(packet)) + packet)
        await writer.drain()
        sizes = []
        for _ in range(2):
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            sizes.append(len(DNSRecord.parse(await reader.readexactly(size)).rr))
        assert sizes == [1, 60]
    finally:
        writer.close()


async def test_names_not_ours_are_refused_without_upstream(server: DNSServer) -> None:
    reply = await resolve(server.port, "example.com")
    assert reply.header.rcode == RCODE.REFUSED
    assert reply.header.aa == 0 and reply.rr == []


async def test_malformed_and_unsupported_queries(server: DNSServer) -> None:
    garbage = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05abc"
    reply = await udp_query(server.port, garbage)
    assert reply[:2] == b"\x12\x34" and reply[3] & 0xF == RCODE.FORMERR
    notify = DNSRecord.question("small.test")
    notify.header.opcode = 4
    reply2 = DNSRecord.parse(await udp_query(server.port, notify.pack()))
    assert reply2.header.rcode == RCODE.NOTIMP
    two = DNSRecord.question("small.test")
    two.add_question(*DNSRecord.question("big.test").questions)
    reply3 = DNSRecord.parse(await udp_query(server.port, two.pack()))
    assert reply3.header.rcode == RCODE.FORMERR
    # A response is never answered (no reflection loops between servers).
    response = DNSRecord.question("small.test").reply()
    with pytest.raises(TimeoutError):
        await udp_query(server.port, response.pack(), timeout=0.3)
    # Still serving.
    assert len((await resolve(server.port, "small.test")).rr) == 1


async def test_unsupported_edns_version_is_badvers(server: DNSServer) -> None:
    q = DNSRecord.question("small.test")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    reply = DNSRecord.parse(await udp_query(server.port, q.pack()))
    assert reply.rr == []
    assert (reply.ar[0].ttl >> 24) << 4 | reply.header.rcode == 16


class FakeUpstream:
    """A DNS server on 127.0.0.1 that answers every A query with 192.0.2.99
    (over UDP, and TCP on the same port)."""

    def __init__(self) -> None:
        self.port = 0
        self.queries: list[str] = []
        self._udp: Any = None
        self._tcp: Any = None

    def answer(self, data: bytes) -> bytes:
        q = DNSRecord.parse(data)
        self.queries.append(str(q.q.qname))
        reply = q.reply()
        reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.99"), ttl=60))
        return bytes(reply.pack())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(upstream.answer(data), addr)

        self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        self.port = self._udp.get_extra_info("sockname")[1]

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            reply = self.answer(await reader.readexactly(size))
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
            writer.close()

        self._tcp = await asyncio.start_server(serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self._udp.close()
        self._tcp.close()
        await self._tcp.wait_closed()


async def test_forwarding_to_the_upstream_over_udp_and_tcp() -> None:
    upstream = FakeUpstream()
    await upstream.start()
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # bound, never answers: the first upstream times out
    ups: Sequence[Upstream] = [("127.0.0.1", dead.getsockname()[1]), ("127.0.0.1", upstream.port)]
    srv = DNSServer(
        FakeTable(), host="127.0.0.1", port=0, upstreams=lambda: ups, forward_timeout=0.3
    )
    await srv.start()
    try:
        q = DNSRecord.question("example.com")
        reply = DNSRecord.parse(await udp_query(srv.port, q.pack()))
        assert reply.header.id == q.header.id
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.99"]
        reply = DNSRecord.parse(await tcp_query(srv.port, q.pack()))
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.99"]
        # With an upstream, recursion is available, also on our own answers.
        assert (await resolve(srv.port, "small.test")).header.ra == 1
        assert upstream.queries == ["example.com.", "example.com."]
    finally:
        await srv.stop()
        await upstream.stop()
        dead.close()


async def test_no_upstream_answering_is_servfail() -> None:
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    ups = [("127.0.0.1", dead.getsockname()[1])]
    srv = DNSServer(
        FakeTable(), host="127.0.0.1", port=0, upstreams=lambda: ups, forward_timeout=0.2
    )
    await srv.start()
    try:
        reply = await resolve(srv.port, "example.com")
        assert reply.header.rcode == RCODE.SERVFAIL
    finally:
        await srv.stop()
        dead.close()


async def test_external_name_is_chased_upstream() -> None:
    upstream = FakeUpstream()
    await upstream.start()
    table = DNSTable("cluster.local")
    svc = core.Service()
    svc.metadata.name, svc.metadata.namespace = "ext", "default"
    svc.spec.type, svc.spec.external_name = "ExternalName", "db.example.com"
    table.set_service(svc)
    ups = [("127.0.0.1", upstream.port)]
    srv = DNSServer(table, host="127.0.0.1", port=0, upstreams=lambda: ups)
    await srv.start()
    try:
        reply = await resolve(srv.port, "ext.default.svc.cluster.local")
        assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr] == [
            ("CNAME", "db.example.com."),
            ("A", "192.0.2.99"),
        ]
        assert upstream.queries == ["db.example.com."]
    finally:
        await srv.stop()
        await upstream.stop()


async def test_real_table_over_the_wire() -> None:
    table = DNSTable("cluster.local")
    svc = core.Service()
    svc.metadata.name, svc.metadata.namespace = "web", "default"
    svc.spec.cluster_ip = "10.96.0.20"
    svc.spec.ports.add(name="http", protocol="TCP", port=80)
    table.set_service(svc)
    srv = DNSServer(table, host="127.0.0.1", port=0)
    await srv.start()
    try:
        srv_reply = await resolve(srv.port, "_http._tcp.web.default.svc.cluster.local", "SRV")
        assert [str(rr.rdata) for rr in srv_reply.rr] == ["0 100 80 web.default.svc.cluster.local."]
        assert [str(rr.rdata) for rr in srv_reply.ar] == ["10.96.0.20"]
        ptr = await resolve(srv.port, "20.0.96.10.in-addr.arpa", "PTR")
        assert [str(rr.rdata) for rr in ptr.rr] == ["web.default.svc.cluster.local."]
        version = await resolve(srv.port, "dns-version.cluster.local", "TXT")
        assert [str(rr.rdata) for rr in version.rr] == ['"1.1.0"']
        nodata = await resolve(srv.port, "web.default.svc.cluster.local", "AAAA")
        assert (nodata.header.rcode, nodata.rr) == (RCODE.NOERROR, [])
        # An unknown type number is NODATA too, not an error.
        odd = await resolve(srv.port, "web.default.svc.cluster.local", "CAA")
        assert (odd.header.rcode, odd.rr) == (RCODE.NOERROR, [])
    finally:
        await srv.stop()


def test_upstreams_from_resolv_skip_our_own_address() -> None:
    text = (
        "search example.org\nnameserver 10.96.0.10\nnameserver 192.0.2.53\n# nameserver 1.1.1.1\n"
    )
    assert upstreams_from_resolv(text, exclude=("10.96.0.10",)) == [("192.0.2.53", 53)]
