"""Network namespaces, veth pairs, bridges and sysctls, through iproute2.

Commands that must run inside a namespace go through `nsenter --net=PATH`,
never `ip netns exec` (which remounts /sys and breaks dockerd)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy.local.layout import NETNS_DIR


class NetError(Exception):
    pass


def run(argv: list[str], *, timeout: float = 30.0, check: bool = True) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise NetError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise NetError(f"`{' '.join(argv)}` did not finish in {timeout:.0f}s") from None
    if check and out.returncode != 0:
        detail = (out.stderr or out.stdout).strip()
        raise NetError(f"`{' '.join(argv)}` failed: {detail}")
    return out.stdout


def path(netns: str) -> str:
    return str(NETNS_DIR / netns)


def nsenter(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={path(netns)}", *argv]


def _ip(netns: str | None, *args: str, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return run(argv, check=check)


# -- namespaces ----------------------------------------------------------------------


def exists(netns: str) -> bool:
    return Path(path(netns)).exists()


def list_all() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def add(netns: str) -> bool:
    """Create the namespace (with lo up). False if it already existed."""
    if exists(netns):
        return False
    run(["ip", "netns", "add", netns])
    _ip(netns, "link", "set", "lo", "up")
    return True


def delete(netns: str) -> None:
    if exists(netns):
        run(["ip", "netns", "delete", netns], check=False)
    # A crash between mount and rm can leave the file alone, or a stale mount over it.
    p = path(netns)
    if os.path.exists(p):
        subprocess.run(["umount", "-l", p], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            os.unlink(p)


def inode(netns: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path(netns))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(netns: str) -> list[int]:
    """Every process whose network namespace is this one."""
    want = inode(netns)
    if want is None:
        return []
    # A namespace file's (dev, ino) equals /proc/PID/ns/net's for its members, but only the
    # inode is comparable (the nsfs device differs between the bind mount and /proc).
    want_ino = want[1]
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == want_ino:
                pids.append(int(entry))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def sysctl(netns: str, key: str, value: str, *, check: bool = True) -> bool:
    """Set a per-namespace sysctl. Returns False (check=False) when the kernel lacks it."""
    try:
        run(nsenter(netns, ["sysctl", "-q", "-w", f"{key}={value}"]))
        return True
    except NetError:
        if check:
            raise
        return False


# -- links ---------------------------------------------------------------------------


def replace_route(netns: str, cidr: str, dev: str) -> None:
    _ip(netns, "route", "replace", cidr, "dev", dev)


def link_exists(name: str, netns: str | None = None) -> bool:
    out = _ip(netns, "-j", "link", "show", "dev", name, check=False)
    return bool(out.strip()) and out.strip() != "[]"


def link_kind(name: str, netns: str | None = None) -> str:
    out = _ip(netns, "-j", "-d", "link", "show", "dev", name, check=False)
    try:
        data: list[dict[str, Any]] = json.loads(out or "[]")
    except json.JSONDecodeError:
        return ""
    if not data:
        return ""
    return str(data[0].get("linkinfo", {}).get("info_kind", ""))


def add_veth(name: str, netns: str | None, peer: str, peer_netns: str) -> None:
    """A veth pair made straight across namespaces (no temporary names in the root
    namespace, so clusters made side by side never collide)."""
    args = ["link", "add", "name", name]
    if netns:
        args += ["netns", netns]
    args += ["type", "veth", "peer", "name", peer, "netns", peer_netns]
    _ip(None, *args)


def delete_link(name: str, netns: str | None = None) -> None:
    if link_exists(name, netns):
        _ip(netns, "link", "delete", "dev", name, check=False)


def add_bridge(name: str, netns: str) -> None:
    if not link_exists(name, netns):
        _ip(netns, "link", "add", "name", name, "type", "bridge")


def set_master(link: str, bridge: str, netns: str) -> None:
    _ip(netns, "link", "set", "dev", link, "master", bridge)


def set_up(link: str, netns: str | None = None) -> None:
    _ip(netns, "link", "set", "dev", link, "up")


def ensure_addr(cidr: str, link: str, netns: str | None = None) -> None:
    out = _ip(netns, "-j", "-4", "addr", "show", "dev", link)
    want_ip, _, plen = cidr.partition("/")
    for entry in json.loads(out or "[]"):
        for a in entry.get("addr_info", []):
            if a.get("local") == want_ip and str(a.get("prefixlen")) == plen:
                return
    _ip(netns, "addr", "add", cidr, "dev", link)


# -- the root namespace's view -------------------------------------------------------


def routed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every IPv4 network the root namespace already routes or holds an address in
    (the default route aside): a cluster LAN must overlap none of them."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    try:
        routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]")
        addrs = json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]")
    except (NetError, json.JSONDecodeError):
        return nets
    for r in routes:
        dst = str(r.get("dst", ""))
        if not dst or dst == "default" or r.get("type") in ("broadcast", "multicast"):
            continue
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(dst, strict=False)
            if not net.is_loopback:
                nets.append(net)
    for entry in addrs:
        for a in entry.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
                if not net.is_loopback:
                    nets.append(net)
    return nets


def tcp_connects(netns: str, host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a TCP connection from inside netns to host:port succeeds."""
    code = (
        "import socket,sys\n"
        f"s=socket.create_connection(({host!r},{port}),timeout={timeout})\n"
        "s.close()\n"
    )
    try:
        out = subprocess.run(
            nsenter(netns, [sys.executable, "-c", code]),
            capture_output=True,
            timeout=timeout + 10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0
