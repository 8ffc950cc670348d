"""The kernel state the overlay manages, and the small netlink interface it
goes through (pyroute2 in overlay_netlink.py, an in-memory fake in
overlay_fake.py).

Entries are plain values, equal when the kernel would consider them the same
entry with the same content, so that what the kernel holds and what the
cluster wants can be compared as sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# rtm_protocol of every route the overlay adds. The kernel keeps it and dumps
# it back, so after a restart the agent can tell its own routes (including a
# vanished peer's) from anyone else's without remembering them on disk.
# 241 is not assigned in iproute2's rt_protos; `ip route show proto 241`.
RTPROT_ORCH = 241


class OverlayError(Exception):
    pass


@dataclass(frozen=True, order=True)
class Neigh:
    """A permanent ARP entry on the VXLAN device: a peer's subnet address
    (its x.y.z.0, the next hop of the route to its pods) -> the peer's VTEP MAC.
    Permanent, so the kernel never has to ARP across the overlay (no miss
    handler answers)."""

    dev: str
    ip: str
    mac: str

    def __str__(self) -> str:
        return f"neigh {self.ip} lladdr {self.mac} dev {self.dev} permanent"


@dataclass(frozen=True, order=True)
class Fdb:
    """A self FDB entry on the VXLAN device: frames for a peer's VTEP MAC are
    encapsulated to the peer's underlay IP. With learning off this is the
    only way the device knows where a MAC lives."""

    dev: str
    mac: str
    dst: str

    def __str__(self) -> str:
        return f"fdb {self.mac} dst {self.dst} dev {self.dev} self permanent"


@dataclass(frozen=True, order=True)
class Route:
    """A route to a peer's pod CIDR (main table, protocol RTPROT_ORCH).
    VXLAN: via the peer's x.y.z.0 onlink (that address is on no local
    subnet, so the kernel must be told the next hop is directly on the device).
    host-gw: via the peer's underlay IP, a neighbour on the same L2 segment."""

    dev: str
    dst: str
    gateway: str
    onlink: bool

    def __str__(self) -> str:
        return f"route {self.dst} via {self.gateway} dev {self.dev}" + (
            " onlink" if self.onlink else ""
        )


Entry = Neigh | Fdb | Route


@dataclass(frozen=True)
class LinkInfo:
    """One interface as the kernel reports it (VXLAN fields None for others)."""

    name: str
    index: int
    kind: str | None
    mac: str
    mtu: int
    up: bool
    addresses: frozenset[tuple[str, int]]
    vni: int | None = None
    port: int | None = None
    local: str | None = None
    learning: bool | None = None
    lower: int | None = None  # ifindex the VXLAN device sends through


@dataclass(frozen=True)
class Underlay:
    """The interface carrying the node's underlay IP: VXLAN packets leave
    through it, host-gw next hops sit on its subnet, and its MTU bounds the
    pods'."""

    name: str
    index: int
    ip: str
    network: str  # CIDR of the subnet the address is on
    mtu: int


@dataclass(frozen=True)
class VxlanSpec:
    name: str
    vni: int
    port: int
    local: str
    lower: int
    mac: str
    mtu: int


class OverlayNetlink(Protocol):
    """The netlink effects the overlays need, and nothing else."""

    def link(self, name: str) -> LinkInfo | None: ...

    def underlay(self, ip: str) -> Underlay | None:
        """The interface holding ip, or None if no interface does."""
        ...

    def add_vxlan(self, spec: VxlanSpec) -> None:
        """Create the device, learning off, down and without addresses."""
        ...

    def delete_link(self, name: str) -> None:
        """Delete it (and with it every entry on it); absent is fine."""
        ...

    def set_mtu(self, name: str, mtu: int) -> None: ...

    def set_up(self, name: str) -> None: ...

    def add_address(self, name: str, ip: str, prefix_len: int) -> None: ...

    def del_address(self, name: str, ip: str, prefix_len: int) -> None: ...

    def neighs(self, dev: str) -> set[Neigh]:
        """The device's permanent IPv4 neighbour entries."""
        ...

    def fdb(self, dev: str) -> set[Fdb]:
        """The device's FDB entries that have a remote destination."""
        ...

    def routes(self, proto: int) -> set[Route]:
        """Main-table IPv4 routes with this rtm_protocol, on any device."""
        ...

    def add(self, entry: Entry) -> None:
        """Add or replace (an existing entry for the same key is overwritten)."""
        ...

    def remove(self, entry: Entry) -> None:
        """Remove; an entry (or device) already gone is not an error."""
        ...
