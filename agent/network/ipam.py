"""Host-local IPAM over the node's pod CIDR, as CNI's host-local plugin does it.

One file per allocated address, named after the address and holding the pod
uid, so a restarted agent finds every allocation where it left it. In a /24,
.1 is the bridge's (the pods' gateway), .2 to .254 go to pods; the network
and broadcast addresses never do.

Addresses are handed out round-robin from the last one reserved rather than
lowest-free: a just-released address may still sit in peers' ARP caches,
conntrack entries and Service endpoints, so reusing it at once would send the
old pod's traffic to a new one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

LAST_RESERVED = "last_reserved_ip"


class IPAMError(Exception):
    pass


class PoolExhaustedError(IPAMError):
    def __init__(self, cidr: str, size: int) -> None:
        super().__init__(f"no free address left in pod CIDR {cidr} (all {size} are allocated)")
        self.cidr = cidr


class HostLocalIPAM:
    """Thread-safe: the agent calls it from worker threads."""

    def __init__(self, pod_cidr: str, state_dir: Path | str) -> None:
        try:
            net = ipaddress.ip_network(pod_cidr, strict=False)
        except ValueError as exc:
            raise IPAMError(f"invalid pod CIDR {pod_cidr!r}: {exc}") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise IPAMError(f"pod CIDR {pod_cidr} is not IPv4")
        if net.prefixlen > 30:
            raise IPAMError(
                f"pod CIDR {pod_cidr} is too small: it needs room for a gateway and pods"
            )
        self.network = net
        self.gateway = str(net.network_address + 1)
        self._first = int(net.network_address) + 2
        self._last = int(net.broadcast_address) - 1
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._by_uid: dict[str, str] = {}
        self._by_ip: dict[str, str] = {}
        self._load()

    @property
    def prefix_len(self) -> int:
        return self.network.prefixlen

    @property
    def size(self) -> int:
        return self._last - self._first + 1

    # -- queries -------------------------------------------------------------------

    def get(self, pod_uid: str) -> str | None:
        with self._lock:
            return self._by_uid.get(pod_uid)

    def allocations(self) -> dict[str, str]:
        """pod uid -> address, for every allocation on disk."""
        with self._lock:
            return dict(self._by_uid)

    # -- changes -------------------------------------------------------------------

    def allocate(self, pod_uid: str) -> str:
        """The pod's address: the one it already has, or the next free one."""
        if not pod_uid or "\n" in pod_uid:
            raise IPAMError(f"invalid pod uid {pod_uid!r}")
        with self._lock:
            if pod_uid in self._by_uid:
                return self._by_uid[pod_uid]
            start = self._start_after_last_reserved()
            for offset in range(self.size):
                n = self._first + (start - self._first + offset) % self.size
                ip = str(ipaddress.IPv4Address(n))
                if ip in self._by_ip:
                    continue
                if not self._claim(ip, pod_uid):
                    continue
                self._by_ip[ip] = pod_uid
                self._by_uid[pod_uid] = ip
                self._write_last_reserved(ip)
                return ip
            raise PoolExhaustedError(str(self.network), self.size)

    def release(self, pod_uid: str) -> str | None:
        """Free the pod's address; returns it, or None if it had none."""
        with self._lock:
            ip = self._by_uid.pop(pod_uid, None)
            if ip is None:
                return None
            self._by_ip.pop(ip, None)
            path = self.dir / ip
            # Only remove the file if it is still ours (never someone else's claim).
            with contextlib.suppress(FileNotFoundError):
                if path.read_text().strip() == pod_uid:
                    path.unlink()
            return ip

    # -- disk ----------------------------------------------------------------------

    def _claim(self, ip: str, pod_uid: str) -> bool:
        """Create the address's file exclusively, so two claimants cannot both win."""
        path = self.dir / ip
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, pod_uid.encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        os.close(fd)
        return True

    def _start_after_last_reserved(self) -> int:
        try:
            last = int(ipaddress.IPv4Address((self.dir / LAST_RESERVED).read_text().strip()))
        except (OSError, ValueError):
            return self._first
        if not self._first <= last <= self._last:
            return self._first
        return last + 1 if last < self._last else self._first

    def _write_last_reserved(self, ip: str) -> None:
        tmp = self.dir / f".{LAST_RESERVED}.tmp"
        tmp.write_text(ip)
        tmp.replace(self.dir / LAST_RESERVED)

    def _load(self) -> None:
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(".") or path.name == LAST_RESERVED or not path.is_file():
                continue
            try:
                addr = ipaddress.IPv4Address(path.name)
            except ValueError:
                continue
            uid = path.read_text().strip()
            in_range = self._first <= int(addr) <= self._last
            if not uid or not in_range or uid in self._by_uid:
                # A crash mid-claim, an address of a previous pod CIDR, or a
                # duplicate: none can be a live pod's address here.
                log.warning("dropping stale IPAM record %s (pod %r)", path.name, uid)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            self._by_uid[uid] = path.name
            self._by_ip[path.name] = uid
