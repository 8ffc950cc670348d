"""hostPort: a pod's container port published on the node, as Kubernetes'
CNI portmap plugin does it.

One nftables table of our own, `ip orch-hostports`, rewritten whole in one
atomic `nft -f` transaction whenever a pod's mappings come or go (a node
runs few hostPort pods; the Service proxy's table is apart and untouched):

- nat prerouting and output, before the Service proxy: a packet to a local
  address of the node (or to the mapping's hostIP) on the host port is DNATed
  to the pod's IP and container port;
- nat postrouting: a pod that reaches its own host port (hairpin) is
  masqueraded, or it would get its own packet back from itself.

Every rule carries its pod and mapping in a comment, so an agent that
restarts reads the mappings back from the kernel instead of dropping them
until each pod worker has synced. A pod that went away meanwhile leaves
through the pod network's teardown, as its veth does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

TABLE = "orch-hostports"
# Before the Service proxy's nat chains (-100): a host port is the node's own.
DNAT_PRIORITY = -110
PROTOCOLS = ("tcp", "udp", "sctp")
_COMMENT = re.compile(r'comment "([^"]*)"')


@dataclass(frozen=True, order=True)
class PortMapping:
    protocol: str  # tcp, udp or sctp
    host_port: int
    container_port: int
    host_ip: str = ""  # "": every local address of the node

    def describe(self) -> str:
        where = f"{self.host_ip}:" if self.host_ip else ""
        return f"{where}{self.host_port}/{self.protocol} -> {self.container_port}"


def port_mappings(pod: Any) -> tuple[PortMapping, ...]:
    """The pod's hostPorts (none for a hostNetwork pod: its ports are the node's)."""
    if pod.spec.host_network:
        return ()
    found: set[PortMapping] = set()
    for c in pod.spec.containers:
        for p in c.ports:
            if not p.host_port:
                continue
            protocol = (p.protocol or "TCP").lower()
            host_ip = "" if p.host_ip in ("", "0.0.0.0") else p.host_ip
            if protocol not in PROTOCOLS or (host_ip and not _ipv4(host_ip)):
                log.warning("pod %s: hostPort %s skipped (IPv4 TCP, UDP, SCTP only)", pod, p)
                continue
            found.add(PortMapping(protocol, p.host_port, p.container_port or p.host_port, host_ip))
    return tuple(sorted(found))


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


PodPorts = tuple[str, tuple[PortMapping, ...]]  # (pod IP, its mappings)


def _comment(uid: str, pod_ip: str, m: PortMapping) -> str:
    return f"{uid} {pod_ip} {m.protocol}:{m.host_port}:{m.container_port}:{m.host_ip}"


def render(pods: Mapping[str, PodPorts]) -> str:
    """The `nft -f` input that replaces the table with exactly these mappings."""
    dnat: list[tuple[bool, str]] = []  # (any address, rule): specific addresses first
    hairpin: list[str] = []
    for uid, (pod_ip, mappings) in sorted(pods.items()):
        for m in mappings:
            match = f"ip daddr {m.host_ip} " if m.host_ip else ""
            rule = (
                f"{match}{m.protocol} dport {m.host_port} dnat to {pod_ip}:{m.container_port}"
                f' comment "{_comment(uid, pod_ip, m)}"'
            )
            dnat.append((not m.host_ip, rule))
        if mappings:
            hairpin.append(
                f'ip saddr {pod_ip} ip daddr {pod_ip} ct status dnat masquerade comment "{uid}"'
            )
    lines = [
        # add + delete + define: one transaction that works whether or not
        # the table exists, and that packets see all at once.
        f"add table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "  chain prerouting {",
        f"    type nat hook prerouting priority {DNAT_PRIORITY}; policy accept;",
        "    fib daddr type local jump hostports",
        "  }",
        "  chain output {",
        f"    type nat hook output priority {DNAT_PRIORITY}; policy accept;",
        "    fib daddr type local jump hostports",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority 110; policy accept;",
        *(f"    {r}" for r in hairpin),
        "  }",
        "  chain hostports {",
        *(f"    {rule}" for _, rule in sorted(dnat, key=lambda r: r[0])),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def parse_table(text: str) -> dict[str, PodPorts]:
    """The mappings in `nft list table` output, read from the rules' comments."""
    found: dict[str, tuple[str, set[PortMapping]]] = {}
    for comment in _COMMENT.findall(text):
        parts = comment.split(" ")
        if len(parts) != 3:
            continue  # a hairpin rule's, or not ours
        uid, pod_ip, spec = parts
        fields = spec.split(":")
        if len(fields) != 4 or not fields[1].isdigit() or not fields[2].isdigit():
            continue
        protocol, host_port, container_port, host_ip = fields
        entry = found.setdefault(uid, (pod_ip, set()))
        entry[1].add(PortMapping(protocol, int(host_port), int(container_port), host_ip))
    return {uid: (ip, tuple(sorted(ms))) for uid, (ip, ms) in found.items()}


class HostPortsNft(Protocol):
    async def apply(self, text: str) -> None: ...

    async def table_text(self, table: str) -> str:
        """`nft list table ip <table>`, "" when there is no such table."""
        ...


class HostPorts:
    """The node's host port mappings, by pod uid, kept in the kernel."""

    def __init__(self, nft: HostPortsNft) -> None:
        self._nft = nft
        self._pods: dict[str, PodPorts] | None = None  # read from the kernel first
        self._lock = asyncio.Lock()

    async def set_pod(self, uid: str, pod_ip: str, mappings: Sequence[PortMapping]) -> None:
        """Publish exactly `mappings` for the pod (none: remove its mappings).
        Raises the nft error when the kernel refused; nothing changed then."""
        async with self._lock:
            pods = await self._current()
            want = (pod_ip, tuple(sorted(set(mappings))))
            if not want[1]:
                if uid not in pods:
                    return
                new = {k: v for k, v in pods.items() if k != uid}
            elif pods.get(uid) == want:
                return
            else:
                new = {**pods, uid: want}
                self._warn_conflicts(uid, want, pods)
            await self._nft.apply(render(new))
            self._pods = new

    async def remove_pod(self, uid: str) -> None:
        await self.set_pod(uid, "", ())

    async def mappings(self) -> dict[str, PodPorts]:
        async with self._lock:
            return dict(await self._current())

    async def _current(self) -> dict[str, PodPorts]:
        if self._pods is None:
            self._pods = parse_table(await self._nft.table_text(TABLE))
        return self._pods

    @staticmethod
    def _warn_conflicts(uid: str, want: PodPorts, pods: Mapping[str, PodPorts]) -> None:
        # The scheduler keeps host ports apart; two pods with one port here
        # means a pod bound by hand. The one whose rule comes first wins.
        mine = {(m.protocol, m.host_port, m.host_ip) for m in want[1]}
        for other, (_, theirs) in pods.items():
            clash = mine & {(m.protocol, m.host_port, m.host_ip) for m in theirs}
            if other != uid and clash:
                log.warning("pods %s and %s both map host port(s) %s", uid, other, sorted(clash))
