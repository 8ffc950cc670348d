"""One serialized worker per pod, as the kubelet's pod workers.

Each pod UID gets one asyncio task that runs its syncs one at a time. An
update while a sync runs is not queued up: the worker keeps only the newest
desired pod and syncs that next. Once a pod is to be terminated (a
deletionTimestamp, or gone from the API) that is never dropped or undone by
a later update. Between events the worker resyncs on a jittered timer, and
sooner when the sync asks for it (a back-off expiring) or when `wake` is
called (a container changed state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.runtime.types import RuntimeUnavailableError
from orchestrator.client.client import ApiError

log = logging.getLogger(__name__)

SyncFn = Callable[[Any], Awaitable[float | None]]
KillFn = Callable[[Any], Awaitable[None]]
RemoveFn = Callable[[str, Any], Awaitable[None]]

# Failures worth a line in the log but not a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    LookupError,
    TimeoutError,
    RuntimeUnavailableError,
    ApiError,
)
ERROR_BACKOFF_INITIAL = 1.0
ERROR_BACKOFF_MAX = 30.0


@dataclass
class _PodWorker:
    uid: str
    pod: Any
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    terminating: bool = False
    removed: bool = False
    killed: bool = False
    task: asyncio.Task[None] | None = None
    syncs: int = 0
    error_backoff: float = 0.0


class PodWorkers:
    def __init__(
        self,
        sync: SyncFn,
        kill: KillFn,
        remove: RemoveFn,
        *,
        resync: float = 10.0,
        jitter: float = 0.2,
    ) -> None:
        self._sync = sync
        self._kill = kill
        self._remove = remove
        self.resync = resync
        self.jitter = jitter
        self._workers: dict[str, _PodWorker] = {}
        self._stopping = False

    # -- inputs ------------------------------------------------------------------------

    def update_pod(self, pod: Any) -> None:
        uid = pod.metadata.uid
        w = self._workers.get(uid)
        if w is None:
            if self._stopping:
                return
            w = _PodWorker(uid, pod)
            self._workers[uid] = w
            w.task = asyncio.create_task(self._run(w), name=f"pod-worker-{pod.metadata.name}")
        else:
            before, w.pod = w.pod, pod  # the newest wins; no queue of stale specs
            if not _wants_changed(before, pod):
                # Our own status write coming back: waking would cut a back-off short.
                return
        if pod.metadata.deletion_timestamp:
            w.terminating = True
        w.wake.set()

    def remove_pod(self, uid: str, pod: Any | None = None) -> None:
        """The pod is gone from the API: stop and remove its containers."""
        w = self._workers.get(uid)
        if w is None:
            if self._stopping or pod is None:
                return
            w = _PodWorker(uid, pod)
            self._workers[uid] = w
            w.task = asyncio.create_task(self._run(w), name=f"pod-worker-{pod.metadata.name}")
        if pod is not None:
            w.pod = pod
        w.terminating = True
        w.removed = True
        w.wake.set()

    def wake(self, uid: str) -> None:
        w = self._workers.get(uid)
        if w is not None:
            w.wake.set()

    def known(self) -> set[str]:
        return set(self._workers)

    def is_terminating(self, uid: str) -> bool:
        w = self._workers.get(uid)
        return bool(w and w.terminating)

    def syncs(self, uid: str) -> int:
        w = self._workers.get(uid)
        return w.syncs if w else 0

    async def stop(self) -> None:
        """Stop the workers without touching the pods (an agent restart adopts them)."""
        self._stopping = True
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._workers.clear()

    async def wait_idle(self, uid: str, timeout: float = 10.0) -> None:
        """For tests: until the worker has finished (a removed pod)."""
        w = self._workers.get(uid)
        if w is not None and w.task is not None:
            await asyncio.wait_for(asyncio.shield(w.task), timeout)

    # -- the loop --------------------------------------------------------------------------

    def _next_resync(self) -> float:
        spread = self.resync * self.jitter
        return max(0.05, self.resync + random.uniform(-spread, spread))

    async def _run(self, w: _PodWorker) -> None:
        try:
            while True:
                w.wake.clear()
                pod = w.pod
                wait: float | None = None
                try:
                    if w.removed:
                        await self._remove(w.uid, pod)
                        return
                    if w.terminating:
                        await self._kill(pod)
                        w.killed = True
                    else:
                        wait = await self._sync(pod)
                    w.error_backoff = 0.0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    w.error_backoff = min(
                        ERROR_BACKOFF_MAX, (w.error_backoff * 2) or ERROR_BACKOFF_INITIAL
                    )
                    wait = w.error_backoff
                    log.warning(
                        "pod %s/%s: sync failed (retry in %.0fs): %s",
                        pod.metadata.namespace,
                        pod.metadata.name,
                        wait,
                        exc,
                        exc_info=not isinstance(exc, EXPECTED_ERRORS),
                    )
                finally:
                    w.syncs += 1
                timeout = self._next_resync()
                if wait is not None:
                    timeout = min(timeout, max(0.0, wait))
                if not w.wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(w.wake.wait(), timeout)
        finally:
            if w.removed and self._workers.get(w.uid) is w:
                del self._workers[w.uid]


def _wants_changed(before: Any, after: Any) -> bool:
    """Whether an update changes what the pod's worker acts on (spec, labels
    and annotations for downward API files, deletion), not just its status."""
    a, b = before.metadata, after.metadata
    return (
        before.spec != after.spec
        or a.deletion_timestamp != b.deletion_timestamp
        or a.labels != b.labels
        or a.annotations != b.annotations
    )
