"""Resource usage of the node and its pods, sampled from Docker's stats.

The agent's Stats call (agent/server.py) is what the apiserver's metrics API
fans out to, so it must be cheap: a background collector samples every
running pod container every `interval` seconds (one-shot stats, a few
containers at a time in worker threads) and keeps the answer ready.

- CPU is a rate, so it takes two samples: the cumulative CPU time
  (`cpu_stats.cpu_usage.total_usage`, ns) difference over the difference of
  the samples' `read` times. A container seen for the first time has no
  rate yet; the collector then samples again soon instead of a whole
  interval later, so a new pod gets metrics within seconds.
- Memory is the working set, as the kubelet reports it: usage minus the
  inactive page cache (`inactive_file` on cgroup v2, `total_inactive_file`
  on v1), which the kernel can drop without the container noticing.
- A pod is reported only when every one of its running containers has a
  rate, as metrics-server does: a partial sum would under-report the pod.
- The node's own usage comes from /proc, as cAdvisor's root container:
  busy CPU time from /proc/stat, and MemTotal - MemFree - Inactive(file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from agent.runtime.docker import parse_docker_time
from agent.runtime.types import (
    LABEL_CONTAINER_NAME,
    LABEL_CONTAINER_TYPE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    SANDBOX_NAME,
)
from orchestrator.api.pb import agent_pb2 as apb

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 10.0
# How soon to sample again when new containers have only one sample.
FOLLOW_UP = 2.0
# Parallel stats calls: dockerd answers each from the cgroup files, but a
# node with hundreds of containers must not get hundreds of requests at once.
MAX_PARALLEL = 4
# A snapshot older than this many intervals (dockerd stopped answering) is
# withdrawn rather than served as if current.
STALE_AFTER_INTERVALS = 3


# -- pure: samples and rates -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One reading of a container (or the node): cumulative CPU time and
    the memory working set at `at`."""

    cpu_ns: int
    memory_bytes: int
    at: datetime


@dataclass(frozen=True)
class Usage:
    cpu_millicores: int
    memory_bytes: int
    at: datetime
    window: float  # seconds between the two samples the CPU rate is from


def working_set_bytes(memory_stats: Mapping[str, Any]) -> int:
    """usage - inactive_file (cgroup v2) or - total_inactive_file (v1), never below 0."""
    usage = int(memory_stats.get("usage") or 0)
    stats = memory_stats.get("stats") or {}
    inactive = stats.get("inactive_file")
    if inactive is None:
        inactive = stats.get("total_inactive_file", 0)
    return max(0, usage - int(inactive or 0))


def parse_container_stats(stats: Mapping[str, Any]) -> Sample | None:
    """A Sample from one Docker stats document; None when the container is not
    running (Docker then sends the zero time and no counters)."""
    at = parse_docker_time(stats.get("read"))
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    total = cpu.get("total_usage")
    if at is None or total is None:
        return None
    return Sample(int(total), working_set_bytes(stats.get("memory_stats") or {}), at)


def cpu_millicores(prev: Sample, cur: Sample) -> int | None:
    """The CPU rate between two samples in millicores; None when it cannot be
    told (no time passed, or the counter went back: the container restarted)."""
    seconds = (cur.at - prev.at).total_seconds()
    used = cur.cpu_ns - prev.cpu_ns
    if seconds <= 0 or used < 0:
        return None
    # 1e9 ns of CPU per second is one core, 1000 millicores.
    return round(used / seconds / 1e6)


def usage_between(prev: Sample, cur: Sample) -> Usage | None:
    rate = cpu_millicores(prev, cur)
    if rate is None:
        return None
    return Usage(rate, cur.memory_bytes, cur.at, (cur.at - prev.at).total_seconds())


def parse_proc_stat_busy_ns(text: str, ticks_per_second: int) -> int:
    """Busy CPU time of the whole machine from /proc/stat's `cpu` line, in ns:
    user + nice + system + irq + softirq + steal (guest time is inside user)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            values += [0] * (8 - len(values))
            user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
            busy = user + nice + system + irq + softirq + steal
            return busy * 1_000_000_000 // ticks_per_second
    raise ValueError("/proc/stat has no aggregate cpu line")


def parse_meminfo_working_set(text: str) -> int:
    """MemTotal - MemFree - Inactive(file), in bytes (cAdvisor's root working set)."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            kb[key.strip()] = int(parts[0])
    try:
        used = kb["MemTotal"] - kb["MemFree"] - kb.get("Inactive(file)", 0)
    except KeyError as exc:
        raise ValueError(f"/proc/meminfo has no {exc.args[0]}") from None
    return max(0, used) * 1024


# -- what the collector samples --------------------------------------------------------


@dataclass(frozen=True)
class ContainerRef:
    id: str
    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str


def refs_from_summaries(summaries: Iterable[Mapping[str, Any]]) -> list[ContainerRef]:
    """The pod containers of a `docker ps` listing (the agent's labels), sandboxes left out."""
    refs = []
    for summary in summaries:
        labels = summary.get("Labels") or {}
        uid = labels.get(LABEL_POD_UID, "")
        name = labels.get(LABEL_CONTAINER_NAME, "")
        if not uid or not name or name == SANDBOX_NAME:
            continue
        if labels.get(LABEL_CONTAINER_TYPE) == "sandbox":
            continue
        refs.append(
            ContainerRef(
                id=str(summary["Id"]),
                pod_uid=uid,
                pod_namespace=labels.get(LABEL_POD_NAMESPACE, ""),
                pod_name=labels.get(LABEL_POD_NAME, ""),
                name=name,
            )
        )
    return refs


class StatsSource(Protocol):
    """Blocking reads; the collector calls them from its worker threads."""

    def running_containers(self) -> list[ContainerRef]: ...

    def container_stats(self, container_id: str) -> Mapping[str, Any] | None:
        """Docker's stats document, or None when the container is gone."""
        ...

    def node_sample(self) -> Sample: ...


class DockerStatsSource:
    """StatsSource over one dockerd (the docker SDK's low-level client) and /proc."""

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, proc: str = "/proc", max_pool: int = 8
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.proc = proc
        self.max_pool = max_pool
        self._api: Any = None
        self._one_shot = True
        self._ticks = os.sysconf("SC_CLK_TCK")

    def _client(self) -> Any:
        if self._api is None:
            import docker

            self._api = docker.APIClient(
                base_url=self.base_url,
                version="auto",
                timeout=self.timeout,
                max_pool_size=self.max_pool,
            )
        return self._api

    def running_containers(self) -> list[ContainerRef]:
        try:
            summaries = self._client().containers(
                filters={"label": LABEL_POD_UID, "status": "running"}
            )
        except Exception:
            self.close()  # reconnect (and renegotiate the version) next time
            raise
        return refs_from_summaries(summaries)

    def container_stats(self, container_id: str) -> Mapping[str, Any] | None:
        import docker.errors

        api = self._client()
        try:
            if self._one_shot:
                try:
                    return dict(api.stats(container_id, stream=False, one_shot=True))
                except docker.errors.InvalidVersion:
                    # dockerd older than API 1.41: each call then waits for a
                    # second sample (about a second); still correct.
                    self._one_shot = False
            return dict(api.stats(container_id, stream=False))
        except docker.errors.NotFound:
            return None

    def node_sample(self) -> Sample:
        with open(f"{self.proc}/stat", encoding="ascii") as f:
            busy = parse_proc_stat_busy_ns(f.read(), self._ticks)
        with open(f"{self.proc}/meminfo", encoding="ascii") as f:
            memory = parse_meminfo_working_set(f.read())
        return Sample(busy, memory, datetime.now(UTC))

    def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            with contextlib.suppress(Exception):
                api.close()


# -- the collector -----------------------------------------------------------------------


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_response(
    refs: Iterable[ContainerRef], usage: Mapping[str, Usage], node: Usage | None
) -> apb.StatsResponse:
    """The Stats answer: every pod all of whose containers have a usage."""
    by_pod: dict[str, list[ContainerRef]] = {}
    for ref in refs:
        by_pod.setdefault(ref.pod_uid, []).append(ref)
    response = apb.StatsResponse()
    if node is not None:
        response.node.CopyFrom(
            apb.NodeStats(
                cpu_millicores=node.cpu_millicores,
                memory_working_set_bytes=node.memory_bytes,
                timestamp=_rfc3339(node.at),
                window_seconds=node.window,
            )
        )
    for uid, containers in sorted(by_pod.items(), key=lambda kv: kv[1][0].pod_name):
        got = [usage.get(c.id) for c in containers]
        if any(u is None for u in got):
            continue
        present = [u for u in got if u is not None]
        pod = response.pods.add(
            namespace=containers[0].pod_namespace,
            name=containers[0].pod_name,
            uid=uid,
            timestamp=_rfc3339(max(u.at for u in present)),
            window_seconds=max(u.window for u in present),
        )
        for ref, u in sorted(zip(containers, present, strict=True), key=lambda p: p[0].name):
            pod.containers.add(
                name=ref.name,
                cpu_millicores=u.cpu_millicores,
                memory_working_set_bytes=u.memory_bytes,
            )
    return response


class StatsCollector:
    """Samples in the background; `snapshot()` is the latest answer, at no cost.

    collector = StatsCollector(DockerStatsSource("unix:///run/docker.sock"))
    collector.start()
    collector.snapshot()   # apb.StatsResponse
    await collector.stop()
    """

    def __init__(
        self,
        source: StatsSource,
        *,
        interval: float = DEFAULT_INTERVAL,
        follow_up: float = FOLLOW_UP,
        max_parallel: int = MAX_PARALLEL,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.source = source
        self.interval = interval
        self.follow_up = min(follow_up, interval)
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="stats")
        self._parallel = asyncio.Semaphore(max_parallel)
        self._monotonic = monotonic
        self._prev: dict[str, Sample] = {}
        self._node_prev: Sample | None = None
        self._response = apb.StatsResponse()
        self._response_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.passes = 0

    def _now(self) -> float:
        return self._monotonic() if self._monotonic else asyncio.get_running_loop().time()

    def snapshot(self) -> apb.StatsResponse:
        if self._response_at is None:
            return apb.StatsResponse()
        if self._now() - self._response_at > STALE_AFTER_INTERVALS * self.interval:
            return apb.StatsResponse()
        return self._response

    async def _run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._parallel:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _sample(self, ref: ContainerRef) -> tuple[ContainerRef, Sample | None]:
        try:
            stats = await self._run_blocking(self.source.container_stats, ref.id)
        except Exception as exc:
            log.debug("stats of container %s: %s", ref.id[:12], exc)
            return ref, None
        return ref, None if stats is None else parse_container_stats(stats)

    async def collect_once(self) -> bool:
        """One pass over the node. Returns True when some container had only its
        first sample (so another pass soon would give it a rate)."""
        refs: list[ContainerRef] = await self._run_blocking(self.source.running_containers)
        results = await asyncio.gather(*(self._sample(ref) for ref in refs))
        usage: dict[str, Usage] = {}
        fresh: dict[str, Sample] = {}
        first_seen = False
        for ref, sample in results:
            if sample is None:
                continue
            fresh[ref.id] = sample
            prev = self._prev.get(ref.id)
            if prev is None:
                first_seen = True
                continue
            got = usage_between(prev, sample)
            if got is not None:
                usage[ref.id] = got
        # Only containers still running are remembered: no growth with churn.
        self._prev = fresh
        node: Usage | None = None
        try:
            node_sample = await self._run_blocking(self.source.node_sample)
        except (OSError, ValueError) as exc:
            log.warning("node usage could not be read: %s", exc)
        else:
            if self._node_prev is not None:
                node = usage_between(self._node_prev, node_sample)
            self._node_prev = node_sample
        self._response = build_response(refs, usage, node)
        self._response_at = self._now()
        self.passes += 1
        return first_seen

    async def run(self) -> None:
        while True:
            delay = self.interval
            try:
                if await self.collect_once():
                    delay = self.follow_up
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # dockerd down or restarting: the old snapshot ages out meanwhile.
                log.warning("container stats could not be collected: %s", exc)
            await asyncio.sleep(delay)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="stats-collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.source, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
