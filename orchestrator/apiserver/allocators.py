"""ClusterIPs and NodePorts for Services: handed out once, never twice.

Every apiserver of a cluster allocates, so uniqueness cannot rest on memory.
As Kubernetes' IPAddress allocator does, each address and each node port in
use is a key of its own in the store (`/registry/serviceipallocations/<ip>`,
`/registry/servicenodeportallocations/<proto>/<port>`) whose value names the
Service that holds it (namespace/name/uid). Claiming is the store's
create-if-absent, so two apiservers racing for one address cannot both win.
The keys lie outside every API kind, so the watch cache and clients never
see them.

- A Service is written only after its claims succeeded; when the write fails
  the claims are let go at once.
- When a Service goes away (or drops an address or port), its claims are
  released from the watch cache's event stream, whichever path deleted it.
- A repair pass (at start and every minute) makes the claims agree with the
  Services: a claim held by no live Service for two passes in a row (an
  apiserver died between claiming and writing) is released; a Service whose
  claim is missing (say, restored from a backup) gets it back.

Addresses asked for by users come from the low part of the range and
automatic ones from the high part first, as Kubernetes does, so a chosen
address (10.96.0.10 for DNS) is rarely taken already.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import Iterable
from typing import Any

from orchestrator.api.codec import FieldError
from orchestrator.api.kinds import kind_info
from orchestrator.apiserver.cache import CacheEvent, Filter, WatchCache
from orchestrator.store.base import KeyExistsError, KeyNotFoundError, Store, StoreError

log = logging.getLogger(__name__)

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORT_RANGE = (30000, 32767)
IP_PREFIX = "/registry/serviceipallocations/"
PORT_PREFIX = "/registry/servicenodeportallocations/"
REPAIR_INTERVAL = 60.0
# Kubernetes keeps the lowest min(max(16, size/16), 256) addresses for users.
STATIC_MIN, STATIC_MAX = 16, 256
RANDOM_TRIES = 64


class AllocationError(Exception):
    """A Service asked for an address or port it cannot have (the registry
    reports it as the Service being invalid, with the field)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.error = FieldError(path, message)


def _owner(svc: Any) -> str:
    m = svc.metadata
    return f"{m.namespace}/{m.name}/{m.uid}"


def _ip_key(ip: str) -> str:
    return IP_PREFIX + ip


def _port_key(protocol: str, port: int) -> str:
    return f"{PORT_PREFIX}{protocol or 'TCP'}/{port}"


def needs_cluster_ip(spec: Any) -> bool:
    return spec.type != "ExternalName" and spec.cluster_ip != "None"


def needs_node_ports(spec: Any) -> bool:
    if spec.type == "NodePort":
        return True
    return spec.type == "LoadBalancer" and spec.allocate_load_balancer_node_ports


def held_keys(svc: Any) -> set[str]:
    """The claim keys a stored Service holds."""
    keys: set[str] = set()
    spec = svc.spec
    if spec.cluster_ip and spec.cluster_ip != "None":
        keys.add(_ip_key(spec.cluster_ip))
    for port in spec.ports:
        if port.node_port:
            keys.add(_port_key(port.protocol, port.node_port))
    return keys


class ServiceAllocator:
    def __init__(
        self,
        store: Store,
        cache: WatchCache,
        *,
        service_cidr: str = DEFAULT_SERVICE_CIDR,
        node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
        repair_interval: float = REPAIR_INTERVAL,
    ) -> None:
        net = ipaddress.ip_network(service_cidr)
        if not isinstance(net, ipaddress.IPv4Network) or net.num_addresses < 8:
            raise ValueError(f"service CIDR {service_cidr}: expected an IPv4 range of /29 or wider")
        low, high = node_port_range
        if not 0 < low <= high <= 65535:
            raise ValueError(f"node port range {low}-{high} is not a range of ports")
        self.store = store
        self.cache = cache
        self.net = net
        self.ports = node_port_range
        self.repair_interval = repair_interval
        # First and last addresses of the range are never handed out.
        self._first = int(net.network_address) + 1
        self._last = int(net.broadcast_address) - 1
        size = self._last - self._first + 1
        self._static_end = self._first + min(max(STATIC_MIN, size // 16), STATIC_MAX)
        self._used_ips: set[str] = set()
        self._used_ports: set[tuple[str, int]] = set()
        self._suspects: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        info = kind_info("Service")
        for cached in self.cache.list(info, Filter()):
            self._note(cached.decode(), add=True)
        self.cache.listeners.append(self._on_event)
        self._task = asyncio.create_task(self._repair_forever(), name="service-allocator-repair")

    async def stop(self) -> None:
        if self._on_event in self.cache.listeners:
            self.cache.listeners.remove(self._on_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- allocation (called by the registry before it writes a Service) ------------------

    async def allocate(self, svc: Any, old: Any | None) -> list[str]:
        """Fill in the Service's clusterIP and nodePorts and claim them all.

        Returns the keys newly claimed (the caller releases them if its write
        fails). Raises AllocationError, claiming nothing, when a chosen address or port
        is out of range or taken."""
        spec = svc.spec
        owner = _owner(svc)
        held = held_keys(old) if old is not None else set()
        taken: list[str] = []
        try:
            if needs_cluster_ip(spec):
                if not spec.cluster_ip:
                    spec.cluster_ip = await self._claim_any_ip(owner, taken)
                elif _ip_key(spec.cluster_ip) not in held:
                    await self._claim_ip(spec.cluster_ip, owner, taken)
                del spec.cluster_ips[:]
                spec.cluster_ips.append(spec.cluster_ip)
            if needs_node_ports(spec):
                for i, port in enumerate(spec.ports):
                    path = f"spec.ports[{i}].nodePort"
                    if not port.node_port:
                        port.node_port = await self._claim_any_port(port.protocol, owner, taken)
                    elif _port_key(port.protocol, port.node_port) not in held:
                        await self._claim_port(port.protocol, port.node_port, path, owner, taken)
        except BaseException:
            await self.release(taken)
            raise
        return taken

    async def release(self, keys: Iterable[str], owner: str | None = None) -> None:
        """Let claims go; with owner, only those that owner still holds."""
        for key in keys:
            try:
                if owner is not None:
                    kv = await self.store.get(key)
                    if kv is None or kv.value.decode() != owner:
                        continue
                    await self.store.delete(key, kv.mod_revision)
                else:
                    await self.store.delete(key)
            except KeyNotFoundError:
                pass
            except StoreError as exc:
                log.warning("releasing %s: %s (the repair pass will retry)", key, exc)

    # -- claiming -----------------------------------------------------------------------

    async def _take(self, key: str, owner: str) -> bool:
        try:
            await self.store.create(key, owner.encode())
            return True
        except KeyExistsError:
            kv = await self.store.get(key)
            # Our own claim from an earlier attempt that died before the write.
            return kv is not None and kv.value.decode() == owner

    async def _claim_ip(self, ip: str, owner: str, taken: list[str]) -> None:
        addr = ipaddress.ip_address(ip)
        if addr not in self.net or not self._first <= int(addr) <= self._last:
            raise AllocationError(
                "spec.clusterIP",
                f'Invalid value: "{ip}": provided IP is not in the valid range. '
                f"The range of valid IPs is {self.net}",
            )
        if not await self._take(_ip_key(ip), owner):
            raise AllocationError(
                "spec.clusterIP",
                f'Invalid value: "{ip}": provided IP is already allocated',
            )
        taken.append(_ip_key(ip))

    async def _claim_any_ip(self, owner: str, taken: list[str]) -> str:
        for ip in self._ip_candidates():
            if await self._take(_ip_key(ip), owner):
                taken.append(_ip_key(ip))
                return ip
        raise AllocationError(
            "spec.clusterIP", f"no addresses left in the service range {self.net}"
        )

    def _ip_candidates(self) -> Iterable[str]:
        """Free-looking addresses: a few random ones from the dynamic part, then
        a full scan (dynamic part first), skipping what the cache shows used."""
        lo, hi = self._static_end, self._last
        if lo > hi:
            lo = self._first
        tried: set[int] = set()
        for _ in range(RANDOM_TRIES):
            n = random.randint(lo, hi)
            ip = str(ipaddress.IPv4Address(n))
            if n not in tried and ip not in self._used_ips:
                tried.add(n)
                yield ip
        for n in (*range(lo, hi + 1), *range(self._first, lo)):
            ip = str(ipaddress.IPv4Address(n))
            if n not in tried and ip not in self._used_ips:
                yield ip

    async def _claim_port(
        self, protocol: str, port: int, path: str, owner: str, taken: list[str]
    ) -> None:
        low, high = self.ports
        if not low <= port <= high:
            raise AllocationError(
                path,
                f"Invalid value: {port}: provided port is not in the valid range. "
                f"The range of valid ports is {low}-{high}",
            )
        key = _port_key(protocol, port)
        if not await self._take(key, owner):
            raise AllocationError(
                path, f"Invalid value: {port}: provided port is already allocated"
            )
        taken.append(key)

    async def _claim_any_port(self, protocol: str, owner: str, taken: list[str]) -> int:
        protocol = protocol or "TCP"
        low, high = self.ports
        start = random.randint(low, high)
        for offset in range(high - low + 1):
            port = low + (start - low + offset) % (high - low + 1)
            if (protocol, port) in self._used_ports:
                continue
            key = _port_key(protocol, port)
            if await self._take(key, owner):
                taken.append(key)
                return port
        raise AllocationError("spec.ports.nodePort", f"no node ports left in {low}-{high}")

    # -- following Services -------------------------------------------------------------

    def _note(self, svc: Any, *, add: bool) -> None:
        spec = svc.spec
        ips = {spec.cluster_ip} if spec.cluster_ip and spec.cluster_ip != "None" else set()
        ports = {(p.protocol or "TCP", p.node_port) for p in spec.ports if p.node_port}
        if add:
            self._used_ips |= ips
            self._used_ports |= ports
        else:
            self._used_ips -= ips
            self._used_ports -= ports

    def _on_event(self, ev: CacheEvent) -> None:
        if ev.obj.info.kind != "Service":
            return
        svc = ev.obj.decode()
        gone: set[str] = set()
        if ev.type == "DELETED":
            self._note(svc, add=False)
            gone = held_keys(svc)
        else:
            if ev.prev is not None:
                before = ev.prev.decode()
                self._note(before, add=False)
                gone = held_keys(before) - held_keys(svc)
            self._note(svc, add=True)
        if gone:
            owner = _owner(svc)
            asyncio.get_running_loop().create_task(self.release(sorted(gone), owner))

    # -- repair -------------------------------------------------------------------------

    async def _repair_forever(self) -> None:
        while True:
            try:
                await self.repair()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("service allocation repair failed; retrying later")
            await asyncio.sleep(self.repair_interval)

    async def repair(self) -> None:
        """Make the claims agree with the Services (see the module docstring)."""
        await self.cache.wait_for(await self.store.current_revision())
        wanted: dict[str, str] = {}
        for cached in self.cache.list(kind_info("Service"), Filter()):
            svc = cached.decode()
            for key in held_keys(svc):
                wanted[key] = _owner(svc)
        claims: dict[str, tuple[str, int]] = {}
        for prefix in (IP_PREFIX, PORT_PREFIX):
            for kv in (await self.store.range(prefix)).kvs:
                claims[kv.key] = (kv.value.decode(), kv.mod_revision)
        orphans = {k for k, (owner, _) in claims.items() if wanted.get(k) != owner}
        for key in orphans & self._suspects:
            owner, revision = claims[key]
            with contextlib.suppress(KeyNotFoundError, StoreError):
                await self.store.delete(key, revision)
                log.info("released %s, held by %s which no longer exists", key, owner)
        self._suspects = orphans - self._suspects
        for key, owner in wanted.items():
            if key in claims:
                continue
            try:
                await self.store.create(key, owner.encode())
                log.warning("restored the missing claim %s of Service %s", key, owner)
            except KeyExistsError:
                log.error("Service %s holds %s, which another Service claimed", owner, key)
