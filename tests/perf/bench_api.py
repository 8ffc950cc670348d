"""API benchmark: the real control plane over mutual TLS on the SQLite store,
against raw etcd measured in the same run.

Figures: create throughput and p50/p99 latency with 1 and 32 concurrent
clients; time for one write to reach 100 and 1,000 watchers (p50/p99);
raw etcd puts at the same concurrency and the ratios; control-plane RSS with
10,000 stored pods. Targets (issue 2): >= 1,000 creates/s with 32 clients,
create p99 <= 100 ms, watch delivery p99 to 1,000 watchers <= 500 ms,
RSS with 10,000 pods < 300 MB.

    python tests/perf/bench_api.py [--quick] [--out bench-results/bench_api.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from orchestrator.api import codec  # noqa: E402
from orchestrator.client.client import Client  # noqa: E402
from tests.support.controlplane import ControlPlane  # noqa: E402
from tests.support.etcd import EtcdProcess  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def pod(name: str, namespace: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox:1.36",
                        "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}},
                    }
                ]
            },
        }
    )


def config_map(name: str, namespace: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"key": "value"},
        }
    )


async def ensure_namespace(client: Client, name: str) -> None:
    await client.create(
        codec.from_dict(
            {  # type: ignore[arg-type]
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name},
            }
        )
    )


async def bench_creates(cp: ControlPlane, concurrency: int, total: int, ns: str) -> dict[str, Any]:
    clients = [Client(cp.connection()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.version() for c in clients))  # connect first
        latencies: list[float] = []
        per_client = total // concurrency
        # Build the object once: the benchmark measures the API, not YAML parsing
        # in the load generator (which shares the machine's two cores).
        template = pod("template", ns)

        async def run(idx: int, client: Client) -> None:
            for i in range(per_client):
                obj = type(template)()
                obj.CopyFrom(template)
                obj.metadata.name = f"p-{idx}-{i}"
                t0 = time.perf_counter()
                await client.create(obj)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return {
        "clients": concurrency,
        "creates": len(latencies),
        "creates_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p99_ms": round(pct(latencies, 99) * 1000, 2),
    }


async def bench_etcd_puts(endpoint: str, concurrency: int, total: int) -> dict[str, Any]:
    import aetcd

    host, port = endpoint.rsplit(":", 1)
    clients = [aetcd.Client(host=host, port=int(port)) for _ in range(concurrency)]
    payload = pod("p", "bench").SerializeToString()  # the same bytes we store per pod
    latencies: list[float] = []
    per_client = total // concurrency
    try:
        for c in clients:
            await c.connect()

        async def run(idx: int, client: Any) -> None:
            for i in range(per_client):
                t0 = time.perf_counter()
                await client.put(f"/bench/{idx}/{i}".encode(), payload)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
        elapsed = time.perf_counter() - start
    finally:
        for c in clients:
            await c.close()
    return {
        "clients": concurrency,
        "puts": len(latencies),
        "puts_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p99_ms": round(pct(latencies, 99) * 1000, 2),
    }


async def bench_watch(cp: ControlPlane, watchers: int, writes: int, ns: str) -> dict[str, Any]:
    """Open `watchers` watch streams (spread over a few connections), then make
    `writes` writes one at a time and time each one's arrival at every watcher."""
    channels = max(1, watchers // 100)
    clients = [Client(cp.connection(), timeout=60) for _ in range(channels)]
    arrivals: dict[str, list[float]] = {}
    ready = 0
    all_ready = asyncio.Event()

    async def watch(client: Client) -> None:
        nonlocal ready
        async for ev in client.watch("ConfigMap", ns, resource_version="0"):
            if ev.object is None:
                continue
            name = ev.object.metadata.name
            if name == f"ready-{watchers}":
                ready += 1
                if ready == watchers:
                    all_ready.set()
                continue
            arrivals.setdefault(name, []).append(time.perf_counter())

    tasks = [asyncio.create_task(watch(clients[i % channels])) for i in range(watchers)]
    latencies: list[float] = []
    try:
        async with Client(cp.connection()) as writer:
            await writer.create(config_map(f"ready-{watchers}", ns))
            async with asyncio.timeout(120):
                await all_ready.wait()
            for i in range(writes):
                name = f"w-{watchers}-{i}"
                t0 = time.perf_counter()
                await writer.create(config_map(name, ns))
                async with asyncio.timeout(30):
                    while len(arrivals.get(name, [])) < watchers:
                        await asyncio.sleep(0.001)
                latencies.extend(t - t0 for t in arrivals[name])
                await asyncio.sleep(0.05)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients))
    return {
        "watchers": watchers,
        "writes": writes,
        "p50_ms": round(pct(latencies, 50) * 1000, 2),
        "p99_ms": round(pct(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def fill_pods(cp: ControlPlane, target: int, ns: str, already: int) -> None:
    clients = [Client(cp.connection()) for _ in range(16)]
    try:
        remaining = max(0, target - already)
        per = remaining // len(clients) + 1

        template = pod("template", ns)

        async def run(idx: int, client: Client) -> None:
            for i in range(per):
                obj = type(template)()
                obj.CopyFrom(template)
                obj.metadata.name = f"fill-{idx}-{i}"
                await client.create(obj)

        await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    scale = 0.2 if args.quick else 1.0
    results: dict[str, Any] = {"machine": {"cpus": __import__("os").cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        cp = ControlPlane(Path(tmp) / "cp")
        cp.start()
        try:
            assert cp.proc is not None
            async with cp.client() as admin:
                for ns in ("c1", "c32", "watch", "fill"):
                    await ensure_namespace(admin, ns)
            print("create throughput (ours, SQLite, mTLS)...", flush=True)
            results["create_1"] = await bench_creates(cp, 1, int(1000 * scale), "c1")
            print(" ", results["create_1"], flush=True)
            results["create_32"] = await bench_creates(cp, 32, int(10240 * scale), "c32")
            print(" ", results["create_32"], flush=True)
            print("watch delivery...", flush=True)
            results["watch_100"] = await bench_watch(cp, 100, int(20 * max(scale, 0.5)), "watch")
            print(" ", results["watch_100"], flush=True)
            results["watch_1000"] = await bench_watch(cp, 1000, int(20 * max(scale, 0.5)), "watch")
            print(" ", results["watch_1000"], flush=True)
            stored = results["create_1"]["creates"] + results["create_32"]["creates"]
            target = int(10000 * scale)
            print(f"filling to {target} pods for RSS...", flush=True)
            await fill_pods(cp, target, "fill", stored)
            results["rss_mb_with_pods"] = {"pods": target, "rss_mb": round(rss_mb(cp.proc.pid), 1)}
            print(" ", results["rss_mb_with_pods"], flush=True)
        finally:
            cp.stop()
        print("raw etcd puts (same concurrency)...", flush=True)
        async with EtcdProcess() as etcd:
            results["etcd_put_1"] = await bench_etcd_puts(etcd.endpoint, 1, int(1000 * scale))
            print(" ", results["etcd_put_1"], flush=True)
            results["etcd_put_32"] = await bench_etcd_puts(etcd.endpoint, 32, int(10240 * scale))
            print(" ", results["etcd_put_32"], flush=True)
    results["ratios"] = {
        "create_1_vs_etcd_put_1": round(
            results["create_1"]["creates_per_s"] / results["etcd_put_1"]["puts_per_s"], 3
        ),
        "create_32_vs_etcd_put_32": round(
            results["create_32"]["creates_per_s"] / results["etcd_put_32"]["puts_per_s"], 3
        ),
        "create_32_p99_vs_etcd_p99": round(
            results["create_32"]["p99_ms"] / results["etcd_put_32"]["p99_ms"], 3
        ),
    }
    results["targets"] = {
        "creates_per_s_32 >= 1000": results["create_32"]["creates_per_s"] >= 1000,
        "create_p99_ms_32 <= 100": results["create_32"]["p99_ms"] <= 100,
        "watch_1000_p99_ms <= 500": results["watch_1000"]["p99_ms"] <= 500,
        "rss_mb_10k_pods < 300": results["rss_mb_with_pods"]["rss_mb"] < 300,
    }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a fifth of the work (smoke run)")
    parser.add_argument("--out", default=str(REPO / "bench-results" / "bench_api.json"))
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
