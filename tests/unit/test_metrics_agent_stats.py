"""The agent's usage collector without Docker: CPU rates from pairs of
Docker stats documents, the memory working set on cgroup v1 and v2, node
usage from /proc, and the collector's passes over a fake source."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.runtime import types as rt
from agent.stats import (
    ContainerRef,
    Sample,
    StatsCollector,
    cpu_millicores,
    parse_container_stats,
    parse_meminfo_working_set,
    parse_proc_stat_busy_ns,
    refs_from_summaries,
    working_set_bytes,
)

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


def docker_stats(
    read: str, total_usage_ns: int, usage: int, inactive: int, v1: bool = False
) -> dict[str, Any]:
    """A Docker stats document as `GET /containers/ID/stats?stream=0&one-shot=1` sends it."""
    stats = {"total_inactive_file": inactive} if v1 else {"inactive_file": inactive, "anon": 1}
    return {
        "read": read,
        "preread": "0001-01-01T00:00:00Z",
        "pids_stats": {"current": 2},
        "cpu_stats": {
            "cpu_usage": {
                "total_usage": total_usage_ns,
                "usage_in_kernelmode": total_usage_ns // 4,
                "usage_in_usermode": total_usage_ns - total_usage_ns // 4,
            },
            "system_cpu_usage": 1_000_000_000_000,
            "online_cpus": 2,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {"usage": usage, "stats": stats, "limit": 8 << 30},
        "name": "/k8s_main",
        "id": "c1",
    }


def test_cpu_rate_from_two_docker_samples() -> None:
    first = parse_container_stats(
        docker_stats("2026-01-01T12:00:00.000000000Z", 5_000_000_000, 50 * MIB, 10 * MIB)
    )
    # 2.5 s of CPU time in 10 s: a quarter of a core.
    second = parse_container_stats(
        docker_stats("2026-01-01T12:00:10.000000000Z", 7_500_000_000, 60 * MIB, 10 * MIB)
    )
    assert first is not None and second is not None
    assert cpu_millicores(first, second) == 250
    assert second.memory_bytes == 50 * MIB
    # Nanosecond timestamps are honoured to the microsecond: 1.5 cores over 0.5 s.
    a = parse_container_stats(docker_stats("2026-01-01T12:00:00.250000000Z", 0, 0, 0))
    b = parse_container_stats(docker_stats("2026-01-01T12:00:00.750000000Z", 750_000_000, 0, 0))
    assert a is not None and b is not None and cpu_millicores(a, b) == 1500


def test_no_rate_across_a_restart_or_without_time() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert cpu_millicores(Sample(9_000, 0, t), Sample(100, 0, t.replace(second=10))) is None
    assert cpu_millicores(Sample(0, 0, t), Sample(100, 0, t)) is None


def test_stopped_container_stats_are_not_a_sample() -> None:
    stopped = docker_stats("0001-01-01T00:00:00Z", 0, 0, 0)
    assert parse_container_stats(stopped) is None
    assert parse_container_stats({"read": "2026-01-01T12:00:00Z", "cpu_stats": {}}) is None


def test_working_set_on_cgroup_v1_and_v2() -> None:
    assert working_set_bytes({"usage": 100, "stats": {"inactive_file": 30}}) == 70
    assert working_set_bytes({"usage": 100, "stats": {"total_inactive_file": 40}}) == 60
    assert working_set_bytes({"usage": 10, "stats": {"inactive_file": 30}}) == 0
    assert working_set_bytes({}) == 0
    v1 = parse_container_stats(docker_stats("2026-01-01T12:00:00Z", 1, 80 * MIB, 20 * MIB, True))
    assert v1 is not None and v1.memory_bytes == 60 * MIB


def test_node_usage_from_proc() -> None:
    stat = "cpu  100 20 30 5000 10 5 5 40 0 0\ncpu0 50 10 15 2500 5 2 3 20 0 0\nintr 1\n"
    # busy = user + nice + system + irq + softirq + steal = 200 ticks at 100/s = 2 s.
    assert parse_proc_stat_busy_ns(stat, 100) == 2_000_000_000
    with pytest.raises(ValueError, match="no aggregate cpu"):
        parse_proc_stat_busy_ns("intr 1\n", 100)
    meminfo = "MemTotal:  1000 kB\nMemFree:  300 kB\nMemAvailable: 600 kB\nInactive(file): 200 kB\n"
    assert parse_meminfo_working_set(meminfo) == 500 * 1024
    with pytest.raises(ValueError, match="MemFree"):
        parse_meminfo_working_set("MemTotal: 1 kB\n")


def test_listing_keeps_pod_containers_only() -> None:
    def summary(cid: str, **labels: str) -> dict[str, Any]:
        return {"Id": cid, "Labels": labels}

    pod_labels = {
        rt.LABEL_POD_UID: "u1",
        rt.LABEL_POD_NAME: "web",
        rt.LABEL_POD_NAMESPACE: "default",
    }
    refs = refs_from_summaries(
        [
            summary("a", **pod_labels, **{rt.LABEL_CONTAINER_NAME: "main"}),
            summary("b", **pod_labels, **{rt.LABEL_CONTAINER_NAME: "POD"}),
            summary(
                "c",
                **pod_labels,
                **{rt.LABEL_CONTAINER_NAME: "pause", rt.LABEL_CONTAINER_TYPE: "sandbox"},
            ),
            summary("d", other="x"),
        ]
    )
    assert refs == [ContainerRef("a", "u1", "default", "web", "main")]


# -- the collector ---------------------------------------------------------------------


class FakeSource:
    """Two pods: web (main + side) and db (main). CPU advances per pass as set."""

    def __init__(self) -> None:
        self.refs = [
            ContainerRef("w1", "uid-web", "default", "web", "main"),
            ContainerRef("w2", "uid-web", "default", "web", "side"),
            ContainerRef("d1", "uid-db", "prod", "db", "main"),
        ]
        self.cpu = {"w1": 0, "w2": 0, "d1": 0}
        self.rate_ns_per_pass = {"w1": 2_000_000_000, "w2": 500_000_000, "d1": 0}
        self.second = 0
        self.gone: set[str] = set()
        self.node_busy = 0

    def advance(self) -> None:
        self.second += 10
        for cid, rate in self.rate_ns_per_pass.items():
            self.cpu[cid] += rate
        self.node_busy += 40_000_000_000

    def running_containers(self) -> list[ContainerRef]:
        return [r for r in self.refs if r.id not in self.gone]

    def container_stats(self, container_id: str) -> Mapping[str, Any] | None:
        if container_id in self.gone:
            return None
        read = f"2026-01-01T12:00:{self.second:02d}.000000000Z"
        return docker_stats(read, self.cpu[container_id], 30 * MIB, 10 * MIB)

    def node_sample(self) -> Sample:
        at = datetime(2026, 1, 1, 12, 0, self.second, tzinfo=UTC)
        return Sample(self.node_busy, 4096 * MIB, at)


async def test_collector_reports_pods_once_every_container_has_a_rate() -> None:
    source = FakeSource()
    clock = [0.0]
    collector = StatsCollector(source, interval=10, monotonic=lambda: clock[0])
    assert not collector.snapshot().pods
    # The first pass has one sample of each: no rates yet, a follow-up is due.
    assert await collector.collect_once() is True
    assert not collector.snapshot().pods and not collector.snapshot().HasField("node")
    source.advance()
    assert await collector.collect_once() is False
    snap = collector.snapshot()
    assert [(p.namespace, p.name, p.uid) for p in snap.pods] == [
        ("prod", "db", "uid-db"),
        ("default", "web", "uid-web"),
    ]
    web = snap.pods[1]
    assert [(c.name, c.cpu_millicores, c.memory_working_set_bytes) for c in web.containers] == [
        ("main", 200, 20 * MIB),
        ("side", 50, 20 * MIB),
    ]
    assert web.timestamp == "2026-01-01T12:00:10Z" and web.window_seconds == 10
    assert snap.node.cpu_millicores == 4000 and snap.node.memory_working_set_bytes == 4096 * MIB
    # A container that vanishes takes its pod out until it has a rate again,
    # and is forgotten.
    source.gone.add("w2")
    source.advance()
    await collector.collect_once()
    assert [p.name for p in collector.snapshot().pods] == ["db", "web"]
    assert [c.name for c in collector.snapshot().pods[1].containers] == ["main"]
    assert "w2" not in collector._prev
    # A snapshot that is not refreshed for three intervals is withdrawn.
    clock[0] = 31.0
    assert not collector.snapshot().pods
    await collector.stop()


async def test_collector_runs_in_the_background_and_stops() -> None:
    source = FakeSource()
    collector = StatsCollector(source, interval=0.05, follow_up=0.01)
    collector.start()
    for _ in range(200):
        source.advance()
        if collector.snapshot().pods:
            break
        await asyncio.sleep(0.01)
    assert collector.snapshot().pods
    await collector.stop()
    passes = collector.passes
    await asyncio.sleep(0.1)
    assert collector.passes == passes
