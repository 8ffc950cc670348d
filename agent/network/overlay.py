"""Pod traffic between nodes: flannel's VXLAN design, or host-gw routes.

VXLAN (`VxlanOverlay`). One device per node (`orch.vxlan`, VNI 1, UDP 8472,
local = the node's underlay IP, learning off), holding its pod CIDR's network
address as a /32 (10.244.7.0/32), as flannel.1 does. For every peer node,
in this order:

    neigh 10.244.8.0 lladdr <peer VTEP MAC> dev orch.vxlan permanent
    fdb <peer VTEP MAC> dst <peer underlay IP> dev orch.vxlan self permanent
    route 10.244.8.0/24 via 10.244.8.0 dev orch.vxlan onlink

The route's next hop needs the neighbour entry to resolve without ARP, and
the neighbour's MAC needs the FDB entry to know where to send: adding them in
that order means a packet never meets a half-built path that the kernel
would answer with ARP into the void (no miss handler listens). Removal goes
the other way: route, FDB entry, neighbour.

host-gw (`HostGwOverlay`). No device: a route to each peer's pod CIDR via
the peer's underlay IP. Only works when every node is on one L2 segment, so a
peer on another subnet is refused, by name.

What peers need to know is published on each Node as annotations
(flannel's flannel.alpha.coreos.com/backend-type, /backend-data, /public-ip):

    orchestrator.io/overlay-backend  vxlan | host-gw
    orchestrator.io/underlay-ip      198.51.100.7
    orchestrator.io/vtep-mac         0a:58:0a:f4:07:00   (vxlan)
    orchestrator.io/vxlan-vni        1                   (vxlan)
    orchestrator.io/vxlan-port       8472                (vxlan)

A node is a peer once it has a pod CIDR and these annotations; it stops
being one when its Node goes, and the next `sync` removes its entries.

`sync(nodes)` compares what the kernel holds (read back every time, so
entries of nodes that vanished while the agent was down go too) with what
the Node list asks for, and applies the difference. It also re-checks the
device, recreating it (and so all entries) if someone deleted it:
`OverlaySyncer` runs it on every Node change and periodically.

Decisions (which peers, which entries, in which order) are pure functions;
the kernel is behind `OverlayNetlink` (pyroute2, blocking: worker threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.network.bridge import mac_for_ip
from agent.network.overlay_types import (
    RTPROT_ORCH,
    Entry,
    Fdb,
    LinkInfo,
    Neigh,
    OverlayError,
    OverlayNetlink,
    Route,
    Underlay,
    VxlanSpec,
)

log = logging.getLogger(__name__)

ANNOTATION_BACKEND = "orchestrator.io/overlay-backend"
ANNOTATION_UNDERLAY_IP = "orchestrator.io/underlay-ip"
ANNOTATION_VTEP_MAC = "orchestrator.io/vtep-mac"
ANNOTATION_VNI = "orchestrator.io/vxlan-vni"
ANNOTATION_PORT = "orchestrator.io/vxlan-port"

BACKEND_VXLAN = "vxlan"
BACKEND_HOST_GW = "host-gw"
DEFAULT_DEVICE = "orch.vxlan"
DEFAULT_VNI = 1
DEFAULT_PORT = 8472  # flannel's and the Linux default, not IANA's 4789
# Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
VXLAN_OVERHEAD = 50

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

NetlinkOpener = Callable[[], AbstractContextManager[OverlayNetlink]]


# -- what a node publishes -------------------------------------------------------------


def subnet_address(pod_cidr: str) -> str:
    """x.y.z.0 of a pod CIDR: the VXLAN device's own address, and the next hop
    peers route that CIDR through (no pod ever gets it)."""
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address)


def vtep_mac(pod_cidr: str) -> str:
    """The VXLAN device's MAC, derived from the pod CIDR (0a:58 + x.y.z.0, next
    to the bridge's 0a:58 + x.y.z.1). A recreated device, or a restarted agent,
    gets the same MAC, so peers' neighbour entries stay right while the
    annotation catches up; flannel's kernel-random MAC breaks them each time."""
    return mac_for_ip(subnet_address(pod_cidr))


def overlay_annotations(
    backend: str,
    underlay_ip: str,
    *,
    vtep: str | None = None,
    vni: int | None = None,
    port: int | None = None,
) -> dict[str, str]:
    out = {ANNOTATION_BACKEND: backend, ANNOTATION_UNDERLAY_IP: underlay_ip}
    if vtep is not None:
        out[ANNOTATION_VTEP_MAC] = vtep
    if vni is not None:
        out[ANNOTATION_VNI] = str(vni)
    if port is not None:
        out[ANNOTATION_PORT] = str(port)
    return out


# -- which peers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    name: str
    pod_cidr: str
    underlay_ip: str
    vtep_mac: str | None = None  # vxlan only


@dataclass
class PeerSet:
    peers: dict[str, Peer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # node name -> why


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _peer_from_node(node: Any, backend: str, vni: int, port: int) -> Peer | str:
    """A Peer, or why the node is not one (yet)."""
    name = node.metadata.name
    annotations = node.metadata.annotations
    if not node.spec.pod_cidr:
        return "it has no pod CIDR yet"
    try:
        cidr = ipaddress.ip_network(node.spec.pod_cidr, strict=False)
    except ValueError:
        return f"its pod CIDR {node.spec.pod_cidr!r} is not a network"
    if not isinstance(cidr, ipaddress.IPv4Network):
        return f"its pod CIDR {cidr} is not IPv4"
    theirs = annotations.get(ANNOTATION_BACKEND)
    if not theirs:
        return f"it has not published its overlay yet (no {ANNOTATION_BACKEND} annotation)"
    if theirs != backend:
        return f"it uses the {theirs} overlay backend, this node {backend}"
    underlay = _ipv4(annotations.get(ANNOTATION_UNDERLAY_IP, ""))
    if underlay is None:
        return f"its {ANNOTATION_UNDERLAY_IP} annotation is not an IPv4 address"
    if backend != BACKEND_VXLAN:
        return Peer(name, str(cidr), underlay)
    mac = annotations.get(ANNOTATION_VTEP_MAC, "").lower()
    if not _MAC.match(mac):
        return f"its {ANNOTATION_VTEP_MAC} annotation is not a MAC address"
    for key, ours in ((ANNOTATION_VNI, vni), (ANNOTATION_PORT, port)):
        if annotations.get(key, str(ours)) != str(ours):
            return f"its {key} is {annotations[key]}, this node's {ours}"
    return Peer(name, str(cidr), underlay, mac)


def _overlapping_groups(peers: list[Peer]) -> list[list[Peer]]:
    """Groups of peers whose pod CIDRs overlap (a sweep over sorted ranges)."""
    spans = sorted(
        (
            int(net.network_address),
            int(net.broadcast_address),
            peer,
        )
        for peer in peers
        for net in [ipaddress.IPv4Network(peer.pod_cidr)]
    )
    groups: list[list[Peer]] = []
    end = -1
    for start, last, peer in spans:
        if start <= end:
            groups[-1].append(peer)
        else:
            groups.append([peer])
        end = max(end, last)
    return [g for g in groups if len(g) > 1]


def peers_from_nodes(
    nodes: Iterable[Any],
    *,
    self_name: str,
    backend: str,
    own_pod_cidr: str,
    own_underlay_ip: str,
    vni: int = DEFAULT_VNI,
    port: int = DEFAULT_PORT,
) -> PeerSet:
    """The nodes this one should reach through the overlay, and why the others
    are left out. Conflicting claims (overlapping pod CIDRs, a shared VTEP MAC,
    our own underlay IP) cannot be resolved safely from here, so every node
    involved is left out rather than one picked at random."""
    result = PeerSet()
    own = ipaddress.IPv4Network(own_pod_cidr, strict=False)
    candidates: list[Peer] = []
    for node in nodes:
        name = node.metadata.name
        if name == self_name:
            continue
        found = _peer_from_node(node, backend, vni, port)
        if isinstance(found, str):
            result.skipped[name] = found
        elif ipaddress.IPv4Network(found.pod_cidr).overlaps(own):
            result.skipped[name] = f"its pod CIDR {found.pod_cidr} overlaps this node's {own}"
        elif found.underlay_ip == own_underlay_ip:
            result.skipped[name] = f"its underlay IP {found.underlay_ip} is this node's"
        else:
            candidates.append(found)
    for group in _overlapping_groups(candidates):
        names = ", ".join(sorted(p.name for p in group))
        for peer in group:
            result.skipped[peer.name] = f"its pod CIDR {peer.pod_cidr} overlaps another's ({names})"
    by_mac: dict[str | None, list[Peer]] = {}
    for peer in candidates:
        if peer.vtep_mac is not None:
            by_mac.setdefault(peer.vtep_mac, []).append(peer)
    for mac, group in by_mac.items():
        if len(group) > 1:
            names = ", ".join(sorted(p.name for p in group))
            for peer in group:
                result.skipped[peer.name] = f"its VTEP MAC {mac} is shared by {names}"
    result.peers = {p.name: p for p in candidates if p.name not in result.skipped}
    return result


def refuse_off_subnet(peers: PeerSet, underlay_network: str) -> PeerSet:
    """host-gw routes go straight to the peer's underlay IP as the next hop, so
    the peer must be on this node's underlay subnet (one L2 segment)."""
    net = ipaddress.IPv4Network(underlay_network)
    out = PeerSet(skipped=dict(peers.skipped))
    for name, peer in peers.peers.items():
        if ipaddress.IPv4Address(peer.underlay_ip) in net:
            out.peers[name] = peer
        else:
            out.skipped[name] = (
                f"host-gw refuses it: its underlay IP {peer.underlay_ip} is not on this "
                f"node's underlay subnet {net}, and host-gw needs every node on one L2 "
                "segment (use the vxlan backend)"
            )
    return out


# -- which entries, in which order -----------------------------------------------------


def vxlan_entries(peers: Iterable[Peer], dev: str) -> dict[Entry, str]:
    """entry -> the peer it is for."""
    out: dict[Entry, str] = {}
    for peer in peers:
        if peer.vtep_mac is None:
            raise OverlayError(f"peer {peer.name} has no VTEP MAC")
        gateway = subnet_address(peer.pod_cidr)
        out[Neigh(dev, gateway, peer.vtep_mac)] = peer.name
        out[Fdb(dev, peer.vtep_mac, peer.underlay_ip)] = peer.name
        out[Route(dev, peer.pod_cidr, gateway, onlink=True)] = peer.name
    return out


def hostgw_entries(peers: Iterable[Peer], dev: str) -> dict[Entry, str]:
    return {Route(dev, p.pod_cidr, p.underlay_ip, onlink=False): p.name for p in peers}


_ADD_ORDER: dict[type, int] = {Neigh: 0, Fdb: 1, Route: 2}


@dataclass(frozen=True)
class Op:
    action: Literal["add", "remove"]
    entry: Entry
    peer: str  # the node it is (or was) for; "" when nobody knows any more

    def __str__(self) -> str:
        who = f"peer {self.peer}" if self.peer else "a node no longer known"
        return f"{self.action} {self.entry} (for {who})"


def plan(
    observed: Iterable[Entry],
    desired: Mapping[Entry, str],
    owners: Mapping[Entry, str] | None = None,
) -> list[Op]:
    """The changes that turn observed into desired: stale entries first, routes
    before FDB entries before neighbours (nothing is left routed into a hole);
    then, peer by peer, neighbour, FDB entry, route. owners names the peer a
    stale entry was added for, when this process remembers."""
    owners = owners or {}
    have = set(observed)
    stale = sorted(have - desired.keys(), key=lambda e: (-_ADD_ORDER[type(e)], e.dev, str(e)))
    missing = sorted(desired.keys() - have, key=lambda e: (desired[e], _ADD_ORDER[type(e)], str(e)))
    return [Op("remove", e, owners.get(e, "")) for e in stale] + [
        Op("add", e, desired[e]) for e in missing
    ]


def vxlan_mismatch(link: LinkInfo, spec: VxlanSpec) -> str | None:
    """Why an existing VXLAN device cannot be kept (its VNI, port, local
    address and lower device are fixed at creation), or None."""
    wrong = [
        f"{what} {have} (want {want})"
        for what, have, want in (
            ("VNI", link.vni, spec.vni),
            ("port", link.port, spec.port),
            ("local", link.local, spec.local),
            ("lower ifindex", link.lower, spec.lower),
            ("MAC", link.mac.lower(), spec.mac),
        )
        if have != want
    ]
    if link.learning:
        wrong.append("learning on")
    return ", ".join(wrong) or None


@dataclass
class SyncReport:
    peers: list[str] = field(default_factory=list)  # the nodes that are peers (failed too)
    skipped: dict[str, str] = field(default_factory=dict)  # node -> why it is not a peer
    failed: dict[str, str] = field(default_factory=dict)  # peer -> the error
    applied: list[Op] = field(default_factory=list)
    created_device: bool = False  # the device was missing (or unusable) and was made


# -- the overlays ----------------------------------------------------------------------


class Overlay(Protocol):
    backend: str
    # The UDP port the overlay encapsulates pod traffic in, if it does: the
    # node's firewall exempts it from connection tracking (hostfw.py).
    encapsulation_udp_port: int | None

    @property
    def pod_mtu(self) -> int:
        """The MTU pod interfaces (veths, bridge) must use. Known after setup()."""
        ...

    def node_annotations(self) -> dict[str, str]:
        """What to set on this node's Node for its peers."""
        ...

    async def setup(self) -> None:
        """Find the underlay, create the device (if any). Call before the pod
        network is created: it needs pod_mtu."""
        ...

    async def sync(self, nodes: Iterable[Any]) -> SyncReport:
        """Make the kernel match the Node list; idempotent."""
        ...

    async def teardown(self) -> None:
        """Remove the device and every entry this overlay made."""
        ...


def _default_opener(netns: str | None) -> NetlinkOpener:
    from agent.network.overlay_netlink import open_netlink

    return lambda: open_netlink(netns)


class _Base:
    """Shared reconcile: observe, plan, apply, remember who owned what."""

    backend = ""
    encapsulation_udp_port: int | None = None

    def __init__(
        self,
        node_name: str,
        pod_cidr: str,
        underlay_ip: str,
        *,
        node_netns: str | None,
        netlink: NetlinkOpener | None,
    ) -> None:
        self.node_name = node_name
        self.pod_cidr = str(ipaddress.IPv4Network(pod_cidr, strict=False))
        self.underlay_ip = underlay_ip
        self._open = netlink or _default_opener(node_netns)
        self._pod_mtu: int | None = None
        self._owners: dict[Entry, str] = {}
        self._last_skipped: dict[str, str] = {}
        self._device_seen = False  # a device missing now was deleted by someone
        self._lock = threading.Lock()  # one reconcile (or teardown) at a time

    @property
    def pod_mtu(self) -> int:
        if self._pod_mtu is None:
            raise OverlayError(f"node {self.node_name}: overlay not set up yet, MTU unknown")
        return self._pod_mtu

    def _underlay(self, nl: OverlayNetlink) -> Underlay:
        found = nl.underlay(self.underlay_ip)
        if found is None:
            raise OverlayError(
                f"node {self.node_name}: no interface holds its underlay IP {self.underlay_ip}"
            )
        return found

    def _peers(self, nodes: Iterable[Any]) -> PeerSet:
        raise NotImplementedError

    def _prepare(self, nl: OverlayNetlink) -> tuple[Underlay, bool]:
        """Underlay found, device ready: (underlay, whether the device was created)."""
        raise NotImplementedError

    def _desired(self, peers: Iterable[Peer], underlay: Underlay) -> dict[Entry, str]:
        raise NotImplementedError

    def _observed(self, nl: OverlayNetlink) -> set[Entry]:
        raise NotImplementedError

    async def setup(self) -> None:
        await asyncio.to_thread(self._setup_sync)

    def _setup_sync(self) -> None:
        with self._lock, self._open() as nl:
            self._prepare(nl)

    async def sync(self, nodes: Iterable[Any]) -> SyncReport:
        nodes = list(nodes)  # the caller's cache may change while the thread runs
        return await asyncio.to_thread(self._sync_sync, nodes)

    def _sync_sync(self, nodes: list[Any]) -> SyncReport:
        with self._lock, self._open() as nl:
            underlay, created = self._prepare(nl)
            peers = self._peers_logged(nodes)
            report = SyncReport(
                peers=sorted(peers.peers), skipped=peers.skipped, created_device=created
            )
            desired = self._desired(peers.peers.values(), underlay)
            for op in plan(self._observed(nl), desired, self._owners):
                if op.peer in report.failed and op.action == "add":
                    continue  # its earlier entry failed: the later ones need it
                try:
                    (nl.add if op.action == "add" else nl.remove)(op.entry)
                except Exception as exc:
                    who = op.peer or str(op.entry)
                    report.failed[who] = f"node {self.node_name}: {op}: {exc}"
                    log.warning("%s", report.failed[who])
                    continue
                report.applied.append(op)
                log.info("node %s: %s", self.node_name, op)
            self._owners = dict(desired)
            return report

    def _peers_logged(self, nodes: list[Any]) -> PeerSet:
        peers = self._peers(nodes)
        changed = {n: r for n, r in peers.skipped.items() if self._last_skipped.get(n) != r}
        for name, reason in sorted(changed.items()):
            log.warning("node %s: not reaching node %s: %s", self.node_name, name, reason)
        self._last_skipped = dict(peers.skipped)
        return peers

    async def teardown(self) -> None:
        await asyncio.to_thread(self._teardown_sync)

    def _teardown_sync(self) -> None:
        with self._lock, self._open() as nl:
            for route in sorted(nl.routes(RTPROT_ORCH)):
                nl.remove(route)
            self._remove_device(nl)
            self._owners = {}
            self._device_seen = False

    def _remove_device(self, nl: OverlayNetlink) -> None:
        pass


class VxlanOverlay(_Base):
    """flannel's vxlan backend (see the module docstring).

    node_netns: None in the agent (it runs in the node's namespace); a netns
    path in tests. netlink: an opener returning an OverlayNetlink session
    (tests pass a fake)."""

    backend = BACKEND_VXLAN

    def __init__(
        self,
        node_name: str,
        pod_cidr: str,
        underlay_ip: str,
        *,
        vni: int = DEFAULT_VNI,
        port: int = DEFAULT_PORT,
        device: str = DEFAULT_DEVICE,
        node_netns: str | None = None,
        netlink: NetlinkOpener | None = None,
    ) -> None:
        super().__init__(node_name, pod_cidr, underlay_ip, node_netns=node_netns, netlink=netlink)
        if len(device) > 15:
            raise OverlayError(f"device name {device!r} is longer than 15 characters")
        self.vni = vni
        self.port = port
        self.encapsulation_udp_port = port
        self.device = device
        self.vtep_mac = vtep_mac(self.pod_cidr)
        self.address = subnet_address(self.pod_cidr)

    def node_annotations(self) -> dict[str, str]:
        return overlay_annotations(
            self.backend, self.underlay_ip, vtep=self.vtep_mac, vni=self.vni, port=self.port
        )

    def _peers(self, nodes: Iterable[Any]) -> PeerSet:
        return peers_from_nodes(
            nodes,
            self_name=self.node_name,
            backend=self.backend,
            own_pod_cidr=self.pod_cidr,
            own_underlay_ip=self.underlay_ip,
            vni=self.vni,
            port=self.port,
        )

    def _spec(self, underlay: Underlay) -> VxlanSpec:
        return VxlanSpec(
            name=self.device,
            vni=self.vni,
            port=self.port,
            local=self.underlay_ip,
            lower=underlay.index,
            mac=self.vtep_mac,
            mtu=underlay.mtu - VXLAN_OVERHEAD,
        )

    def _prepare(self, nl: OverlayNetlink) -> tuple[Underlay, bool]:
        underlay = self._underlay(nl)
        if self._pod_mtu is None:
            self._pod_mtu = underlay.mtu - VXLAN_OVERHEAD
        spec = self._spec(underlay)
        link = nl.link(self.device)
        if link is None and self._device_seen:
            log.warning(
                "node %s: %s was deleted: recreating it and every peer's entries",
                self.node_name,
                self.device,
            )
        elif link is not None:
            if link.kind != "vxlan":
                raise OverlayError(
                    f"node {self.node_name}: {self.device} exists but is a {link.kind} "
                    "device, not vxlan: remove it or configure another device name"
                )
            why = vxlan_mismatch(link, spec)
            if why is not None:
                log.warning("node %s: recreating %s: %s", self.node_name, self.device, why)
                nl.delete_link(self.device)
                link = None
        created = link is None
        if link is None:
            nl.add_vxlan(spec)
            link = nl.link(self.device)
            if link is None:
                raise OverlayError(f"node {self.node_name}: {self.device} vanished on creation")
        self._device_seen = True
        self._configure(nl, link, spec)
        return underlay, created

    def _configure(self, nl: OverlayNetlink, link: LinkInfo, spec: VxlanSpec) -> None:
        if link.mtu != spec.mtu:
            nl.set_mtu(self.device, spec.mtu)
        want = (self.address, 32)
        for ip, plen in sorted(link.addresses - {want}):
            nl.del_address(self.device, ip, plen)
        if want not in link.addresses:
            nl.add_address(self.device, *want)
        if not link.up:
            nl.set_up(self.device)

    def _desired(self, peers: Iterable[Peer], underlay: Underlay) -> dict[Entry, str]:
        return vxlan_entries(peers, self.device)

    def _observed(self, nl: OverlayNetlink) -> set[Entry]:
        # Every route of ours counts, whatever its device: a host-gw route left
        # from before a backend switch is stale here too.
        return {*nl.neighs(self.device), *nl.fdb(self.device), *nl.routes(RTPROT_ORCH)}

    def _remove_device(self, nl: OverlayNetlink) -> None:
        link = nl.link(self.device)
        if link is not None and link.kind == "vxlan":
            nl.delete_link(self.device)


class HostGwOverlay(_Base):
    """Plain routes to each peer's pod CIDR via its underlay IP: no
    encapsulation (pod MTU = underlay MTU), but all nodes on one L2 segment.

    leftover_device: a VXLAN device from before a switch to host-gw, deleted
    at setup (its routes go with the first sync, being ours)."""

    backend = BACKEND_HOST_GW

    def __init__(
        self,
        node_name: str,
        pod_cidr: str,
        underlay_ip: str,
        *,
        leftover_device: str = DEFAULT_DEVICE,
        node_netns: str | None = None,
        netlink: NetlinkOpener | None = None,
    ) -> None:
        super().__init__(node_name, pod_cidr, underlay_ip, node_netns=node_netns, netlink=netlink)
        self.leftover_device = leftover_device
        self._network: str | None = None

    def node_annotations(self) -> dict[str, str]:
        return overlay_annotations(self.backend, self.underlay_ip)

    def _peers(self, nodes: Iterable[Any]) -> PeerSet:
        peers = peers_from_nodes(
            nodes,
            self_name=self.node_name,
            backend=self.backend,
            own_pod_cidr=self.pod_cidr,
            own_underlay_ip=self.underlay_ip,
        )
        if self._network is None:
            raise OverlayError(f"node {self.node_name}: host-gw overlay not set up")
        return refuse_off_subnet(peers, self._network)

    def _prepare(self, nl: OverlayNetlink) -> tuple[Underlay, bool]:
        underlay = self._underlay(nl)
        self._network = underlay.network
        if self._pod_mtu is None:
            self._pod_mtu = underlay.mtu
            leftover = nl.link(self.leftover_device)
            if leftover is not None and leftover.kind == "vxlan":
                log.info("node %s: deleting leftover %s", self.node_name, self.leftover_device)
                nl.delete_link(self.leftover_device)
        return underlay, False

    def _desired(self, peers: Iterable[Peer], underlay: Underlay) -> dict[Entry, str]:
        return hostgw_entries(peers, underlay.name)

    def _observed(self, nl: OverlayNetlink) -> set[Entry]:
        return set(nl.routes(RTPROT_ORCH))


def make_overlay(
    backend: str,
    node_name: str,
    pod_cidr: str,
    underlay_ip: str,
    *,
    vni: int = DEFAULT_VNI,
    port: int = DEFAULT_PORT,
    node_netns: str | None = None,
) -> VxlanOverlay | HostGwOverlay:
    if backend == BACKEND_VXLAN:
        return VxlanOverlay(
            node_name, pod_cidr, underlay_ip, vni=vni, port=port, node_netns=node_netns
        )
    if backend == BACKEND_HOST_GW:
        return HostGwOverlay(node_name, pod_cidr, underlay_ip, node_netns=node_netns)
    raise OverlayError(f"unknown overlay backend {backend!r} (vxlan or host-gw)")


# -- keeping it in sync ----------------------------------------------------------------


class OverlaySyncer:
    """Runs overlay.sync on every Node change (`on_node_event`, an informer
    handler) and every `interval` seconds regardless: that periodic pass is
    what recreates a deleted device and re-adds entries someone flushed."""

    def __init__(
        self,
        overlay: Overlay,
        nodes: Callable[[], Iterable[Any]],
        *,
        interval: float = 10.0,
    ) -> None:
        self.overlay = overlay
        self.nodes = nodes
        self.interval = interval
        self.last: SyncReport | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def trigger(self) -> None:
        self._wake.set()

    def on_node_event(self, _type: str, _node: Any, _old: Any) -> None:
        self.trigger()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="overlay-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.last = await self.overlay.sync(self.nodes())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("overlay sync failed, will retry: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
