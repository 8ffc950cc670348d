"""Flushing UDP conntrack entries the new rules cannot fix on their own.

NAT is decided on a flow's first packet and remembered in conntrack. TCP
flows to a vanished endpoint die by themselves (resets, timeouts), but a UDP
client that keeps sending (DNS, metrics) refreshes its entry forever and keeps
reaching the old endpoint, or, for a Service that had no endpoints, keeps
bypassing the DNAT it now has. So, as kube-proxy does, after a sync:

- an endpoint went: delete entries NATed to it for that ClusterIP (and NodePort);
- a Service port got its first endpoint: delete entries to its ClusterIP (and
  NodePort) that were set up un-NATed while it had none.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from typing import Protocol

from agent.network.proxy.iptables import run_command
from agent.network.proxy.model import Endpoint, ServicePort

log = logging.getLogger(__name__)


class Conntrack(Protocol):
    async def delete(self, *filters: str) -> None:
        """`conntrack -D` with these filters; no matching entries is fine."""
        ...


class ConntrackTool:
    """The conntrack(8) CLI (Debian package `conntrack`)."""

    def __init__(self, *, netns: str | None = None, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._prefix: list[str] = []
        if netns is not None:
            path = netns if "/" in netns else f"/var/run/netns/{netns}"
            self._prefix = ["nsenter", f"--net={path}"]

    @staticmethod
    def available() -> bool:
        return shutil.which("conntrack") is not None

    async def delete(self, *filters: str) -> None:
        out = await run_command([*self._prefix, "conntrack", "-D", *filters], timeout=self.timeout)
        # Exit status 1 with "0 flow entries have been deleted" is the common,
        # harmless case: nothing was cached for that flow.
        if out.returncode != 0 and "0 flow entries" not in out.stderr:
            log.warning("conntrack -D %s: %s", " ".join(filters), out.stderr.strip())


def stale_udp_filters(
    before: Mapping[ServicePort, tuple[Endpoint, ...]],
    after: Mapping[ServicePort, tuple[Endpoint, ...]],
) -> list[tuple[str, ...]]:
    """The `conntrack -D` filters the change from `before` to `after` calls for."""
    filters: list[tuple[str, ...]] = []
    for sp, old in before.items():
        if sp.protocol != "UDP":
            continue
        now = set(after.get(sp, ()))
        for ep in old:
            if ep in now:
                continue
            filters.append(("-p", "udp", "--orig-dst", sp.cluster_ip, "--dst-nat", ep.ip))
            if sp.node_port:
                filters.append(("-p", "udp", "--dport", str(sp.node_port), "--dst-nat", ep.ip))
    for sp, eps in after.items():
        if sp.protocol != "UDP" or not eps or before.get(sp):
            continue
        filters.append(("-p", "udp", "--orig-dst", sp.cluster_ip, "--orig-port-dst", str(sp.port)))
        if sp.node_port:
            filters.append(("-p", "udp", "--orig-port-dst", str(sp.node_port)))
    return filters
