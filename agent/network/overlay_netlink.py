"""OverlayNetlink over pyroute2 (blocking: call it from a worker thread).

One IPRoute socket per `open_netlink()` session, bound in the node's network
namespace: the current one (the agent runs inside it), or the one at a path
for tests. The latter makes pyroute2 fork a helper to create the socket, so
the agent itself never passes a namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.network.netlink import IPRoute, NetlinkError
from agent.network.overlay_types import (
    RTPROT_ORCH,
    Entry,
    Fdb,
    LinkInfo,
    Neigh,
    OverlayError,
    Route,
    Underlay,
    VxlanSpec,
)

NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 4
RT_TABLE_MAIN = 254
# What a remove may meet when the entry (or its device) is already gone.
_GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}


@contextmanager
def open_netlink(netns: str | None = None) -> Iterator[PyrouteNetlink]:
    """netns: a path such as /var/run/netns/NAME; None for the current one.
    flags=0: pyroute2 would otherwise create a namespace that is missing."""
    ipr = IPRoute() if netns is None else IPRoute(netns=netns, flags=0)
    try:
        yield PyrouteNetlink(ipr)
    finally:
        ipr.close()


class PyrouteNetlink:
    def __init__(self, ipr: Any) -> None:
        self.ipr = ipr

    def _index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def _must_index(self, name: str) -> int:
        index = self._index(name)
        if index is None:
            raise OverlayError(f"interface {name} does not exist")
        return index

    def _name(self, index: int, cache: dict[int, str]) -> str:
        if index not in cache:
            msg = self.ipr.link("get", index=index)[0]
            cache[index] = str(msg.get("IFLA_IFNAME"))
        return cache[index]

    # -- links ---------------------------------------------------------------------

    def link(self, name: str) -> LinkInfo | None:
        index = self._index(name)
        if index is None:
            return None
        try:
            msg = self.ipr.link("get", index=index)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        kind = msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
        addresses = frozenset(
            (str(a.get("IFA_ADDRESS")), int(a["prefixlen"]))
            for a in self.ipr.get_addr(index=index, family=socket.AF_INET)
        )
        info = LinkInfo(
            name=name,
            index=index,
            kind=str(kind) if kind is not None else None,
            mac=str(msg.get("IFLA_ADDRESS") or ""),
            mtu=int(msg.get("IFLA_MTU") or 0),
            up=msg.get("state") == "up",
            addresses=addresses,
        )
        if kind != "vxlan":
            return info
        data = msg.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
        learning = data.get("IFLA_VXLAN_LEARNING")
        return LinkInfo(
            **{
                **info.__dict__,
                "vni": data.get("IFLA_VXLAN_ID"),
                "port": data.get("IFLA_VXLAN_PORT"),
                "local": data.get("IFLA_VXLAN_LOCAL"),
                "learning": None if learning is None else bool(learning),
                "lower": data.get("IFLA_VXLAN_LINK"),
            }
        )

    def underlay(self, ip: str) -> Underlay | None:
        for addr in self.ipr.get_addr(family=socket.AF_INET):
            if addr.get("IFA_ADDRESS") != ip and addr.get("IFA_LOCAL") != ip:
                continue
            index = int(addr["index"])
            msg = self.ipr.link("get", index=index)[0]
            network = ipaddress.ip_interface(f"{ip}/{addr['prefixlen']}").network
            return Underlay(
                name=str(msg.get("IFLA_IFNAME")),
                index=index,
                ip=ip,
                network=str(network),
                mtu=int(msg.get("IFLA_MTU")),
            )
        return None

    def add_vxlan(self, spec: VxlanSpec) -> None:
        self.ipr.link(
            "add",
            ifname=spec.name,
            kind="vxlan",
            vxlan_id=spec.vni,
            vxlan_local=spec.local,
            vxlan_port=spec.port,
            vxlan_link=spec.lower,
            vxlan_learning=0,
            address=spec.mac,
            mtu=spec.mtu,
        )

    def delete_link(self, name: str) -> None:
        index = self._index(name)
        if index is None:
            return
        try:
            self.ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise

    def set_mtu(self, name: str, mtu: int) -> None:
        self.ipr.link("set", index=self._must_index(name), mtu=mtu)

    def set_up(self, name: str) -> None:
        self.ipr.link("set", index=self._must_index(name), state="up")

    def add_address(self, name: str, ip: str, prefix_len: int) -> None:
        self.ipr.addr("replace", index=self._must_index(name), address=ip, prefixlen=prefix_len)

    def del_address(self, name: str, ip: str, prefix_len: int) -> None:
        try:
            self.ipr.addr("del", index=self._must_index(name), address=ip, prefixlen=prefix_len)
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise

    # -- entries -------------------------------------------------------------------

    def neighs(self, dev: str) -> set[Neigh]:
        index = self._index(dev)
        if index is None:
            return set()
        return {
            Neigh(dev=dev, ip=str(n.get("NDA_DST")), mac=str(n.get("NDA_LLADDR")))
            for n in self.ipr.neigh("dump", ifindex=index, family=socket.AF_INET)
            if n["ifindex"] == index
            and n["state"] & NUD_PERMANENT
            and n.get("NDA_LLADDR") is not None
        }

    def fdb(self, dev: str) -> set[Fdb]:
        index = self._index(dev)
        if index is None:
            return set()
        return {
            Fdb(dev=dev, mac=str(n.get("NDA_LLADDR")), dst=str(n.get("NDA_DST")))
            for n in self.ipr.fdb("dump", ifindex=index)
            if n["ifindex"] == index and n.get("NDA_DST") is not None
        }

    def routes(self, proto: int) -> set[Route]:
        names: dict[int, str] = {}
        found = set()
        for r in self.ipr.route("dump", family=socket.AF_INET, table=RT_TABLE_MAIN):
            if r["proto"] != proto or r.get("RTA_OIF") is None:
                continue
            found.add(
                Route(
                    dev=self._name(int(r.get("RTA_OIF")), names),
                    dst=f"{r.get('RTA_DST') or '0.0.0.0'}/{r['dst_len']}",
                    gateway=str(r.get("RTA_GATEWAY")),
                    onlink=bool(r["flags"] & RTNH_F_ONLINK),
                )
            )
        return found

    def add(self, entry: Entry) -> None:
        index = self._must_index(entry.dev)
        if isinstance(entry, Neigh):
            self.ipr.neigh(
                "replace", ifindex=index, dst=entry.ip, lladdr=entry.mac, state=NUD_PERMANENT
            )
        elif isinstance(entry, Fdb):
            # state and flags spelled out: pyroute2 fills them in for "add" only,
            # and without NTF_SELF the kernel looks for a bridge master (EOPNOTSUPP).
            self.ipr.fdb(
                "replace",
                ifindex=index,
                lladdr=entry.mac,
                dst=entry.dst,
                state=NUD_PERMANENT | NUD_NOARP,
                flags=NTF_SELF,
            )
        else:
            self.ipr.route(
                "replace",
                dst=entry.dst,
                gateway=entry.gateway,
                oif=index,
                flags=RTNH_F_ONLINK if entry.onlink else 0,
                proto=RTPROT_ORCH,
                table=RT_TABLE_MAIN,
            )

    def remove(self, entry: Entry) -> None:
        index = self._index(entry.dev)
        if index is None:
            return  # the device went, and its entries with it
        try:
            if isinstance(entry, Neigh):
                self.ipr.neigh("del", ifindex=index, dst=entry.ip, lladdr=entry.mac)
            elif isinstance(entry, Fdb):
                self.ipr.fdb(
                    "del",
                    ifindex=index,
                    lladdr=entry.mac,
                    dst=entry.dst,
                    state=NUD_PERMANENT | NUD_NOARP,
                    flags=NTF_SELF,
                )
            else:
                self.ipr.route(
                    "del",
                    dst=entry.dst,
                    gateway=entry.gateway,
                    oif=index,
                    proto=RTPROT_ORCH,
                    table=RT_TABLE_MAIN,
                )
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise
