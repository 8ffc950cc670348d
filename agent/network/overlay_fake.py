"""An in-memory OverlayNetlink for unit tests.

It keeps links and entries the way the kernel does where the overlay's
logic depends on it: entries live on a device and go when it is deleted, an
add for an existing key replaces it, removing what is gone is not an error.
Every effect is appended to `calls`, so tests can check order and count.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

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


class FakeOverlayNetlink:
    def __init__(self, underlay: Underlay) -> None:
        self.links: dict[str, LinkInfo] = {
            underlay.name: LinkInfo(
                name=underlay.name,
                index=underlay.index,
                kind="veth",
                mac="02:00:00:00:00:01",
                mtu=underlay.mtu,
                up=True,
                addresses=frozenset(
                    {(underlay.ip, ipaddress.ip_network(underlay.network).prefixlen)}
                ),
            )
        }
        self.entries: set[Entry] = set()
        self.proto: dict[Route, int] = {}
        self.calls: list[str] = []
        self.fail: dict[Entry, Exception] = {}  # entry -> what add/remove raises
        self._next_index = underlay.index + 100

    @contextmanager
    def open(self) -> Iterator[FakeOverlayNetlink]:
        yield self

    def add_foreign_route(self, route: Route, proto: int) -> None:
        """A route someone else (the kernel, an admin) put there."""
        self.entries.add(route)
        self.proto[route] = proto

    def _must(self, name: str) -> LinkInfo:
        if name not in self.links:
            raise OverlayError(f"interface {name} does not exist")
        return self.links[name]

    # -- OverlayNetlink ------------------------------------------------------------

    def link(self, name: str) -> LinkInfo | None:
        return self.links.get(name)

    def underlay(self, ip: str) -> Underlay | None:
        for link in self.links.values():
            for addr, plen in link.addresses:
                if addr == ip:
                    network = ipaddress.ip_interface(f"{addr}/{plen}").network
                    return Underlay(link.name, link.index, ip, str(network), link.mtu)
        return None

    def add_vxlan(self, spec: VxlanSpec) -> None:
        if spec.name in self.links:
            raise OverlayError(f"{spec.name} exists")
        self.calls.append(f"add vxlan {spec.name}")
        self._next_index += 1
        self.links[spec.name] = LinkInfo(
            name=spec.name,
            index=self._next_index,
            kind="vxlan",
            mac=spec.mac,
            mtu=spec.mtu,
            up=False,
            addresses=frozenset(),
            vni=spec.vni,
            port=spec.port,
            local=spec.local,
            learning=False,
            lower=spec.lower,
        )

    def delete_link(self, name: str) -> None:
        """Also what an admin's `ip link del` does: the entries go with it."""
        self.calls.append(f"delete link {name}")
        self.links.pop(name, None)
        self.entries = {e for e in self.entries if e.dev != name}

    def set_mtu(self, name: str, mtu: int) -> None:
        self.calls.append(f"set {name} mtu {mtu}")
        self.links[name] = replace(self._must(name), mtu=mtu)

    def set_up(self, name: str) -> None:
        self.calls.append(f"set {name} up")
        self.links[name] = replace(self._must(name), up=True)

    def add_address(self, name: str, ip: str, prefix_len: int) -> None:
        self.calls.append(f"add address {ip}/{prefix_len} dev {name}")
        link = self._must(name)
        self.links[name] = replace(link, addresses=link.addresses | {(ip, prefix_len)})

    def del_address(self, name: str, ip: str, prefix_len: int) -> None:
        self.calls.append(f"del address {ip}/{prefix_len} dev {name}")
        link = self._must(name)
        self.links[name] = replace(link, addresses=link.addresses - {(ip, prefix_len)})

    def neighs(self, dev: str) -> set[Neigh]:
        return {e for e in self.entries if isinstance(e, Neigh) and e.dev == dev}

    def fdb(self, dev: str) -> set[Fdb]:
        return {e for e in self.entries if isinstance(e, Fdb) and e.dev == dev}

    def routes(self, proto: int) -> set[Route]:
        return {e for e in self.entries if isinstance(e, Route) and self.proto.get(e) == proto}

    def add(self, entry: Entry) -> None:
        self._must(entry.dev)
        if entry in self.fail:
            raise self.fail[entry]
        self.calls.append(f"add {entry}")
        # The kernel's keys: a neighbour by address, an FDB entry by MAC, a
        # route by destination. Adding replaces whatever held the key.
        self.entries = {e for e in self.entries if _key(e) != _key(entry)}
        self.entries.add(entry)
        if isinstance(entry, Route):
            self.proto[entry] = RTPROT_ORCH

    def remove(self, entry: Entry) -> None:
        if entry in self.fail:
            raise self.fail[entry]
        self.calls.append(f"remove {entry}")
        self.entries.discard(entry)


def _key(entry: Entry) -> tuple[str, str, str]:
    if isinstance(entry, Neigh):
        return ("neigh", entry.dev, entry.ip)
    if isinstance(entry, Fdb):
        return ("fdb", entry.dev, entry.mac)
    return ("route", "", entry.dst)
