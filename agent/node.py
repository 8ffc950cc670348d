"""The node's own objects: its Node (capacity, addresses, conditions, images)
and its Lease heartbeat in kube-node-lease, as the kubelet keeps them."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.api.kinds import kind_info
from orchestrator.api.meta import now_rfc3339
from orchestrator.client.client import AlreadyExistsError, ConflictError, NotFoundError

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
MAX_PODS = 110
AGENT_PORT = 10250
# Kept back from allocatable for the system and the agent itself, as
# kube-reserved/system-reserved do.
RESERVED_CPU_MILLIS = 100
RESERVED_MEMORY_BYTES = 256 * 1024 * 1024
CONDITION_TYPES = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


@dataclass(frozen=True)
class Condition:
    status: str  # "True" / "False" / "Unknown"
    reason: str
    message: str


@dataclass
class NodeFacts:
    """What the node is, read from the machine (injectable for tests)."""

    cpus: int
    memory_bytes: int
    ephemeral_bytes: int
    kernel: str
    os_image: str
    architecture: str
    machine_id: str = ""
    boot_id: str = ""
    hostname: str = ""
    extra_labels: dict[str, str] = field(default_factory=dict)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def _memory_bytes() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def machine_facts(data_dir: Path) -> NodeFacts:
    stat = os.statvfs(data_dir)
    return NodeFacts(
        cpus=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        ephemeral_bytes=stat.f_blocks * stat.f_frsize,
        kernel=platform.release(),
        os_image=_os_image(),
        architecture=_ARCH.get(platform.machine(), platform.machine()),
        machine_id=_read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        hostname=platform.node(),
    )


def _set_conditions(status: Any, conditions: dict[str, Condition], now: str) -> None:
    """Replace conditions, keeping lastTransitionTime where the status held."""
    previous = {c.type: c for c in status.conditions}
    del status.conditions[:]
    for ctype in CONDITION_TYPES:
        cond = conditions[ctype]
        c = status.conditions.add()
        c.type = ctype
        c.status = cond.status
        c.reason = cond.reason
        c.message = cond.message
        c.last_heartbeat_time = now
        before = previous.get(ctype)
        if before is not None and before.status == cond.status:
            c.last_transition_time = before.last_transition_time
        else:
            c.last_transition_time = now


def build_node_status(
    node: Any,
    facts: NodeFacts,
    node_ip: str,
    conditions: dict[str, Condition],
    runtime_version: str,
    images: list[tuple[list[str], int]],
    now: str,
    agent_port: int = AGENT_PORT,
) -> None:
    """Fill node.status (and the node's well-known labels) from what we know."""
    labels = node.metadata.labels
    labels["kubernetes.io/hostname"] = node.metadata.name
    labels["kubernetes.io/os"] = "linux"
    labels["kubernetes.io/arch"] = facts.architecture
    labels.update(facts.extra_labels)
    status = node.status
    capacity = {
        "cpu": str(facts.cpus),
        "memory": f"{facts.memory_bytes // 1024}Ki",
        "pods": str(MAX_PODS),
        "ephemeral-storage": f"{facts.ephemeral_bytes // 1024}Ki",
    }
    allocatable = dict(capacity)
    allocatable["cpu"] = f"{max(0, facts.cpus * 1000 - RESERVED_CPU_MILLIS)}m"
    allocatable["memory"] = f"{max(0, facts.memory_bytes - RESERVED_MEMORY_BYTES) // 1024}Ki"
    status.capacity.clear()
    status.capacity.update(capacity)
    status.allocatable.clear()
    status.allocatable.update(allocatable)
    del status.addresses[:]
    status.addresses.add(type="InternalIP", address=node_ip)
    status.addresses.add(type="Hostname", address=node.metadata.name)
    _set_conditions(status, conditions, now)
    info = status.node_info
    info.kernel_version = facts.kernel
    info.os_image = facts.os_image
    info.operating_system = "linux"
    info.architecture = facts.architecture
    info.machine_id = facts.machine_id
    info.boot_id = facts.boot_id
    info.container_runtime_version = runtime_version
    info.kubelet_version = f"orch-agent/v{__version__}"
    status.daemon_endpoints.kubelet_endpoint.port = agent_port
    del status.images[:]
    for names, size in sorted(images, key=lambda i: -i[1])[:50]:
        img = status.images.add()
        img.names.extend(names)
        img.size_bytes = float(size)


def healthy_conditions(runtime_error: str | None) -> dict[str, Condition]:
    ready = (
        Condition("True", "KubeletReady", "orch-agent is posting ready status")
        if runtime_error is None
        else Condition(
            "False", "ContainerRuntimeUnhealthy", f"container runtime is down: {runtime_error}"
        )
    )
    return {
        "Ready": ready,
        "MemoryPressure": Condition(
            "False", "KubeletHasSufficientMemory", "orch-agent has sufficient memory available"
        ),
        "DiskPressure": Condition(
            "False", "KubeletHasNoDiskPressure", "orch-agent has no disk pressure"
        ),
        "PIDPressure": Condition(
            "False", "KubeletHasSufficientPID", "orch-agent has sufficient PID available"
        ),
    }


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeReporter:
    """Registers the Node, keeps its status fresh and its Lease renewed."""

    def __init__(
        self,
        client: Any,
        node_name: str,
        node_ip: str,
        facts: NodeFacts,
        *,
        runtime_version: Callable[[], Awaitable[str]],
        images: Callable[[], Awaitable[list[tuple[list[str], int]]]],
        lease_duration: int = 40,
        heartbeat_interval: float = 10.0,
        status_interval: float = 10.0,
        agent_port: int = AGENT_PORT,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.node_ip = node_ip
        self.facts = facts
        self._runtime_version = runtime_version
        self._images = images
        self.lease_duration = lease_duration
        self.heartbeat_interval = heartbeat_interval
        self.status_interval = status_interval
        self.agent_port = agent_port

    async def _observe(self) -> tuple[dict[str, Condition], str, list[tuple[list[str], int]]]:
        try:
            version = await self._runtime_version()
            images = await self._images()
            return healthy_conditions(None), version, images
        except Exception as exc:  # the runtime is what failed: report it, keep going
            return healthy_conditions(str(exc) or type(exc).__name__), "unknown", []

    async def annotate(self, annotations: dict[str, str]) -> Any:
        """Publish annotations on our Node (the overlay's VTEP MAC and underlay
        IP, which peer nodes read). register() keeps them: it copies the Node."""
        for _attempt in range(10):
            node = await self.client.get("Node", self.node_name)
            if all(node.metadata.annotations.get(k) == v for k, v in annotations.items()):
                return node
            fresh = type(node)()
            fresh.CopyFrom(node)
            fresh.metadata.annotations.update(annotations)
            try:
                return await self.client.update(fresh)
            except ConflictError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"node {self.node_name}: annotating it kept conflicting")

    async def register(self) -> Any:
        """Create our Node, or bring an existing one up to date."""
        conditions, version, images = await self._observe()
        for _attempt in range(10):
            try:
                node = await self.client.get("Node", self.node_name)
            except NotFoundError:
                node = kind_info("Node").new()
                node.metadata.name = self.node_name
                build_node_status(
                    node,
                    self.facts,
                    self.node_ip,
                    conditions,
                    version,
                    images,
                    now_rfc3339(),
                    self.agent_port,
                )
                try:
                    await self.client.create(node)
                except AlreadyExistsError:
                    continue
                # Controllers (pod CIDR allocation) may update the Node at once:
                # write status on a fresh read, retrying on conflicts.
                return await self.update_status()
            fresh = type(node)()
            fresh.CopyFrom(node)
            build_node_status(
                fresh,
                self.facts,
                self.node_ip,
                conditions,
                version,
                images,
                now_rfc3339(),
                self.agent_port,
            )
            try:
                await self.client.update(fresh)  # labels
            except ConflictError:
                continue
            return await self.update_status()
        raise RuntimeError(f"could not register node {self.node_name}: too many conflicts")

    async def _write_status(
        self,
        node: Any,
        conditions: dict[str, Condition],
        version: str,
        images: list[tuple[list[str], int]],
    ) -> Any:
        fresh = type(node)()
        fresh.CopyFrom(node)
        build_node_status(
            fresh,
            self.facts,
            self.node_ip,
            conditions,
            version,
            images,
            now_rfc3339(),
            self.agent_port,
        )
        return await self.client.update_status(fresh)

    async def update_status(self) -> Any:
        conditions, version, images = await self._observe()
        for _attempt in range(10):
            node = await self.client.get("Node", self.node_name)
            try:
                return await self._write_status(node, conditions, version, images)
            except ConflictError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"node {self.node_name}: its status update kept conflicting")

    async def renew_lease(self) -> Any:
        try:
            lease = await self.client.get("Lease", self.node_name, NODE_LEASE_NAMESPACE)
        except NotFoundError:
            lease = kind_info("Lease").new()
            lease.metadata.name = self.node_name
            lease.metadata.namespace = NODE_LEASE_NAMESPACE
            lease.spec.holder_identity = self.node_name
            lease.spec.lease_duration_seconds = self.lease_duration
            lease.spec.acquire_time = micro_now()
            lease.spec.renew_time = micro_now()
            try:
                return await self.client.create(lease)
            except AlreadyExistsError:
                lease = await self.client.get("Lease", self.node_name, NODE_LEASE_NAMESPACE)
        fresh = type(lease)()
        fresh.CopyFrom(lease)
        fresh.spec.holder_identity = self.node_name
        fresh.spec.lease_duration_seconds = self.lease_duration
        fresh.spec.renew_time = micro_now()
        return await self.client.update(fresh)

    async def run(self) -> None:
        """Heartbeat and status loops until cancelled; failures are logged and retried."""
        await asyncio.gather(
            self._loop(self.renew_lease, self.heartbeat_interval, "lease renewal"),
            self._loop(self.update_status, self.status_interval, "node status update"),
        )

    async def _loop(self, step: Callable[[], Awaitable[Any]], interval: float, what: str) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed: %s", what, exc)
            # Jitter keeps a fleet of agents from beating in lockstep.
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))
