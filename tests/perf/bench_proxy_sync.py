"""Service proxy sync benchmark (issue 5): how long the node takes to program
N Services x E endpoints (a full sync: render + apply), and from one endpoint
change to rules in place at the largest N (an incremental sync), for each
backend through the same ServiceProxy:

- iptables-nft   (`iptables-restore`, Debian 12's default iptables)
- iptables-legacy (if `iptables-legacy-restore` exists)
- nftables       (`nft -f`, our own `ip orch-proxy` table)

Targets: full sync at 5,000 Services <= 5 s, endpoint change at 5,000 <= 0.5 s.
Wall-clock seconds are the figure compared with the targets; CPU seconds (this
process and its nft/iptables children) are printed too, because on a shared
machine wall time also measures everyone else's load.

    python -m tests.perf.bench_proxy_sync [--services 1000,5000] [--endpoints 10]
        [--out bench-results/bench_proxy_sync.json]

Needs root: each backend runs in a private network namespace `bpx-<hex>`
created here and deleted afterwards (with every rule in it), even on failure.
A backend whose run at the smallest size took more than --skip-after seconds
(default 30) is not run at larger sizes; each apply is killed after --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.network.proxy.iptables import IptablesCommands  # noqa: E402
from agent.network.proxy.model import Endpoint, ServicePort  # noqa: E402
from agent.network.proxy.nftables import NftCommands  # noqa: E402
from agent.network.proxy.proxier import ServiceProxy  # noqa: E402

CLUSTER_CIDR = "10.244.0.0/16"
FULL_TARGET = 5.0
CHANGE_TARGET = 0.5


def service_ports(n: int, per: int) -> dict[ServicePort, tuple[Endpoint, ...]]:
    """n ClusterIP Services (every tenth also a NodePort) of `per` endpoints."""
    out: dict[ServicePort, tuple[Endpoint, ...]] = {}
    for s in range(n):
        sp = ServicePort(
            f"ns{s % 50}",
            f"svc{s}",
            "http",
            "TCP",
            f"10.96.{s // 250}.{s % 250 + 1}",
            80,
            node_port=30000 + s // 10 if s % 10 == 0 else 0,
        )
        first = s * per
        out[sp] = tuple(
            Endpoint(f"10.{244 + g // 62500}.{g // 250 % 250}.{g % 250 + 1}", 8080)
            for g in range(first, first + per)
        )
    return out


class Fixed:
    """A ServiceProxy whose desired state is set directly (no informers)."""

    def __init__(self, proxy: ServiceProxy) -> None:
        self.proxy = proxy
        self.ports: dict[ServicePort, tuple[Endpoint, ...]] = {}
        proxy.desired = lambda: dict(self.ports)  # type: ignore[method-assign]


def cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


async def timed_sync(proxy: ServiceProxy, *, full: bool) -> dict[str, Any]:
    c0, t0 = cpu(), time.monotonic()
    ok = await proxy.sync(full=full)
    wall, used = time.monotonic() - t0, cpu() - c0
    stats = proxy.last_sync
    return {
        "ok": ok,
        "seconds": round(wall, 3),
        "cpu_seconds": round(used, 3),
        "render_seconds": round(stats.render_seconds, 3) if stats and ok else None,
        "bytes": stats.restore_bytes if stats and ok else None,
        "chains_written": stats.chains_written if stats and ok else None,
    }


@contextmanager
def netns() -> Iterator[str]:
    name = f"bpx-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def make_proxy(backend: str, ns: str, timeout: float) -> ServiceProxy:
    if backend == "nftables":
        return ServiceProxy(
            None,
            "bench",
            cluster_cidr=CLUSTER_CIDR,
            mode="nftables",
            nft=NftCommands(netns=ns, timeout=timeout),
            conntrack=None,
        )
    flavour = {"iptables-nft": "nft", "iptables-legacy": "legacy"}[backend]
    return ServiceProxy(
        None,
        "bench",
        cluster_cidr=CLUSTER_CIDR,
        mode="iptables",
        iptables=IptablesCommands(netns=ns, backend=flavour, timeout=timeout),
        conntrack=None,
    )


async def bench_backend(
    backend: str, sizes: list[int], per: int, timeout: float, skip_after: float
) -> dict[str, Any]:
    result: dict[str, Any] = {"full": {}, "change": None, "skipped": {}}
    for i, n in enumerate(sizes):
        if i > 0:
            prev = result["full"].get(str(sizes[i - 1]))
            if prev is None or not prev["ok"] or prev["seconds"] > skip_after:
                why = (
                    f"skipped: {sizes[i - 1]} Services took "
                    + (f"{prev['seconds']:.1f} s" if prev and prev["ok"] else "too long (failed)")
                    + f" (> {skip_after:.0f} s)"
                )
                result["skipped"][str(n)] = why
                print(f"  {backend} at {n}: {why}", flush=True)
                continue
        with netns() as ns:
            proxy = make_proxy(backend, ns, timeout)
            fixed = Fixed(proxy)
            fixed.ports = service_ports(n, per)
            print(f"  {backend}: full sync of {n} x {per} ...", flush=True)
            full = await timed_sync(proxy, full=True)
            result["full"][str(n)] = full
            print(f"    {full}", flush=True)
            if not full["ok"] or n != max(sizes):
                continue
            # one endpoint of one Service goes: the incremental sync that follows
            changes = []
            keys = list(fixed.ports)
            for k in (len(keys) // 3, len(keys) // 2, 2 * len(keys) // 3):
                sp = keys[k]
                fixed.ports[sp] = fixed.ports[sp][:-1]
                changes.append(await timed_sync(proxy, full=False))
            best = min((c for c in changes if c["ok"]), key=lambda c: c["seconds"], default=None)
            result["change"] = {"runs": changes, "best": best}
            print(f"    endpoint change: {[c['seconds'] for c in changes]}", flush=True)
    return result


def ratio(value: float | None, target: float) -> str:
    return "-" if value is None else f"{value:.2f}s ({value / target:.2f}x)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", default="1000,5000")
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--out", default="bench-results/bench_proxy_sync.json")
    parser.add_argument("--backends", default="iptables-nft,iptables-legacy,nftables")
    parser.add_argument("--timeout", type=float, default=180.0, help="per apply (s)")
    parser.add_argument("--skip-after", type=float, default=30.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = sorted(int(x) for x in args.services.split(","))
    tools = {
        "iptables-nft": "iptables-nft-restore",
        "iptables-legacy": "iptables-legacy-restore",
        "nftables": "nft",
    }
    results: dict[str, Any] = {}
    load = os.getloadavg()
    for backend in args.backends.split(","):
        if shutil.which(tools[backend]) is None:
            results[backend] = {"unavailable": f"{tools[backend]} not installed"}
            print(f"{backend}: {tools[backend]} not installed, skipped")
            continue
        print(f"{backend}:", flush=True)
        results[backend] = asyncio.run(
            bench_backend(backend, sizes, args.endpoints, args.timeout, args.skip_after)
        )

    big = max(sizes)
    print()
    print(
        f"Services x {args.endpoints} endpoints; targets: full sync at {big} <= "
        f"{FULL_TARGET:.0f} s, endpoint change at {big} <= {CHANGE_TARGET} s "
        f"(ratio = measured / target); load average at start {load[0]:.1f}"
    )
    header = ["backend", *[f"full {n}" for n in sizes], f"change @{big}", f"cpu full {big}"]
    rows = []
    for backend, r in results.items():
        if "unavailable" in r:
            rows.append([backend, r["unavailable"], *[""] * (len(header) - 2)])
            continue
        row = [backend]
        for n in sizes:
            f = r["full"].get(str(n))
            if f is None:
                row.append("skipped" if str(n) in r["skipped"] else "-")
            elif not f["ok"]:
                row.append(f"failed ({f['seconds']:.0f}s)")
            else:
                row.append(ratio(f["seconds"], FULL_TARGET) if n == big else f"{f['seconds']:.2f}s")
        best = (r.get("change") or {}).get("best")
        row.append(ratio(best["seconds"], CHANGE_TARGET) if best else "-")
        f = r["full"].get(str(big))
        row.append(f"{f['cpu_seconds']:.2f}s" if f and f["ok"] else "-")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "proxy_sync",
                "services": sizes,
                "endpoints": args.endpoints,
                "targets": {"full_sync_seconds": FULL_TARGET, "change_seconds": CHANGE_TARGET},
                "load_average_at_start": load,
                "nft_version": subprocess.run(
                    ["nft", "--version"], capture_output=True, text=True, check=False
                ).stdout.strip()
                if shutil.which("nft")
                else None,
                "kernel": os.uname().release,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
