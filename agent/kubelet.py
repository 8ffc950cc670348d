"""The kubelet: runs the pods bound to this node as Docker containers.

    kubelet = Kubelet(client, runtime, network, "node-1", "192.0.2.11", Path("/var/lib/orch"))
    await kubelet.start()
    ...
    await kubelet.stop()   # leaves the pods running: a restarted agent adopts them

Pieces: an informer on the node's pods feeds one serialized worker per pod
(agent/pods/worker.py); each sync computes actions from the pod and its
containers (agent/pods/actions.py) and carries them out (agent/pods/sync.py).
A relist loop (the kubelet's PLEG) polls the runtime and wakes the workers of
pods whose containers changed state; a garbage collector removes the
containers of pods this node no longer has and dead containers beyond the
newest per container name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.network.types import PodNetwork
from agent.pods.actions import BackOff
from agent.pods.endpoints_gate import DEFAULT_PROPAGATION_DELAY, EndpointsGate, client_lister
from agent.pods.podutil import newest_first
from agent.pods.sync import PodSyncer
from agent.pods.worker import PodWorkers
from agent.probes import ProbeManager
from agent.runtime.types import (
    LABEL_TERMINATION_MESSAGE_PATH,
    ContainerInfo,
    ContainerState,
    PodRuntime,
)
from agent.volumes import Mounter, VolumeManager
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import Informer

log = logging.getLogger(__name__)


class Kubelet:
    def __init__(
        self,
        client: Any,
        runtime: PodRuntime,
        network: PodNetwork,
        node_name: str,
        node_ip: str,
        root_dir: Path | str,
        *,
        resync: float = 10.0,
        pause_image: str = "busybox:1.36",
        pause_command: list[str] | None = None,
        relist_interval: float = 1.0,
        gc_interval: float = 30.0,
        backoff: BackOff | None = None,
        mounter: Mounter | None = None,
        clock: Callable[[], datetime] | None = None,
        cluster_dns: str = "10.96.0.10",
        cluster_domain: str = "cluster.local",
        endpoints_propagation_delay: float | None = DEFAULT_PROPAGATION_DELAY,
    ) -> None:
        self.client = client
        self.runtime = runtime
        self.network = network
        self.node_name = node_name
        self.node_ip = node_ip
        self.root_dir = Path(root_dir)
        self.relist_interval = relist_interval
        self.gc_interval = gc_interval
        self.clock = clock or (lambda: datetime.now(UTC))
        self.events = EventRecorder(client, node_name, component="orch-agent", clock=self.clock)
        self.volumes = VolumeManager(self.root_dir, client, mounter=mounter)
        self.workers = PodWorkers(self._sync, self._kill, self._remove, resync=resync)
        self.probes = ProbeManager(
            runtime, self.workers.wake, events=self._probe_event, clock=self.clock
        )
        # None: a deleted pod is signalled at once, without leaving its endpoints first.
        gate = (
            None
            if endpoints_propagation_delay is None
            else EndpointsGate(client_lister(client), propagation_delay=endpoints_propagation_delay)
        )
        self.syncer = PodSyncer(
            client,
            runtime,
            network,
            self.volumes,
            self.probes,
            self.events,
            node_name=node_name,
            node_ip=node_ip,
            root_dir=self.root_dir,
            pause_image=pause_image,
            pause_command=pause_command,
            backoff=backoff,
            clock=self.clock,
            cluster_dns=cluster_dns,
            cluster_domain=cluster_domain,
            endpoints_gate=gate,
        )
        self.informer = Informer(client, "Pod", field_selector=f"spec.nodeName={node_name}")
        self.informer.add_handler(self._on_pod_event)
        self._tasks: list[asyncio.Task[None]] = []
        self._last_states: dict[str, tuple[str, ContainerState]] = {}
        self.started = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.volumes.pods_dir().mkdir(parents=True, exist_ok=True)
        self.events.start()
        self.informer.start()
        await self.informer.synced.wait()
        # Existing containers are adopted by the workers' first syncs: running
        # containers with the right spec hash satisfy their pods.
        self._tasks.append(asyncio.create_task(self._relist_loop(), name="kubelet-relist"))
        self._tasks.append(asyncio.create_task(self._gc_loop(), name="kubelet-gc"))
        self.started.set()
        log.info("kubelet for node %s started", self.node_name)

    async def stop(self) -> None:
        """Stop watching and syncing; the pods' containers keep running."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.informer.stop()
        await self.workers.stop()
        await self.probes.stop()
        await self.events.stop()

    # -- informer ---------------------------------------------------------------------------

    def _on_pod_event(self, type_: str, pod: Any, old: Any) -> None:
        if pod.spec.node_name != self.node_name:
            return
        if type_ == "DELETED":
            self.workers.remove_pod(pod.metadata.uid, pod)
        else:
            self.workers.update_pod(pod)

    def pods(self) -> list[Any]:
        return self.informer.list()

    async def find_container(
        self, namespace: str, pod_name: str, container: str = "", *, previous: bool = False
    ) -> ContainerInfo | None:
        """The container behind `pod/container` (logs, exec): the current one,
        or with `previous` the one before it. An empty name means the pod's
        first container."""
        pod = self.informer.get(f"{namespace}/{pod_name}")
        if pod is None:
            return None
        name = container or (pod.spec.containers[0].name if pod.spec.containers else "")
        mine = [
            c
            for c in await self.runtime.list_containers(pod.metadata.uid)
            if c.name == name and c.type != "sandbox"
        ]
        ordered = newest_first(mine)
        index = 1 if previous else 0
        return ordered[index] if len(ordered) > index else None

    # -- worker callbacks ----------------------------------------------------------------

    async def _sync(self, pod: Any) -> float | None:
        return await self.syncer.sync_pod(pod)

    async def _kill(self, pod: Any) -> None:
        await self.syncer.kill_pod(pod)

    async def _remove(self, uid: str, pod: Any) -> None:
        await self.syncer.remove_pod(uid, pod)

    def _probe_event(self, pod: Any, type_: str, reason: str, message: str) -> None:
        self.events.record(pod, type_, reason, message)

    # -- relist (PLEG) -------------------------------------------------------------------

    async def relist(self) -> list[ContainerInfo]:
        containers = await self.runtime.list_containers()
        states = {c.id: (c.pod_uid, c.state) for c in containers}
        changed: set[str] = set()
        for cid, (uid, state) in states.items():
            before = self._last_states.get(cid)
            if before is None or before[1] != state:
                changed.add(uid)
        for cid, (uid, _state) in self._last_states.items():
            if cid not in states:
                changed.add(uid)
        self._last_states = states
        for uid in changed:
            self.workers.wake(uid)
        return containers

    async def _relist_loop(self) -> None:
        while True:
            try:
                await self.relist()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relisting containers failed: %s", exc)
            await asyncio.sleep(self.relist_interval)

    # -- garbage collection ----------------------------------------------------------------

    async def collect_garbage(self) -> None:
        if not self.informer.synced.is_set():
            return
        containers = await self.runtime.list_containers()
        # After the list: a worker exists before it creates any container.
        known = {p.metadata.uid for p in self.informer.list()} | self.workers.known()
        by_pod: dict[str, list[ContainerInfo]] = {}
        for c in containers:
            by_pod.setdefault(c.pod_uid, []).append(c)
        for uid, mine in by_pod.items():
            if uid not in known:
                log.info("removing the containers of pod %s, which this node no longer has", uid)
                await self.syncer.remove_pod(uid)
                continue
            await self._remove_dead(mine)
        for uid in self.volumes.known_pod_uids():
            if uid not in known and uid not in by_pod:
                try:
                    await self.volumes.teardown(uid)
                except OSError as exc:
                    log.warning("removing the directory of pod %s: %s", uid, exc)

    async def _remove_dead(self, containers: list[ContainerInfo]) -> None:
        """Keep the newest dead container per (type, name); remove older dead ones."""
        groups: dict[tuple[str, str], list[ContainerInfo]] = {}
        for c in containers:
            groups.setdefault((c.type, c.name), []).append(c)
        for group in groups.values():
            dead_seen = False
            for c in newest_first(group):
                if c.state == ContainerState.RUNNING:
                    continue
                if c.state == ContainerState.CREATED and not (c.error or c.finished_at):
                    continue  # being started
                if not dead_seen:
                    dead_seen = True
                    continue
                try:
                    await self.runtime.remove_container(c.id)
                except Exception as exc:
                    log.warning("removing dead container %s: %s", c.id[:12], exc)
                    continue
                self._remove_message_file(c)

    def _remove_message_file(self, c: ContainerInfo) -> None:
        """The termination message file goes with its container (only ever
        one the agent made, under its own pods directory)."""
        path = c.labels.get(LABEL_TERMINATION_MESSAGE_PATH, "")
        pods = str(self.volumes.pods_dir()) + "/"
        if path.startswith(pods) and ".." not in path:
            with contextlib.suppress(OSError):
                Path(path).unlink()

    async def _gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self.gc_interval)
            try:
                await self.collect_garbage()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("garbage collection failed: %s", exc)
