"""ClusterDNS: the node's cluster DNS server, fed by informers.

Every node answers for the cluster itself, as NodeLocal DNSCache does: the
cluster DNS address (10.96.0.10) sits on a dummy interface in the node's
network namespace, so a pod's query, routed to its gateway on the node's
bridge, is delivered locally to this server, without a Service rule and
without leaving the node. The address stays on the interface when the agent
stops: pods then get "port unreachable" at once instead of timing out on a
route to nowhere, and a restarted agent binds it again.

Services, Endpoints and Pods come from cluster-wide informers; each event
rebuilds the records of one object (records.DNSTable). Until all three have
listed, our zones answer SERVFAIL rather than NXDOMAIN.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.network.dns.records import DEFAULT_REVERSE_CIDRS, DEFAULT_TTL, DNSTable
from agent.network.dns.server import DNSServer, Upstream, upstreams_from_resolv
from orchestrator.client.informer import Informer

log = logging.getLogger(__name__)

CLUSTER_DNS_IP = "10.96.0.10"
DNS_INTERFACE = "orch-dns"


def ensure_dns_interface(ifname: str, address: str) -> str:
    """Put address/32 on a dummy interface that is up (idempotent); returns
    the interface that holds it.

    A kernel without the dummy driver (EOPNOTSUPP) gets the address on `lo`
    instead: any local address is delivered locally whatever interface a
    packet came in on, the dummy only keeps ours apart and easy to find.
    Blocks (netlink): call it from a worker thread."""
    from agent.network.netlink import IPRoute, NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            try:
                ipr.link("add", ifname=ifname, kind="dummy")
            except NetlinkError as exc:
                if exc.code == errno.EOPNOTSUPP:
                    log.warning("no dummy interfaces in this kernel: %s goes on lo", address)
                    ifname = "lo"
                elif exc.code != errno.EEXIST:
                    raise
            found = ipr.link_lookup(ifname=ifname)
        index = found[0]
        kind = ipr.link("get", index=index)[0].get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
        if ifname != "lo" and kind != "dummy":
            raise RuntimeError(f"{ifname} exists but is a {kind} device, not a dummy")
        addresses = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
        if address not in addresses:
            try:
                ipr.addr("add", index=index, address=address, prefixlen=32)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
        ipr.link("set", index=index, state="up")
        return ifname


class ClusterDNS:
    """Serves the cluster's names on listen:port (UDP and TCP).

    interface: the dummy interface to put `listen` on; None when the address
    is already local (127.0.0.1 in tests). upstream_resolv: a resolv.conf whose
    nameservers get the names outside our zones; None refuses them.
    pod_records: `<a-b-c-d>.<ns>.pod.<zone>` names, which need a cluster-wide
    Pod informer (its cache is the largest part of this server's memory)."""

    def __init__(
        self,
        client: Any,
        *,
        listen: str = CLUSTER_DNS_IP,
        port: int = 53,
        domain: str = "cluster.local",
        upstream_resolv: str | Path | None = None,
        interface: str | None = DNS_INTERFACE,
        ttl: int = DEFAULT_TTL,
        reverse_cidrs: Sequence[str] = DEFAULT_REVERSE_CIDRS,
        forward_timeout: float = 2.0,
        pod_records: bool = True,
    ) -> None:
        self.client = client
        self.listen = listen
        self.interface = interface
        self.upstream_resolv = Path(upstream_resolv) if upstream_resolv is not None else None
        self.pod_records = pod_records
        self.table = DNSTable(
            domain, ttl=ttl, nameserver_ip=listen, reverse_cidrs=reverse_cidrs, synced=False
        )
        self.server = DNSServer(
            self.table,
            host=listen,
            port=port,
            upstreams=self._upstreams,
            forward_timeout=forward_timeout,
        )
        self.informers: list[Informer] = []
        self._synced = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        self._resolv_cache: tuple[tuple[int, int], list[Upstream]] | None = None

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        """Listening when this returns; answers from our zones once synced."""
        if self.interface is not None:
            await asyncio.to_thread(ensure_dns_interface, self.interface, self.listen)
        services = Informer(self.client, "Service")
        endpoints = Informer(self.client, "Endpoints")
        services.add_handler(self._on_service)
        endpoints.add_handler(self._on_endpoints)
        self.informers = [services, endpoints]
        if self.pod_records:
            pods = Informer(self.client, "Pod")
            pods.add_handler(self._on_pod)
            self.informers.append(pods)
        await self.server.start()
        for informer in self.informers:
            informer.start()
        self._sync_task = asyncio.create_task(self._mark_synced(), name="cluster-dns-sync")

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.server.stop()
        for informer in self.informers:
            await informer.stop()

    async def wait_synced(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    async def _mark_synced(self) -> None:
        for informer in self.informers:
            await informer.synced.wait()
        self.table.synced = True
        self._synced.set()
        log.info("cluster DNS synced: serving %s", self.table.domain)

    # -- informer events ---------------------------------------------------------------

    def _on_service(self, type_: str, svc: Any, _old: Any) -> None:
        if type_ == "DELETED":
            self.table.delete_service(svc.metadata.namespace, svc.metadata.name)
        else:
            self.table.set_service(svc)

    def _on_endpoints(self, type_: str, ep: Any, _old: Any) -> None:
        if type_ == "DELETED":
            self.table.delete_endpoints(ep.metadata.namespace, ep.metadata.name)
        else:
            self.table.set_endpoints(ep)

    def _on_pod(self, type_: str, pod: Any, _old: Any) -> None:
        if type_ == "DELETED":
            self.table.delete_pod(pod.metadata.namespace, pod.metadata.name)
        else:
            self.table.set_pod(pod)

    # -- upstream ----------------------------------------------------------------------

    def _upstreams(self) -> list[Upstream]:
        """The resolv.conf's servers, re-read when the file changes."""
        if self.upstream_resolv is None:
            return []
        try:
            st = os.stat(self.upstream_resolv)
        except OSError:
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if self._resolv_cache is None or self._resolv_cache[0] != stamp:
            try:
                text = self.upstream_resolv.read_text()
            except OSError:
                return []
            self._resolv_cache = (stamp, upstreams_from_resolv(text, exclude=(self.listen,)))
        return self._resolv_cache[1]
