"""Node failure benchmark (issue 4): from a node's death to all its pods
Running elsewhere, with tolerationSeconds 0.

On a 3-node local cluster (deploy/local), a 6-replica Deployment tolerates
the unreachable and not-ready NoExecute taints for 0 seconds. One node's
agent is SIGKILLed, as a crash would; from the kill the benchmark notes when
the Node goes Ready=Unknown, when it gets the unreachable:NoExecute taint,
and when the Deployment again has 6 pods Running and Ready, none on the dead
node.

The floor it is compared with, in the same run: the node lifecycle
controller's grace period (a node is declared dead only after that long
without a heartbeat, by design, as in Kubernetes) plus the time one more pod
of the same Deployment takes from `scale` to Ready on a healthy node. The
grace period runs from the node's last heartbeat, not from the kill, so the
node is declared dead up to one Lease renewal (10 s) sooner or one monitor
period (5 s) later than grace after the kill, and ours / floor can dip below
1. The part that is ours alone, from the node declared dead (Ready=Unknown)
to every pod Running elsewhere (taint, eviction, a new pod, scheduling, its
start), is also compared with the fresh pod's start.

    python tests/perf/bench_node_failure.py [--runs 3] [--out bench-results/bench_node_failure.json]

Needs root: it brings up a 3-node local cluster and removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from orchestrator.api import codec  # noqa: E402
from orchestrator.client.client import Client  # noqa: E402
from orchestrator.client.config import ConfigFile  # noqa: E402
from orchestrator.controllers.manager import ControllerOptions  # noqa: E402

NODES = 3
REPLICAS = 6
NAMESPACE = "bench-node-failure"
APP = "survivor"
IMAGE = "busybox:1.36"
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
# The local cluster's controller manager runs with the default grace period.
GRACE_PERIOD = ControllerOptions().node_monitor_grace_period
DETECT_WITHIN = GRACE_PERIOD + 60
MOVE_WITHIN = 90.0
POLL = 0.25


def deployment(replicas: int) -> Any:
    tolerations = [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}
        for key in (UNREACHABLE, NOT_READY)
    ]
    return codec.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": APP, "namespace": NAMESPACE},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": APP}},
                "template": {
                    "metadata": {"labels": {"app": APP}},
                    "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "tolerations": tolerations,
                        "containers": [
                            {"name": "main", "image": IMAGE, "command": ["sleep", "86400"]}
                        ],
                    },
                },
            },
        }
    )


def is_up(pod: Any) -> bool:
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    return not pod.metadata.deletion_timestamp and pod.status.phase == "Running" and ready


async def pods(client: Client) -> list[Any]:
    return list((await client.list("Pod", NAMESPACE, label_selector=f"app={APP}")).items)


async def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(POLL)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


async def up_count(client: Client, n: int, avoid: str = "") -> list[Any] | None:
    current = await pods(client)
    up = [p for p in current if is_up(p) and p.spec.node_name != avoid]
    live = [p for p in current if not p.metadata.deletion_timestamp]
    return up if len(up) == n and len(live) == n else None


async def scale(client: Client, replicas: int) -> None:
    for _ in range(10):
        d = await client.get("Deployment", APP, NAMESPACE)
        d.spec.replicas = replicas
        try:
            await client.update(d)
            return
        except Exception:  # a conflict with the controller's status write: again
            await asyncio.sleep(0.1)
    raise RuntimeError(f"could not scale {APP} to {replicas}")


async def fresh_pod_seconds(client: Client) -> float:
    """One more pod, from scale to Ready on a healthy node: the rescheduling part
    of the floor."""
    t0 = time.monotonic()
    await scale(client, REPLICAS + 1)
    await wait_until(lambda: up_count(client, REPLICAS + 1), 60, f"{REPLICAS + 1} pods up")
    took = time.monotonic() - t0
    await scale(client, REPLICAS)
    await wait_until(lambda: up_count(client, REPLICAS), 60, f"back to {REPLICAS} pods")
    return took


async def one_failure(client: Client, name: str, config: Path) -> dict[str, float]:
    from deploy.local import cluster, procs

    placed = await wait_until(lambda: up_count(client, REPLICAS), 120, f"{REPLICAS} pods up")
    by_node: dict[str, int] = {}
    for p in placed:
        by_node[p.spec.node_name] = by_node.get(p.spec.node_name, 0) + 1
    victim = max(sorted(by_node), key=lambda n: by_node[n])
    layout = cluster.find_cluster(name).layout
    index = next(i for i in range(1, NODES + 1) if layout.node(i).name == victim)
    timings: dict[str, float] = {"pods_on_dead_node": float(by_node[victim])}

    async def unknown() -> bool:
        node = await client.get("Node", victim)
        return any(c.type == "Ready" and c.status == "Unknown" for c in node.status.conditions)

    async def tainted() -> bool:
        node = await client.get("Node", victim)
        return any(t.key == UNREACHABLE and t.effect == "NoExecute" for t in node.spec.taints)

    t0 = time.monotonic()
    procs.kill_pids([cluster.agent_pid(name, index)])
    try:
        await wait_until(unknown, DETECT_WITHIN, f"{victim} Ready=Unknown")
        timings["kill_to_unknown_s"] = time.monotonic() - t0
        await wait_until(tainted, 30, f"{UNREACHABLE}:NoExecute on {victim}")
        timings["kill_to_noexecute_taint_s"] = time.monotonic() - t0
        await wait_until(
            lambda: up_count(client, REPLICAS, avoid=victim),
            MOVE_WITHIN,
            f"{REPLICAS} pods up away from {victim}",
        )
        timings["kill_to_all_running_elsewhere_s"] = time.monotonic() - t0
        timings["declared_dead_to_all_running_elsewhere_s"] = (
            timings["kill_to_all_running_elsewhere_s"] - timings["kill_to_unknown_s"]
        )
    finally:
        await asyncio.to_thread(cluster.restart_agent, name, index, config_path=config)
    return {k: round(v, 2) for k, v in timings.items()}


async def bench(name: str, config: Path, runs: int) -> dict[str, Any]:
    conn = ConfigFile.load(config).connection(name)
    async with Client(conn, timeout=30) as client:
        await client.create(
            codec.from_dict(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            )
        )
        await client.create(deployment(REPLICAS))
        await wait_until(lambda: up_count(client, REPLICAS), 180, f"{REPLICAS} pods up")
        start = await fresh_pod_seconds(client)
        print(f"one fresh pod, scale -> Ready: {start:.2f}s", flush=True)
        failures = []
        for i in range(runs):
            timings = await one_failure(client, name, config)
            print(f"run {i + 1}: {timings}", flush=True)
            failures.append(timings)

    def median(key: str) -> float:
        return float(statistics.median(f[key] for f in failures))

    total = median("kill_to_all_running_elsewhere_s")
    after_death = median("declared_dead_to_all_running_elsewhere_s")
    floor = GRACE_PERIOD + start
    return {
        "nodes": NODES,
        "replicas": REPLICAS,
        "toleration_seconds": 0,
        "node_monitor_grace_period_s": GRACE_PERIOD,
        "fresh_pod_scale_to_ready_s": round(start, 2),
        "runs": failures,
        "median_kill_to_all_running_elsewhere_s": round(total, 2),
        "floor_grace_plus_fresh_pod_s": round(floor, 2),
        "ratio_over_floor": round(total / floor, 3),
        "median_declared_dead_to_all_running_elsewhere_s": round(after_death, 2),
        "ratio_after_death_over_fresh_pod": round(after_death / start, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="node failures to time (default 3)")
    parser.add_argument("--out", default=str(REPO / "bench-results" / "bench_node_failure.json"))
    args = parser.parse_args()
    from deploy.local import cluster

    name = f"bn{secrets.token_hex(2)}"
    with tempfile.TemporaryDirectory(prefix="bench-node-failure-") as tmp:
        config = Path(tmp) / "config"
        try:
            up = cluster.up(name, NODES, config_path=config, timeout=180)
            if not up.ok:
                print(f"cluster failed: {[n.error for n in up.failed]}", file=sys.stderr)
                return 1
            results = asyncio.run(bench(name, config, args.runs))
        finally:
            cluster.down(name, config_path=config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    r = results
    print(
        f"node death -> all pods Running elsewhere: {r['median_kill_to_all_running_elsewhere_s']}s;"
        f" floor (grace {GRACE_PERIOD:.0f}s + one fresh pod {r['fresh_pod_scale_to_ready_s']}s)"
        f" {r['floor_grace_plus_fresh_pod_s']}s; ratio {r['ratio_over_floor']}\n"
        f"declared dead -> all pods Running elsewhere:"
        f" {r['median_declared_dead_to_all_running_elsewhere_s']}s;"
        f" ratio over one fresh pod {r['ratio_after_death_over_fresh_pod']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
