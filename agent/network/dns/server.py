"""The DNS server: UDP and TCP on one address, answers from a record table.

Wire format is dnslib's; what to answer is the table's (records.py). Here:
- one question per query (FORMERR otherwise), QUERY opcode only (NOTIMP);
- AA on answers from our zones; RA only when there is an upstream to recurse to;
- UDP answers fit 512 bytes, or the client's EDNS buffer (capped at 1232, the
  size that avoids IP fragmentation); larger ones go out truncated (TC, the
  question only) and the client retries over TCP, where anything fits;
- names that are not ours go to the upstream servers (the node's resolv.conf)
  over the transport the client used, each with a timeout; with no upstream
  the answer is REFUSED, never a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dnslib import (  # type: ignore[import-untyped]
    AAAA,
    CNAME,
    EDNS0,
    NS,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSError,
    DNSHeader,
    DNSRecord,
)

from agent.network.dns.records import Answer, Record, Soa
from agent.pods.sync import parse_resolv

log = logging.getLogger(__name__)

CLASSIC_UDP_LIMIT = 512
MAX_UDP_PAYLOAD = 1232
OPT_TYPE = 41
EDNS_BADVERS = 16
OPCODE_QUERY = 0
Upstream = tuple[str, int]


class RecordSource(Protocol):
    """What the server needs of a table (records.DNSTable, or a fake in tests)."""

    ttl: int

    def lookup(self, qname: str, qtype: str) -> Answer | None: ...

    def soa(self) -> Soa: ...


def _rdata(record: Record, soa: Soa) -> Any:
    rtype = record.rtype
    if rtype == "A":
        return A(record.value)
    if rtype == "AAAA":
        return AAAA(record.value)
    if rtype == "SRV":
        return SRV(record.priority, record.weight, record.port, record.value + ".")
    if rtype == "PTR":
        return PTR(record.value + ".")
    if rtype == "CNAME":
        return CNAME(record.value + ".")
    if rtype == "NS":
        return NS(record.value + ".")
    if rtype == "TXT":
        return TXT(record.value)
    if rtype == "SOA":
        times = (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)
        return SOA(soa.mname + ".", soa.rname + ".", times)
    raise ValueError(f"no wire form for {rtype} records")


class DNSServer:
    """Answers queries on host:port over UDP and TCP.

    port 0 picks a free port (the same one for both transports); `port` tells
    which after start(). upstreams is called per forwarded query, so a
    resolv.conf that changes is picked up without a restart."""

    def __init__(
        self,
        table: RecordSource,
        *,
        host: str = "10.96.0.10",
        port: int = 53,
        upstreams: Callable[[], Sequence[Upstream]] = lambda: (),
        forward_timeout: float = 2.0,
        tcp_idle_timeout: float = 10.0,
    ) -> None:
        self.table = table
        self.host = host
        self.port = port
        self.upstreams = upstreams
        self.forward_timeout = forward_timeout
        self.tcp_idle_timeout = tcp_idle_timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(10):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self), local_addr=(self.host, self.port)
            )
            port = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, self.host, port, reuse_address=True
                )
            except OSError:
                transport.close()
                if self.port != 0 or attempt == 9:
                    raise
                continue  # the ephemeral UDP port is taken for TCP: pick another
            self._udp = transport
            self.port = port
            log.info("cluster DNS listening on %s:%d (UDP and TCP)", self.host, port)
            return

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transports --------------------------------------------------------------------

    async def _answer_udp(self, data: bytes, addr: Any) -> None:
        reply = await self.handle(data, tcp=False)
        if reply is not None and self._udp is not None:
            self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed messages; the connection may carry several (RFC 7766)."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.tcp_idle_timeout):
                        (size,) = struct.unpack("!H", await reader.readexactly(2))
                        data = await reader.readexactly(size)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = await self.handle(data, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- queries -----------------------------------------------------------------------

    async def handle(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query message, or None to drop it."""
        try:
            query = DNSRecord.parse(data)
        except (DNSError, struct.error, ValueError, IndexError):
            return _formerr(data)
        header = query.header
        if header.qr:
            return None  # a response: never answer those (reflection loops)
        opt = next((rr for rr in query.ar if rr.rtype == OPT_TYPE), None)
        limit = CLASSIC_UDP_LIMIT
        if opt is not None:
            limit = max(CLASSIC_UDP_LIMIT, min(opt.rclass, MAX_UDP_PAYLOAD))
        reply = DNSRecord(DNSHeader(id=header.id, qr=1, opcode=header.opcode, rd=header.rd))
        reply.questions = list(query.questions)
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=MAX_UDP_PAYLOAD))
            if (opt.ttl >> 16) & 0xFF != 0:  # only EDNS version 0 exists
                reply.ar = [EDNS0(udp_len=MAX_UDP_PAYLOAD, ext_rcode=EDNS_BADVERS >> 4)]
                reply.header.rcode = EDNS_BADVERS & 0xF
                return self._pack(reply, tcp, limit)
        if header.opcode != OPCODE_QUERY:
            reply.header.rcode = RCODE.NOTIMP
            return self._pack(reply, tcp, limit)
        if len(query.questions) != 1:
            reply.header.rcode = RCODE.FORMERR
            return self._pack(reply, tcp, limit)
        question = query.questions[0]
        qname = str(question.qname)
        qtype = QTYPE.get(question.qtype, f"TYPE{question.qtype}")
        answer = self.table.lookup(qname, qtype)
        upstreams = self.upstreams()
        reply.header.ra = int(bool(upstreams))
        if answer is None:
            if not upstreams:
                reply.header.rcode = RCODE.REFUSED
                return self._pack(reply, tcp, limit)
            forwarded = await self.forward(data, upstreams, tcp=tcp)
            if forwarded is None:
                reply.header.rcode = RCODE.SERVFAIL
                return self._pack(reply, tcp, limit)
            return forwarded
        self._fill(reply, answer, qname)
        if answer.external_target and upstreams and qtype in ("A", "AAAA"):
            await self._chase(reply, answer.external_target, question.qtype, upstreams, tcp)
        return self._pack(reply, tcp, limit)

    def _fill(self, reply: Any, answer: Answer, qname: str) -> None:
        soa = self.table.soa()
        ttl = self.table.ttl
        asked = qname.rstrip(".").lower()
        reply.header.aa = int(answer.authoritative)
        reply.header.rcode = getattr(RCODE, answer.rcode)

        def rr(record: Record) -> Any:
            # Records at the asked name carry its spelling: resolvers that
            # randomize case (0x20) compare it.
            owner = qname if record.name == asked else record.name + "."
            rtype = getattr(QTYPE, record.rtype)
            record_ttl = soa.minimum if record.rtype == "SOA" else ttl
            return RR(owner, rtype, ttl=record_ttl, rdata=_rdata(record, soa))

        for record in answer.answers:
            reply.add_answer(rr(record))
        for record in answer.authority:
            reply.add_auth(rr(record))
        for record in answer.additional:
            # Additional records go before the OPT record, which stays last.
            reply.ar.insert(max(0, len(reply.ar) - _has_opt(reply)), rr(record))

    async def _chase(
        self, reply: Any, target: str, qtype: int, upstreams: Sequence[Upstream], tcp: bool
    ) -> None:
        """Resolve an ExternalName's target upstream, so clients that do not
        follow CNAMEs themselves get the addresses in one answer."""
        query = DNSRecord.question(target, QTYPE[qtype])
        query.header.id = random.randrange(1 << 16)
        raw = await self.forward(query.pack(), upstreams, tcp=tcp)
        if raw is None:
            return
        with contextlib.suppress(DNSError, struct.error, ValueError, IndexError):
            found = DNSRecord.parse(raw)
            if found.header.rcode == RCODE.NOERROR:
                for rr in found.rr:
                    reply.add_answer(rr)

    def _pack(self, reply: Any, tcp: bool, limit: int) -> bytes:
        packed = bytes(reply.pack())
        if tcp or len(packed) <= limit:
            return packed
        # Too big for this client over UDP: the header and question alone, TC set.
        short = DNSRecord(
            DNSHeader(
                id=reply.header.id,
                qr=1,
                opcode=reply.header.opcode,
                aa=reply.header.aa,
                tc=1,
                rd=reply.header.rd,
                ra=reply.header.ra,
                rcode=reply.header.rcode,
            )
        )
        short.questions = list(reply.questions)
        short.ar = [rr for rr in reply.ar if rr.rtype == OPT_TYPE]
        return bytes(short.pack())

    # -- forwarding --------------------------------------------------------------------

    async def forward(
        self, data: bytes, upstreams: Sequence[Upstream], *, tcp: bool
    ) -> bytes | None:
        """The first upstream reply to the raw query, trying each in turn."""
        for upstream in upstreams:
            try:
                async with asyncio.timeout(self.forward_timeout):
                    if tcp:
                        return await _forward_tcp(data, upstream)
                    return await _forward_udp(data, upstream)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s:%d failed: %r", *upstream, exc)
        return None


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._spawn(self.server._answer_udp(data, addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("cluster DNS UDP socket: %s", exc)


class _UpstreamProtocol(asyncio.DatagramProtocol):
    """Waits for the reply that carries the query's ID (a fresh socket per
    query gives a random source port; the ID check guards against strays)."""

    def __init__(self, query_id: bytes) -> None:
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:2] == self.query_id and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _forward_udp(data: bytes, upstream: Upstream) -> bytes:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _UpstreamProtocol(data[:2]), remote_addr=upstream, family=family
    )
    try:
        transport.sendto(data)
        return await protocol.reply
    finally:
        transport.close()


async def _forward_tcp(data: bytes, upstream: Upstream) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _has_opt(reply: Any) -> int:
    return int(any(rr.rtype == OPT_TYPE for rr in reply.ar))


def _formerr(data: bytes) -> bytes | None:
    """FORMERR with the query's ID when there is a header to answer, else drop."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    flags = 0x8000 | (data[2] & 0x79) << 8 | RCODE.FORMERR  # QR, opcode and RD kept
    return data[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def upstreams_from_resolv(text: str, *, exclude: Sequence[str] = ()) -> list[Upstream]:
    """Port-53 servers of a resolv.conf, without our own address (forwarding
    to ourselves would loop until the timeout)."""
    nameservers, _, _ = parse_resolv(text)
    return [(ns, 53) for ns in dict.fromkeys(nameservers) if ns not in exclude]
