"""Scheduler benchmark: pods/s from create to bound, per-pod latency, RSS.

For 100, 1,000 and 5,000 hollow nodes (Node objects with capacity,
allocatable and a Ready condition, and a Lease in kube-node-lease that this
benchmark renews every 10 s as a kubelet would; no agent), two measurements
per scheduler:

- live: 10,000 pods created by 32 concurrent clients while the scheduler
  runs; a watch in the load generator (of bound pods only: field selector
  spec.nodeName!=) notes when each pod is bound.
  pods/s = pods / (first create sent -> last pod seen bound); per-pod
  latency p50/p99 = create sent -> bound seen. Creation competes with
  scheduling for the apiserver and the two cores, as in a real burst.
- paced: 5,000 more pods offered at the target rate (500/s) instead of as
  fast as possible: per-pod latency p50/p99 while the scheduler keeps up.
  (In the live burst, creates can outpace binds, and its latency then
  measures the queue that builds.)
- backlog: 10,000 more pods created first, then the scheduler started;
  pods/s = binds / (first bind seen -> last bind seen): how fast it drains
  a queue when nothing else writes.

Also the scheduler process's RSS (current and peak) at the end of each.

The scheduler runs in a process of its own (python -m tests.perf.bench_scheduler
--serve ...), apart from the load generator and the apiserver, as it would in
a cluster; the control plane runs with --no-scheduler. The peer, measured in
the same run under the same load, is a round-robin binder in the same kind
of process: it watches pods and binds each unbound one to the next node (the
same CAS-and-retry bind, the same 64 binds in flight), no filtering, no
scoring, no events. It is about the most the apiserver allows any scheduler
here, and ours / peer is the fraction of that we reach. Every (size,
scheduler) pair gets a fresh control plane, so neither inherits the other's
stored objects, and runs only the node lifecycle controller (which reads
the Leases) next to the apiserver. Ours writes a Scheduled event per pod,
as kube-scheduler does; the peer writes none.

    python -m tests.perf.bench_scheduler [--quick] [--nodes 100,1000] [--pods N]
        [--out bench-results/bench_scheduler.json]

Set BENCH_SCHEDULER_PROFILE=/tmp/prof to cProfile the scheduler processes.
Target: >= 500 pods/s at 5,000 nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from orchestrator import eventloop  # noqa: E402
from orchestrator.api.kinds import kind_info  # noqa: E402
from orchestrator.api.pb import core_v1_pb2 as core  # noqa: E402
from orchestrator.client.client import (  # noqa: E402
    AlreadyExistsError,
    Client,
    ConflictError,
    UnavailableError,
)
from orchestrator.client.config import ConfigFile  # noqa: E402
from orchestrator.scheduler import Scheduler  # noqa: E402
from orchestrator.scheduler.binder import bind  # noqa: E402
from orchestrator.scheduler.testing import make_node, make_pod  # noqa: E402
from tests.support.controlplane import ControlPlane  # noqa: E402

NAMESPACE = "bench"
LEASE_NAMESPACE = "kube-node-lease"
CREATORS = 32
# The paced measurement: this many pods offered at the target rate.
PACED_PODS = 5000
PACED_RATE = 500.0
BIND_CONCURRENCY = 64
ZONES = 3


def pct(values: Iterable[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set of pid in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(rest.split()[0]) / 1024
    return round(fields.get("VmRSS", float("nan")), 1), round(fields.get("VmHWM", float("nan")), 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time pid has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShares:
    """How many cores each process used over a window (1.0 = one core busy
    throughout): tells whether the apiserver or the scheduler was the limit."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = time.perf_counter()
        self.used = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def result(self) -> dict[str, float]:
        wall = time.perf_counter() - self.start
        return {
            name: round((cpu_seconds(pid) - self.used[name]) / wall, 2)
            for name, pid in self.pids.items()
        }


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the scheduler process (ours or the peer) ----------------------------------------------


class RoundRobinBinder:
    """The peer: bind every unbound pod to the next node, nothing else."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._slots = asyncio.Semaphore(BIND_CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.bound = 0

    async def start(self) -> None:
        nodes = (await self.client.list("Node")).items
        self._nodes = itertools.cycle(sorted(n.metadata.name for n in nodes))
        listed = await self.client.list("Pod", all_namespaces=True)
        self._runner = asyncio.create_task(self._run(listed.items, listed.resource_version))

    async def _run(self, backlog: list[Any], rv: str) -> None:
        for pending in backlog:
            if not pending.spec.node_name:
                await self._start_bind(pending)
        async for ev in self.client.watch("Pod", all_namespaces=True, resource_version=rv):
            pod: Any = ev.object
            if ev.type == "ADDED" and pod is not None and not pod.spec.node_name:
                await self._start_bind(pod)

    async def _start_bind(self, pod: Any) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._bind(pod, next(self._nodes)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bind(self, pod: Any, node: str) -> None:
        try:
            await bind(self.client, pod, node)  # the same CAS-and-retry as ours
            self.bound += 1
        finally:
            self._slots.release()

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner


async def serve(kind: str, conf: str, stats_out: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("orchestrator.scheduler").setLevel(logging.INFO)
    # Scheduled events are written; the recorder drops what it cannot keep up
    # with (as client-go's does), which is expected here and not worth a log line.
    logging.getLogger("orchestrator.client.events").setLevel(logging.ERROR)
    conn = ConfigFile.load(Path(conf)).connection()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with Client(conn, timeout=60) as client:
        runner: Any = (
            Scheduler(client, max_concurrent_binds=BIND_CONCURRENCY)
            if kind == "ours"
            else RoundRobinBinder(client)
        )
        await runner.start()
        print("READY", flush=True)
        await stop.wait()
        stats: dict[str, Any] = {}
        if isinstance(runner, Scheduler):
            s = runner.stats
            stats = {
                "attempts": s.attempts,
                "scheduled": s.scheduled,
                "unschedulable": s.unschedulable,
                "bind_errors": s.bind_errors,
                "in_process_p99_ms": round(pct(s.latencies, 99) * 1000, 1),
            }
        else:
            stats = {"scheduled": runner.bound}
        stats["rss_mb"], stats["peak_rss_mb"] = rss_mb(os.getpid())
        await runner.stop()
    Path(stats_out).write_text(json.dumps(stats))


def start_scheduler_process(kind: str, conf: Path, stats_out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.perf.bench_scheduler",
            "--serve",
            kind,
            "--conf",
            str(conf),
            "--stats-out",
            str(stats_out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{kind} scheduler process did not start: {line!r}")
    return proc


def stop_scheduler_process(proc: subprocess.Popen[str], stats_out: Path) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    try:
        stats: dict[str, Any] = json.loads(stats_out.read_text())
    except (OSError, ValueError):
        stats = {}
    return stats


# -- the load generator --------------------------------------------------------------------


async def create_retrying(client: Client, obj: Any) -> Any:
    """Create, riding out an overloaded store (this machine is shared): retry
    what the apiserver reports unavailable; an earlier try may have landed."""
    for attempt in range(6):
        try:
            return await client.create(obj)
        except AlreadyExistsError:
            if attempt == 0:
                raise
            return None
        except UnavailableError:
            if attempt == 5:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    return None


async def create_nodes(clients: list[Client], count: int) -> list[Any]:
    """Nodes, and a Lease for each; returns the leases (to renew)."""
    names = [f"hollow-{i:05d}" for i in range(count)]
    leases: list[Any] = [None] * count

    async def one(idx: int, client: Client) -> None:
        for i in range(idx, count, len(clients)):
            node = make_node(
                names[i],
                cpu="32",
                memory="128Gi",
                # Room for the live, paced and backlog pods of a run.
                pods=max(110, (20_000 + PACED_PODS) // count + 10),
                labels={"topology.kubernetes.io/zone": f"zone-{i % ZONES}"},
            )
            await create_retrying(client, node)
            lease = kind_info("Lease").new()
            lease.metadata.name = names[i]
            lease.metadata.namespace = LEASE_NAMESPACE
            lease.spec.holder_identity = names[i]
            lease.spec.lease_duration_seconds = 40
            lease.spec.acquire_time = micro_now()
            lease.spec.renew_time = micro_now()
            leases[i] = await create_retrying(client, lease) or await client.get(
                "Lease", names[i], LEASE_NAMESPACE
            )

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    return leases


async def renew_leases(client: Client, leases: list[Any], interval: float) -> None:
    """Renew every lease once per interval, spread evenly over it, as N kubelets would."""
    n = len(leases)
    gap = interval / n
    slots = asyncio.Semaphore(16)

    async def renew(i: int) -> None:
        async with slots:
            lease = type(leases[i])()
            lease.CopyFrom(leases[i])
            lease.spec.renew_time = micro_now()
            try:
                leases[i] = await client.update(lease)
            except ConflictError:
                leases[i] = await client.get("Lease", lease.metadata.name, LEASE_NAMESPACE)
            except Exception:
                pass  # shutting down, or a hiccup: the next round renews it

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    try:
        for k in itertools.count():
            delay = start + k * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(renew(k % n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class BoundWatch:
    """Notes when each pod of a namespace is first seen bound."""

    def __init__(self, client: Client, namespace: str, expected: int) -> None:
        self.client = client
        self.namespace = namespace
        self.expected = expected
        self.bound: dict[str, float] = {}
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # Only bound pods reach this watch (the apiserver filters): the load
    # generator shares the two cores with what it measures, so it should not
    # receive and decode every pending pod as well.
    BOUND = "spec.nodeName!="

    async def start(self) -> None:
        listed = await self.client.list("Pod", self.namespace, field_selector=self.BOUND)
        self._task = asyncio.create_task(self._run(listed.resource_version))

    async def _run(self, rv: str) -> None:
        async for ev in self.client.watch(
            "Pod", self.namespace, resource_version=rv, field_selector=self.BOUND
        ):
            pod: Any = ev.object
            if pod is None or not pod.spec.node_name or pod.metadata.name in self.bound:
                continue
            self.bound[pod.metadata.name] = time.perf_counter()
            if len(self.bound) == self.expected:
                self.done.set()
                return

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.done.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def run_live(
    cp: ControlPlane,
    pods: int,
    pids: dict[str, int],
    *,
    namespace: str = "live",
    rate: float | None = None,
) -> dict[str, Any]:
    """Pods created while the scheduler runs: create -> bound, end to end.

    With rate (the paced measurement), pods are offered at that steady rate,
    not as fast as the creators can: the latency a pod sees while the
    scheduler keeps up, which the burst (creates outpacing binds, so pods
    queue) does not show."""
    async with Client(cp.connection(), timeout=120) as watcher:
        watch = BoundWatch(watcher, namespace, pods)
        async with Client(cp.connection(), timeout=120) as admin:
            ns = core.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = namespace
            await admin.create(ns)
        await watch.start()
        start = time.perf_counter()
        cpu = CpuShares(pids)
        created = await create_pods_in(cp, namespace, pods, rate=rate)
        create_s = time.perf_counter() - start
        await watch.wait(max(120, pods / 20))
        cores = cpu.result()
    bound = watch.bound
    latencies = [bound[n] - created[n] for n in bound if n in created]
    end = max(bound.values(), default=time.perf_counter())
    result: dict[str, Any] = {"offered_pods_per_s": rate} if rate else {}
    return result | {
        "bound": len(bound),
        "create_s": round(create_s, 2),
        "pods_per_s": round(len(bound) / (end - start), 1),
        "latency_p50_ms": round(pct(latencies, 50) * 1000, 1),
        "latency_p99_ms": round(pct(latencies, 99) * 1000, 1),
        "cpu_cores": cores,
    }


async def create_pods_in(
    cp: ControlPlane, namespace: str, pods: int, *, rate: float | None = None
) -> dict[str, float]:
    """create_pods for a namespace that already exists; with rate, pod i is
    sent no earlier than i / rate seconds after the first."""
    created: dict[str, float] = {}
    clients = [Client(cp.connection(), timeout=120) for _ in range(CREATORS)]
    try:
        await asyncio.gather(*(c.version() for c in clients))
        template = make_pod("template", namespace, cpu="100m", memory="64Mi")
        template.metadata.uid = ""
        template.metadata.labels["app"] = "bench"
        start = time.perf_counter()

        async def create(idx: int, client: Client) -> None:
            for i in range(idx, pods, CREATORS):
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                obj = core.Pod()
                obj.CopyFrom(template)
                obj.metadata.name = f"p-{i:05d}"
                created[obj.metadata.name] = time.perf_counter()
                await create_retrying(client, obj)

        await asyncio.gather(*(create(i, c) for i, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return created


async def run_backlog(
    cp: ControlPlane, kind: str, pods: int, tmp: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pods created first, then the scheduler started: how fast it drains them
    (first bind seen -> last bind seen), without the creates competing."""
    async with Client(cp.connection(), timeout=120) as admin:
        ns = core.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = "backlog"
        await admin.create(ns)
    await create_pods_in(cp, "backlog", pods)
    async with Client(cp.connection(), timeout=120) as watcher:
        watch = BoundWatch(watcher, "backlog", pods)
        await watch.start()
        stats_out = tmp / f"stats-backlog-{kind}.json"
        proc = start_scheduler_process(kind, cp.admin_conf, stats_out)
        try:
            cpu = CpuShares(process_ids(cp, proc))
            await watch.wait(max(120, pods / 20))
            cores = cpu.result()
        finally:
            stats = stop_scheduler_process(proc, stats_out)
    times = sorted(watch.bound.values())
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    return {
        "bound": len(times),
        "pods_per_s": round((len(times) - 1) / span, 1),
        "cpu_cores": cores,
    }, stats


def process_ids(cp: ControlPlane, scheduler: subprocess.Popen[str]) -> dict[str, int]:
    assert cp.proc is not None
    return {"apiserver": cp.proc.pid, "scheduler": scheduler.pid, "load_generator": os.getpid()}


async def one_run(
    kind: str, nodes: int, pods: int, lease_interval: float, tmp: Path
) -> dict[str, Any]:
    # The control plane's own scheduler stays off (the one measured runs apart),
    # and of the controllers only node lifecycle runs, the one that reads the
    # Leases: the others share the apiserver's process and would each handle
    # every pod event, measuring them rather than the scheduler.
    cp = ControlPlane(
        tmp / f"cp-{kind}-{nodes}",
        serve_args=("--no-scheduler", "--controllers", "nodelifecycle"),
    )
    cp.start()
    try:
        async with Client(cp.connection(), timeout=120) as admin:
            setup = [Client(cp.connection(), timeout=120) for _ in range(16)]
            try:
                t0 = time.perf_counter()
                leases = await create_nodes(setup, nodes)
                setup_s = time.perf_counter() - t0
            finally:
                await asyncio.gather(*(c.close() for c in setup))
            renewer = asyncio.create_task(renew_leases(admin, leases, lease_interval))
            try:
                stats_out = tmp / f"stats-live-{kind}-{nodes}.json"
                proc = start_scheduler_process(kind, cp.admin_conf, stats_out)
                try:
                    live = await run_live(cp, pods, process_ids(cp, proc))
                finally:
                    live["scheduler"] = stop_scheduler_process(proc, stats_out)
                stats_out = tmp / f"stats-paced-{kind}-{nodes}.json"
                proc = start_scheduler_process(kind, cp.admin_conf, stats_out)
                try:
                    paced = await run_live(
                        cp,
                        PACED_PODS,
                        process_ids(cp, proc),
                        namespace="paced",
                        rate=PACED_RATE,
                    )
                finally:
                    paced["scheduler"] = stop_scheduler_process(proc, stats_out)
                backlog, stats = await run_backlog(cp, kind, pods, tmp)
                backlog["scheduler"] = stats
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
        return {
            "node_setup_s": round(setup_s, 1),
            "live": live,
            "paced": paced,
            "backlog": backlog,
        }
    finally:
        cp.stop()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [100, 1000] if args.quick else [100, 1000, 5000]
    if args.nodes:
        sizes = [int(s) for s in args.nodes.split(",")]
    pods = args.pods or (2000 if args.quick else 10_000)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "pods": pods,
        "lease_renew_interval_s": args.lease_interval,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        for nodes in sizes:
            run: dict[str, Any] = {}
            for kind in (args.only,) if args.only else ("ours", "peer"):
                print(f"{nodes} nodes, {pods} pods, {kind}...", flush=True)
                run[kind] = await one_run(kind, nodes, pods, args.lease_interval, Path(tmp))
                print(" ", run[kind], flush=True)
            if args.only:
                results["runs"][str(nodes)] = run
                continue
            for mode in ("live", "backlog"):
                run[f"ratio_{mode}_ours_vs_peer"] = round(
                    run["ours"][mode]["pods_per_s"] / run["peer"][mode]["pods_per_s"], 3
                )
            print(
                "  ours/peer pods/s: live",
                run["ratio_live_ours_vs_peer"],
                "backlog",
                run["ratio_backlog_ours_vs_peer"],
                flush=True,
            )
            results["runs"][str(nodes)] = run
    largest = results["runs"].get("5000")
    if largest is not None and "ours" in largest:
        results["targets"] = {
            "live_pods_per_s_5000_nodes >= 500": largest["ours"]["live"]["pods_per_s"] >= 500,
            "backlog_pods_per_s_5000_nodes >= 500": largest["ours"]["backlog"]["pods_per_s"] >= 500,
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 nodes, 2,000 pods")
    parser.add_argument("--nodes", default="", help="comma-separated cluster sizes")
    parser.add_argument("--pods", type=int, default=0)
    parser.add_argument("--lease-interval", type=float, default=10.0)
    parser.add_argument(
        "--only",
        choices=("ours", "peer"),
        help="measure one scheduler (no ratio): ours or peer",
    )
    parser.add_argument("--out", default=str(REPO / "bench-results" / "bench_scheduler.json"))
    parser.add_argument("--serve", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--conf", help=argparse.SUPPRESS)
    parser.add_argument("--stats-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        profile_to = os.environ.get("BENCH_SCHEDULER_PROFILE")  # a path: cProfile the scheduler
        if profile_to:
            import cProfile

            cProfile.runctx(
                "eventloop.run(serve(args.serve, args.conf, args.stats_out))",
                globals(),
                {"args": args},
                profile_to + f".{args.serve}",
            )
        else:
            # On the loop `orchestrator scheduler` runs on, ours and the peer alike.
            eventloop.run(serve(args.serve, args.conf, args.stats_out))
        return 0
    results = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
