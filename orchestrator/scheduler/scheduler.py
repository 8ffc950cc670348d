"""The scheduler: watch nodes, pods, claims and volumes, place pending pods, bind them.

    scheduler = Scheduler(client)              # built-in profiles
    await scheduler.start()                    # returns once the caches synced
    ...
    await scheduler.stop()

One task runs scheduling cycles back to back; each cycle is synchronous
(the cache cannot change under it), picks a node, assumes the pod there and
hands the bind to a task of its own, so binds overlap (at most
`max_concurrent_binds` at once) while the next pod is already being placed.
Pods whose spec.schedulerName has no profile here are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.client.client import ApiError, NotFoundError
from orchestrator.client.events import EventRecorder
from orchestrator.client.informer import Informer
from orchestrator.scheduler.algorithm import Algorithm, FitError
from orchestrator.scheduler.binder import (
    REASON_UNSCHEDULABLE,
    BindError,
    bind,
    needs_condition,
    write_condition,
)
from orchestrator.scheduler.cache import SchedulerCache
from orchestrator.scheduler.framework import Profile
from orchestrator.scheduler.podinfo import pod_info
from orchestrator.scheduler.profiles import SchedulerConfig, default_profiles
from orchestrator.scheduler.queue import QueuedPod, SchedulingQueue

log = logging.getLogger(__name__)

COMPONENT = "default-scheduler"
TERMINAL_PHASES = ("Succeeded", "Failed")
CACHE_CLEANUP_PERIOD = 1.0
LATENCY_SAMPLES = 100_000


@dataclass
class SchedulerStats:
    attempts: int = 0
    scheduled: int = 0  # bound
    unschedulable: int = 0  # cycles that found no node
    bind_errors: int = 0
    errors: int = 0
    # Per-pod seconds from entering the queue to the bind returning (the latest).
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))


def _ready_status(node: Any) -> str:
    for c in node.status.conditions:
        if c.type == "Ready":
            return str(c.status)
    return ""


def node_changed_for_scheduling(old: Any, new: Any) -> bool:
    """Whether a node update can change where pods fit (a heartbeat cannot)."""
    return (
        old.spec != new.spec
        or old.metadata.labels != new.metadata.labels
        or old.status.allocatable != new.status.allocatable
        or old.status.capacity != new.status.capacity
        or _ready_status(old) != _ready_status(new)
        or old.status.images != new.status.images
    )


def claim_changed_for_scheduling(old: Any, new: Any) -> bool:
    """Whether a PersistentVolumeClaim update can let a pod using it fit (bound)."""
    return old.spec.volume_name != new.spec.volume_name or old.status.phase != new.status.phase


class _InformerVolumes:
    """The claims and volumes VolumeBinding looks up, from the informers' caches."""

    __slots__ = ("_claims", "_volumes")

    def __init__(self, claims: Informer, volumes: Informer) -> None:
        self._claims = claims
        self._volumes = volumes

    def get_claim(self, namespace: str, name: str) -> Any | None:
        return self._claims.get(f"{namespace}/{name}")

    def get_volume(self, name: str) -> Any | None:
        return self._volumes.get(name)


def pod_changed_for_scheduling(old: Any, new: Any) -> bool:
    """Whether a pod update is more than a status write (Kubernetes' isPodUpdated)."""
    return (
        old.spec != new.spec
        or old.metadata.labels != new.metadata.labels
        or old.metadata.annotations != new.metadata.annotations
        or bool(old.metadata.deletion_timestamp) != bool(new.metadata.deletion_timestamp)
    )


class Scheduler:
    def __init__(
        self,
        client: Any,
        *,
        profiles: Iterable[Profile] | None = None,
        percentage_of_nodes_to_score: int = 0,
        max_concurrent_binds: int = 64,
        record_scheduled_events: bool = True,
        component: str = COMPONENT,
        seed: int | None = None,
    ) -> None:
        if not 0 <= percentage_of_nodes_to_score <= 100:
            raise ValueError(
                "percentage_of_nodes_to_score must be from 0 (adaptive) to 100, "
                f"got {percentage_of_nodes_to_score}"
            )
        self.client = client
        self.profiles: dict[str, Profile] = {}
        for p in profiles if profiles is not None else default_profiles():
            if p.scheduler_name in self.profiles:
                raise ValueError(f"two profiles for schedulerName {p.scheduler_name!r}")
            self.profiles[p.scheduler_name] = p
        self.algorithm = Algorithm(percentage_of_nodes_to_score, seed=seed)
        self.cache = SchedulerCache()
        self.queue = SchedulingQueue()
        self.stats = SchedulerStats()
        self.record_scheduled_events = record_scheduled_events
        self.recorder = EventRecorder(client, "", component=component)
        self._bind_slots = asyncio.Semaphore(max_concurrent_binds)
        self._status_slots = asyncio.Semaphore(16)
        self._node_informer = Informer(client, "Node")
        self._pod_informer = Informer(client, "Pod")
        self._claim_informer = Informer(client, "PersistentVolumeClaim")
        self._volume_informer = Informer(client, "PersistentVolume")
        self._volumes = _InformerVolumes(self._claim_informer, self._volume_informer)
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._stopping = False

    @classmethod
    def from_config(cls, client: Any, config: SchedulerConfig, **kwargs: Any) -> Scheduler:
        """A scheduler with the profiles and percentage of a loaded configuration."""
        return cls(
            client,
            profiles=config.profiles,
            percentage_of_nodes_to_score=config.percentage_of_nodes_to_score,
            **kwargs,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, *, sync_timeout: float = 60.0) -> None:
        """Start watching and scheduling; returns once nodes, pods, claims and
        volumes are cached."""
        self._node_informer.add_handler(self._on_node)
        self._pod_informer.add_handler(self._on_pod)
        self._claim_informer.add_handler(self._on_claim)
        self._volume_informer.add_handler(self._on_volume)
        informers = self._informers()
        for informer in informers:
            informer.start()
        async with asyncio.timeout(sync_timeout):
            for informer in informers:
                await informer.synced.wait()
        self.recorder.start()
        for coro, name in (
            (self._schedule_loop(), "scheduler-loop"),
            (self.queue.run_flushers(), "scheduler-queue-flush"),
            (self._cleanup_loop(), "scheduler-cache-cleanup"),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))
        log.info(
            "scheduler started: %d nodes, profiles %s",
            self.cache.node_count,
            ", ".join(self.profiles),
        )

    async def stop(self) -> None:
        self._stopping = True
        self.queue.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if self._pending:
            await asyncio.wait(self._pending, timeout=10)
        for t in list(self._pending):
            t.cancel()
        for informer in self._informers():
            await informer.stop()
        await self.recorder.stop()

    def _informers(self) -> list[Informer]:
        return [
            self._node_informer,
            self._pod_informer,
            self._claim_informer,
            self._volume_informer,
        ]

    # -- informer events ---------------------------------------------------------------

    def _on_node(self, type_: str, node: Any, old: Any) -> None:
        if type_ == "DELETED":
            self.cache.remove_node(node.metadata.name)
            return
        if old is not None and not node_changed_for_scheduling(old, node):
            return
        self.cache.add_or_update_node(node)
        self.queue.move_all_to_active("NodeAdd" if old is None else "NodeUpdate")

    def _on_pod(self, type_: str, pod: Any, old: Any) -> None:
        m = pod.metadata
        key = f"{m.namespace}/{m.name}"
        if type_ == "DELETED":
            self.queue.delete(key)
            if self.cache.remove_pod(key) is not None:
                self.queue.move_all_to_active("PodDelete")
            return
        if pod.spec.node_name:
            self._on_bound_pod(key, pod, old)
            return
        if self.cache.is_assumed(key):
            return  # we bound it; the informer has not caught up
        if (
            pod.status.phase in TERMINAL_PHASES
            or m.deletion_timestamp
            or pod.spec.scheduling_gates
            or (pod.spec.scheduler_name or COMPONENT) not in self.profiles
        ):
            self.queue.delete(key)
            return
        if old is not None and not pod_changed_for_scheduling(old, pod):
            self.queue.refresh_object(key, pod)
            return
        self.queue.add(pod_info(pod))

    def _on_claim(self, type_: str, pvc: Any, old: Any) -> None:
        # Only the pods using this claim can fit because of it (a deletion helps none).
        if type_ == "DELETED" or (old is not None and not claim_changed_for_scheduling(old, pvc)):
            return
        namespace, name = pvc.metadata.namespace, pvc.metadata.name
        self.queue.move_to_active_if(
            lambda p: name in p.claims and p.namespace == namespace,
            "PersistentVolumeClaimAdd" if old is None else "PersistentVolumeClaimUpdate",
        )

    def _on_volume(self, type_: str, pv: Any, old: Any) -> None:
        # A volume added (or its node affinity changed) may help any pod with claims.
        if type_ == "DELETED" or (old is not None and old.spec == pv.spec):
            return
        self.queue.move_to_active_if(
            lambda p: bool(p.claims),
            "PersistentVolumeAdd" if old is None else "PersistentVolumeUpdate",
        )

    def _on_bound_pod(self, key: str, pod: Any, old: Any) -> None:
        self.queue.delete(key)
        if pod.status.phase in TERMINAL_PHASES:
            # A finished pod holds no resources any more.
            if self.cache.remove_pod(key) is not None:
                self.queue.move_all_to_active("PodTerminated")
            return
        if self.cache.confirm(key, pod):
            return
        if (
            old is not None
            and old.spec.node_name == pod.spec.node_name
            and self.cache.has_pod(key)
            and not pod_changed_for_scheduling(old, pod)
        ):
            return  # a status update of a placed pod
        self.cache.add_or_update_pod(pod_info(pod))

    # -- the scheduling loop -----------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while not self._stopping:
            await self._bind_slots.acquire()
            qp = await self.queue.pop()
            if qp is None:
                self._bind_slots.release()
                return
            placed = False
            try:
                placed = self.schedule_one(qp)
            except Exception:
                self.stats.errors += 1
                log.exception("scheduling pod %s failed", qp.key)
                self.queue.add_backoff(qp)
            if not placed:
                self._bind_slots.release()
            # Let watch events and binds through between cycles.
            await asyncio.sleep(0)

    def schedule_one(self, qp: QueuedPod) -> bool:
        """One cycle for qp; True when the pod was assumed and its bind started."""
        info = qp.info
        key = info.key
        profile = self.profiles.get(info.scheduler_name)
        if profile is None or self.cache.has_pod(key):
            self.queue.done(key)
            return False
        self.stats.attempts += 1
        try:
            snapshot = self.cache.snapshot()
            snapshot.volumes = self._volumes
            result = self.algorithm.schedule(profile, info, snapshot)
        except FitError as err:
            self.stats.unschedulable += 1
            qp.reasons = str(err)
            self.queue.add_unschedulable(qp)
            self._report_unschedulable(info.pod, qp.reasons)
            return False
        self.cache.assume(info, result.node)
        self.queue.done(key)
        self._spawn(self._bind(qp, result.node))
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _bind(self, qp: QueuedPod, node: str) -> None:
        pod = qp.info.pod
        key = qp.key
        try:
            bound = await bind(self.client, pod, node)
        except (BindError, ApiError) as exc:
            self.cache.forget(key)
            if isinstance(exc, NotFoundError) or self._pod_informer.get(key) is None:
                return  # deleted meanwhile
            self.stats.bind_errors += 1
            message = f"Binding rejected: {exc}"
            log.info("pod %s: %s", key, message)
            self.recorder.record(pod, "Warning", "FailedScheduling", message)
            qp.reasons = message
            self.queue.add_backoff(qp)
            return
        finally:
            self._bind_slots.release()
        self.cache.finish_binding(key)
        self.stats.scheduled += 1
        self.stats.latencies.append(time.monotonic() - qp.first_seen)
        if self.record_scheduled_events:
            self.recorder.record(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {pod.metadata.namespace}/{pod.metadata.name} to {node}",
            )
        # The bind was a spec update and the status subresource is apart: a pod
        # that was reported Unschedulable is told otherwise here. (Pods that
        # never failed get PodScheduled from their node's agent, saving a write.)
        c = next((c for c in bound.status.conditions if c.type == "PodScheduled"), None)
        if c is not None and c.status != "True":
            await self._write_condition(bound, "True", "", "")

    def _report_unschedulable(self, pod: Any, message: str) -> None:
        log.debug("pod %s/%s unschedulable: %s", pod.metadata.namespace, pod.metadata.name, message)
        self.recorder.record(pod, "Warning", "FailedScheduling", message)
        if needs_condition(pod, "False", REASON_UNSCHEDULABLE, message):
            self._spawn(self._write_condition(pod, "False", REASON_UNSCHEDULABLE, message))

    async def _write_condition(self, pod: Any, status: str, reason: str, message: str) -> None:
        async with self._status_slots:
            try:
                await write_condition(self.client, pod, status, reason, message)
            except NotFoundError:
                pass
            except ApiError as exc:
                log.info(
                    "pod %s/%s: PodScheduled=%s not written: %s",
                    pod.metadata.namespace,
                    pod.metadata.name,
                    status,
                    exc,
                )

    async def _cleanup_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(CACHE_CLEANUP_PERIOD)
            for key in self.cache.cleanup_expired():
                pod = self._pod_informer.get(key)
                if pod is not None and not pod.spec.node_name:
                    self.queue.add(pod_info(pod))
