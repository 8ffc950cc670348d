"""Pod start benchmark (issue 3): 20 pods bound to one node, from create to
all Running, against the same node's Docker engine in the same run: 20 raw
`docker run -d` in parallel, and Docker Swarm `service create --replicas 20`
until 20/20. Also the agent's RSS with 20 running pods.

Targets: ours / raw <= 1.5, ours / Swarm <= 0.7, agent RSS < 80 MB.

A third peer shows what the pod model itself costs on this engine: 20 pods
made straight through the Docker API the way any Kubernetes-style runtime
must (a sandbox container holding the network namespace plus the app
container joined to it, 20 at once, no orchestration at all). Swarm starts
one container per task, so ours / Swarm can be no better than this floor /
Swarm.

    python tests/perf/bench_pod_start.py [--pods 20] [--out bench-results/bench_pod_start.json]

Needs root: it brings up a one-node local cluster (deploy/local) and removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from orchestrator.api import codec  # noqa: E402
from orchestrator.client.client import Client  # noqa: E402
from orchestrator.client.config import ConfigFile  # noqa: E402

IMAGE = "busybox:1.36"


def pod(name: str, ns: str, node: str) -> Any:
    return codec.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}],
            },
        }
    )


async def bench_ours(conn: Any, node: str, count: int) -> float:
    ns = f"bench-{secrets.token_hex(3)}"
    async with Client(conn, timeout=60) as client:
        await client.create(
            codec.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        )
        start = time.perf_counter()
        await asyncio.gather(*(client.create(pod(f"p{i}", ns, node)) for i in range(count)))
        async with asyncio.timeout(300):
            while True:
                pods = (await client.list("Pod", ns)).items
                if sum(p.status.phase == "Running" for p in pods) == count:
                    break
                await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
    return elapsed


async def cleanup_ours(conn: Any) -> None:
    async with Client(conn, timeout=60) as client:
        for ns in (await client.list("Namespace")).items:
            if ns.metadata.name.startswith("bench-"):
                await client.delete("Namespace", ns.metadata.name)


def docker(host: str, *args: str, timeout: float = 120) -> str:
    out = subprocess.run(
        ["docker", "-H", host, *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return out.stdout


def bench_raw(host: str, count: int) -> float:
    tag = secrets.token_hex(3)
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        list(
            pool.map(
                lambda i: docker(
                    host,
                    "run",
                    "-d",
                    "--network",
                    "none",
                    "--name",
                    f"raw-{tag}-{i}",
                    IMAGE,
                    "sleep",
                    "3600",
                ),
                range(count),
            )
        )
    elapsed = time.perf_counter() - start
    ids = docker(host, "ps", "-aq", "--filter", f"name=raw-{tag}-").split()
    if ids:
        docker(host, "rm", "-f", *ids)
    return elapsed


def bench_pod_floor(host: str, count: int) -> float:
    """20 sandbox + app container pairs straight through the Docker API."""
    import docker as docker_sdk

    api = docker_sdk.APIClient(base_url=host, version="auto", max_pool_size=count * 2)
    tag = secrets.token_hex(3)

    def one_pod(i: int) -> None:
        sandbox = api.create_container(
            IMAGE,
            ["sleep", "3600"],
            name=f"floor-{tag}-{i}-sandbox",
            host_config=api.create_host_config(network_mode="none", ipc_mode="shareable"),
        )
        api.start(sandbox)
        app = api.create_container(
            IMAGE,
            ["sleep", "3600"],
            name=f"floor-{tag}-{i}-app",
            host_config=api.create_host_config(
                network_mode=f"container:{sandbox['Id']}",
                ipc_mode=f"container:{sandbox['Id']}",
            ),
        )
        api.start(app)

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(one_pod, range(count)))
        return time.perf_counter() - start
    finally:
        for c in api.containers(all=True, filters={"name": f"floor-{tag}-"}):
            api.remove_container(c["Id"], force=True)
        api.close()


def bench_swarm(host: str, advertise: str, count: int) -> float | str:
    try:
        docker(host, "swarm", "init", "--advertise-addr", advertise)
    except subprocess.CalledProcessError as exc:
        return f"swarm init failed: {exc.stderr.strip()}"
    name = f"swarm{secrets.token_hex(3)}"
    try:
        start = time.perf_counter()
        docker(
            host,
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--replicas",
            str(count),
            "--no-resolve-image",
            IMAGE,
            "sleep",
            "3600",
        )
        deadline = start + 300
        while time.perf_counter() < deadline:
            running = docker(
                host,
                "service",
                "ps",
                name,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ).splitlines()
            if sum(line.startswith("Running") for line in running) >= count:
                return time.perf_counter() - start
            time.sleep(0.05)
        return "swarm service did not reach 20/20 in 300 s"
    except subprocess.CalledProcessError as exc:
        return f"swarm service failed: {exc.stderr.strip()}"
    finally:
        subprocess.run(
            ["docker", "-H", host, "service", "rm", name],
            capture_output=True,
            timeout=60,
            check=False,
        )
        subprocess.run(
            ["docker", "-H", host, "swarm", "leave", "--force"],
            capture_output=True,
            timeout=60,
            check=False,
        )


def agent_rss_mb(cluster_name: str, index: int) -> float:
    """RSS of the agent process of one local-cluster node."""
    from deploy.local import cluster

    pid = cluster.agent_pid(cluster_name, index)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--out", default=str(REPO / "bench-results" / "bench_pod_start.json"))
    args = parser.parse_args()
    from deploy.local import cluster

    name = f"bp{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory(prefix="bench-pods-") as tmp:
        config = Path(tmp) / "config"
        results: dict[str, Any] = {"pods": args.pods}
        try:
            up = cluster.up(name, 1, config_path=config, timeout=180)
            if not up.ok:
                print(f"cluster failed: {[n.error for n in up.failed]}", file=sys.stderr)
                return 1
            node = up.layout.node(1)
            conn = ConfigFile.load(config).connection(name)
            # Warm up: the image is pulled once, as it would be on a working node.
            docker(node.docker_host, "pull", IMAGE)
            ours = asyncio.run(bench_ours(conn, node.name, args.pods))
            results["ours_s"] = round(ours, 2)
            results["agent_rss_mb_with_pods"] = round(agent_rss_mb(name, 1), 1)
            print(
                f"ours: {args.pods} pods Running in {ours:.2f}s, "
                f"agent RSS {results['agent_rss_mb_with_pods']} MB",
                flush=True,
            )
            asyncio.run(cleanup_ours(conn))
            raw = bench_raw(node.docker_host, args.pods)
            results["raw_docker_run_s"] = round(raw, 2)
            print(f"raw docker run -d x{args.pods}: {raw:.2f}s", flush=True)
            floor = bench_pod_floor(node.docker_host, args.pods)
            results["docker_api_pod_floor_s"] = round(floor, 2)
            print(f"docker API floor, {args.pods} sandbox+app pairs: {floor:.2f}s", flush=True)
            swarm = bench_swarm(node.docker_host, node.ip, args.pods)
            results["swarm_s"] = round(swarm, 2) if isinstance(swarm, float) else swarm
            print(f"swarm: {results['swarm_s']}", flush=True)
            results["ratio_ours_over_raw"] = round(ours / raw, 3)
            results["ratio_ours_over_pod_floor"] = round(ours / floor, 3)
            if isinstance(swarm, float):
                results["ratio_ours_over_swarm"] = round(ours / swarm, 3)
                results["ratio_pod_floor_over_swarm"] = round(floor / swarm, 3)
        finally:
            cluster.down(name, config_path=config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
