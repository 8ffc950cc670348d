"""The node's pod network: one Linux bridge, a veth pair per pod.

The bridge (`orch0` by default) holds the gateway address, the first of the
node's pod CIDR. Each pod gets a veth pair created straight across: the host
end `veth<8 hex>` on the bridge with hairpin on (a pod reaching itself
through a Service comes back out of the port it went in by), the other end
created directly inside the pod's namespace as `eth0`, with the pod's address
and a default route via the gateway.

pyroute2 blocks: every netlink exchange runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.network.hostfw import HostFirewall, netns_path
from agent.network.hostports import HostPorts, PortMapping
from agent.network.ipam import HostLocalIPAM
from agent.network.netlink import IPRoute, NetlinkError
from agent.network.types import PodNetworkStatus

log = logging.getLogger(__name__)

POD_IFNAME = "eth0"
BRIDGE_MODE_HAIRPIN = 1  # IFLA_BRPORT_MODE


class PodNetworkError(Exception):
    pass


def host_veth_name(pod_uid: str) -> str:
    """`veth` + 8 hex chars derived from the uid: fits IFNAMSIZ and is stable
    across agent restarts, whatever characters the uid holds."""
    return "veth" + hashlib.sha256(pod_uid.encode()).hexdigest()[:8]


def mac_for_ip(ip: str) -> str:
    """0a:58 + the IPv4 address, as CNI's bridge plugin derives the gateway MAC:
    locally administered, and the same each time the bridge is re-created."""
    octets = [int(o) for o in ip.split(".")]
    return ":".join(f"{b:02x}" for b in (0x0A, 0x58, *octets))


def _ns_ipr(path: str) -> IPRoute:
    """Netlink in the namespace at path. flags=0: pyroute2 would otherwise
    *create* a namespace that is missing (O_CREAT is its default)."""
    return IPRoute(netns=path, flags=0)


class PodSide:
    """Commands inside a pod's network namespace, through `nsenter` + iproute2.

    Not pyroute2's netns support: it forks the agent to enter the namespace,
    and forking a process with gRPC threads running can deadlock or kill it
    (seen: an agent vanished mid-setup). fork+exec of a small tool is safe."""

    def __init__(self, netns_path: str) -> None:
        self.netns_path = netns_path

    def ip(self, *args: str) -> str:
        cmd = ["nsenter", f"--net={self.netns_path}", "ip", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        if out.returncode != 0:
            raise PodNetworkError(f"{' '.join(cmd)}: {out.stderr.strip() or out.returncode}")
        return out.stdout

    def link(self, ifname: str) -> dict[str, Any] | None:
        """`ip -j -d link show` of one interface, or None if it is absent."""
        cmd = ["nsenter", f"--net={self.netns_path}", "ip", "-j", "link", "show", "dev", ifname]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        if out.returncode != 0:
            if not os.path.exists(self.netns_path):
                raise PodNetworkError(f"network namespace {self.netns_path} does not exist")
            return None
        links = json.loads(out.stdout or "[]")
        return links[0] if links else None


def _first(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _kind(link: Any) -> str | None:
    kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
    return str(kind) if kind is not None else None


def _ensure_only_address(ipr: Any, index: int, address: str, prefix_len: int) -> None:
    """The interface carries exactly this IPv4 address (left-overs of an earlier
    pod CIDR would route the wrong range here)."""
    present = False
    for addr in ipr.get_addr(index=index, family=2):
        ip, plen = addr.get("IFA_ADDRESS"), addr["prefixlen"]
        if ip == address and plen == prefix_len:
            present = True
        else:
            ipr.addr("del", index=index, address=ip, prefixlen=plen)
    if not present:
        ipr.addr("add", index=index, address=address, prefixlen=prefix_len)


class BridgeNetwork:
    """PodNetwork over a Linux bridge in the node's network namespace.

    node_netns: None for the current namespace (the agent runs inside the
    node's), or a netns name/path to work in another one (tests).
    cluster_cidr: when given, pod traffic to it is not masqueraded (pods on
    other nodes see the real source); otherwise only the node's range is exempt."""

    def __init__(
        self,
        pod_cidr: str,
        state_dir: Path | str,
        *,
        bridge: str = "orch0",
        mtu: int = 1500,
        node_netns: str | None = None,
        cluster_cidr: str | None = None,
        hostports: HostPorts | None = None,
        untracked_udp_port: int | None = None,
    ) -> None:
        self.ipam = HostLocalIPAM(pod_cidr, Path(state_dir) / "ipam")
        self.hostports = hostports
        self.supports_host_ports = hostports is not None
        self.pod_cidr = str(self.ipam.network)
        self.gateway = self.ipam.gateway
        self.prefix_len = self.ipam.prefix_len
        self.bridge = bridge
        self.bridge_mac = mac_for_ip(self.gateway)
        self.mtu = mtu
        self.node_netns = node_netns
        self.firewall = HostFirewall(
            self.pod_cidr,
            cluster_cidr=cluster_cidr,
            node_netns=node_netns,
            untracked_udp_port=untracked_udp_port,
        )
        # Bridge creation is check-then-act: serialize it across pod workers.
        self._bridge_lock = threading.Lock()

    def _node_ipr(self) -> IPRoute:
        if self.node_netns is None:
            return IPRoute()
        return _ns_ipr(netns_path(self.node_netns))

    # -- the bridge ------------------------------------------------------------------

    async def ensure_bridge(self) -> None:
        """Bridge up with the gateway address, sysctls, FORWARD accepts and
        MASQUERADE. Call once at agent start; setup() re-checks the bridge."""
        await asyncio.to_thread(self._ensure_bridge_and_host)

    def _ensure_bridge_and_host(self) -> None:
        with self._node_ipr() as ipr:
            index, created = self._ensure_bridge_link(ipr)
            if created:
                self._reattach_pods(ipr, index)
        self.firewall.ensure()

    def _ensure_bridge_link(self, ipr: Any) -> tuple[int, bool]:
        """(bridge ifindex, whether it had to be created)."""
        with self._bridge_lock:
            created = False
            index = _first(ipr, self.bridge)
            if index is not None:
                link = ipr.link("get", index=index)[0]
                if _kind(link) != "bridge":
                    raise PodNetworkError(
                        f"{self.bridge} exists but is a {_kind(link)} device, not a bridge"
                    )
            else:
                try:
                    ipr.link("add", ifname=self.bridge, kind="bridge", mtu=self.mtu)
                    created = True
                    log.info("created bridge %s for pod CIDR %s", self.bridge, self.pod_cidr)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
                index = _first(ipr, self.bridge)
                if index is None:
                    raise PodNetworkError(f"bridge {self.bridge} vanished right after creation")
            _ensure_only_address(ipr, index, self.gateway, self.prefix_len)
            link = ipr.link("get", index=index)[0]
            if link.get("IFLA_ADDRESS") != self.bridge_mac:
                # An explicitly set address stays put; otherwise the kernel gives
                # the bridge its lowest port's MAC, which changes as pods come
                # and go and leaves the pods' ARP entries for the gateway stale.
                ipr.link("set", index=index, address=self.bridge_mac)
            if link.get("IFLA_MTU") != self.mtu:
                ipr.link("set", index=index, mtu=self.mtu)
            if link.get("state") != "up":
                ipr.link("set", index=index, state="up")
            return index, created

    def _reattach_pods(self, ipr: Any, bridge_index: int, *, skip: str = "") -> None:
        """A deleted bridge leaves the running pods' veths without a master:
        put them on the new one."""
        for uid in self.ipam.allocations():
            if uid == skip:
                continue
            index = _first(ipr, host_veth_name(uid))
            if index is None:
                continue
            try:
                ipr.link("set", index=index, master=bridge_index)
                ipr.brport("set", index=index, mode=BRIDGE_MODE_HAIRPIN)
                ipr.link("set", index=index, state="up")
            except NetlinkError as exc:
                log.warning("re-attaching %s to %s: %s", host_veth_name(uid), self.bridge, exc)

    # -- PodNetwork ------------------------------------------------------------------

    async def setup(
        self, pod_uid: str, netns_path: str, port_mappings: Sequence[PortMapping] = ()
    ) -> PodNetworkStatus:
        had = self.ipam.get(pod_uid)
        ip = await asyncio.to_thread(self.ipam.allocate, pod_uid)
        try:
            await asyncio.to_thread(self._setup_sync, pod_uid, netns_path, ip)
            # Only pods with host ports touch nft (ports cannot change on a pod);
            # without hostports support the kubelet warns of them instead.
            if self.hostports is not None and port_mappings:
                await self.hostports.set_pod(pod_uid, ip, port_mappings)
        except Exception:
            # Nobody has seen a freshly allocated address yet: give it back.
            if had is None:
                await asyncio.to_thread(self._delete_host_veth, pod_uid)
                await asyncio.to_thread(self.ipam.release, pod_uid)
            raise
        return PodNetworkStatus(ip=ip, gateway=self.gateway, prefix_len=self.prefix_len)

    def _setup_sync(self, pod_uid: str, pod_netns: str, ip: str) -> None:
        host_name = host_veth_name(pod_uid)
        with self._node_ipr() as ipr:
            bridge_index, recreated = self._ensure_bridge_link(ipr)
            if recreated:
                self._reattach_pods(ipr, bridge_index, skip=pod_uid)
                # Whoever deleted the bridge may have flushed our rules too.
                self.firewall.ensure()
            pod = PodSide(pod_netns)
            host_index = self._ensure_veth_pair(ipr, pod, host_name, pod_netns)
            ipr.link("set", index=host_index, master=bridge_index, mtu=self.mtu)
            ipr.brport("set", index=host_index, mode=BRIDGE_MODE_HAIRPIN)
            ipr.link("set", index=host_index, state="up")
            self._configure_pod_side(pod, ip)

    def _ensure_veth_pair(self, ipr: Any, pod: Any, host_name: str, pod_netns: str) -> int:
        """The host end's ifindex, after making sure it pairs with eth0 in the pod."""
        host_index = _first(ipr, host_name)
        pod_link = pod.link(POD_IFNAME)
        if host_index is not None and pod_link is not None:
            host_link = ipr.link("get", index=host_index)[0]
            if (
                _kind(host_link) == "veth"
                and host_link.get("IFLA_LINK") == pod_link.get("ifindex")
                and pod_link.get("link_index") == host_index
            ):
                return host_index  # already wired: a repeated setup
        # A host end left from an earlier sandbox, or an eth0 that is not our
        # peer: start clean.
        if host_index is not None:
            ipr.link("del", index=host_index)
        if pod_link is not None:
            pod.ip("link", "del", POD_IFNAME)
        ipr.link(
            "add",
            ifname=host_name,
            kind="veth",
            mtu=self.mtu,
            peer={"ifname": POD_IFNAME, "net_ns_fd": pod_netns, "mtu": self.mtu},
        )
        host_index = _first(ipr, host_name)
        if host_index is None:
            raise PodNetworkError(f"veth {host_name} vanished right after creation")
        return host_index

    def _configure_pod_side(self, pod: PodSide, ip: str) -> None:
        if pod.link(POD_IFNAME) is None:
            raise PodNetworkError(f"{POD_IFNAME} is missing in the pod's network namespace")
        pod.ip("link", "set", "lo", "up")
        pod.ip("addr", "flush", "dev", POD_IFNAME)
        pod.ip("addr", "add", f"{ip}/{self.prefix_len}", "dev", POD_IFNAME)
        # The MTU again: a reused veth may keep an old one (say, from another backend).
        pod.ip("link", "set", POD_IFNAME, "mtu", str(self.mtu), "up")
        pod.ip("route", "replace", "default", "via", self.gateway, "dev", POD_IFNAME)

    async def teardown(self, pod_uid: str, netns_path: str | None) -> None:
        if self.hostports is not None:
            try:
                await self.hostports.remove_pod(pod_uid)
            except Exception as exc:  # the address is released regardless
                log.warning("pod %s: unpublishing its host ports: %s", pod_uid, exc)
        # Deleting the host end takes the peer in the pod's namespace with it,
        # so the pod's namespace (which may be gone already) is not needed.
        await asyncio.to_thread(self._delete_host_veth, pod_uid)
        await asyncio.to_thread(self.ipam.release, pod_uid)

    def _delete_host_veth(self, pod_uid: str) -> None:
        with self._node_ipr() as ipr:
            index = _first(ipr, host_veth_name(pod_uid))
            if index is None:
                return
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise

    def pod_ip(self, pod_uid: str) -> str | None:
        return self.ipam.get(pod_uid)

    def allocations(self) -> dict[str, str]:
        """pod uid -> address, so the kubelet can release pods it no longer has."""
        return self.ipam.allocations()

    # -- removal -------------------------------------------------------------------

    async def remove(self) -> None:
        """Remove the bridge, every pod's host veth and our iptables chains
        (a node leaving the cluster). Allocations on disk stay."""
        await asyncio.to_thread(self._remove_sync)

    def _remove_sync(self) -> None:
        with self._node_ipr() as ipr:
            for uid in self.ipam.allocations():
                index = _first(ipr, host_veth_name(uid))
                if index is not None:
                    ipr.link("del", index=index)
            index = _first(ipr, self.bridge)
            if index is not None:
                ipr.link("del", index=index)
        self.firewall.remove_rules()
