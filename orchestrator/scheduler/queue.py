"""The scheduling queue: which pending pod to try next, and when to retry.

Three places a pod can wait, as in Kubernetes:

- active: a heap, highest priority first, then oldest (creation time);
- backoff: pods that failed recently wait 1 s, doubling per attempt up to
  10 s, before going back to active;
- unschedulable: pods no node fits. Nothing will change for them until the
  cluster does, so they wait for a cluster event (a node added or changed,
  a pod deleted) to move them back, or for the periodic flush after 60 s.
  Some events can only help some pods (a claim bound: the pods using it),
  and move only those.

A pod being scheduled is "in flight"; an update or deletion that arrives
meanwhile is remembered and applied when its cycle ends, so it is not lost.
If the cluster changed while a pod was in flight, a failure sends it to
backoff rather than unschedulable: the change may have been what it needed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.scheduler.podinfo import PodInfo

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
UNSCHEDULABLE_TIMEOUT = 60.0
BACKOFF_FLUSH_PERIOD = 1.0
UNSCHEDULABLE_FLUSH_PERIOD = 30.0


@dataclass(slots=True)
class QueuedPod:
    info: PodInfo
    attempts: int = 0
    timestamp: float = 0.0  # when it last entered a queue (or failed)
    first_seen: float = 0.0  # when it first entered the queue
    seq: int = 0  # the live heap entry; older entries are stale
    cycle: int = 0  # the scheduling cycle it was last popped in
    reasons: str = ""  # the last failure message, for logs and tests

    @property
    def key(self) -> str:
        return self.info.key


_DELETED = object()  # in-flight marker: the pod went away during its cycle


class SchedulingQueue:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        unschedulable_timeout: float = UNSCHEDULABLE_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._initial = initial_backoff
        self._max = max_backoff
        self._unschedulable_timeout = unschedulable_timeout
        self._seq = itertools.count()
        self._active_heap: list[tuple[int, str, float, int, str]] = []
        self._active: dict[str, QueuedPod] = {}
        self._backoff_heap: list[tuple[float, int, str]] = []
        self._backoff: dict[str, QueuedPod] = {}
        self._unschedulable: dict[str, QueuedPod] = {}
        self._in_flight: dict[str, object] = {}  # key -> newer PodInfo, _DELETED or None
        self._wakeup = asyncio.Event()
        self._closed = False
        self.scheduling_cycle = 0
        self._move_request_cycle = -1

    # -- sizes ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._active) + len(self._backoff) + len(self._unschedulable)

    def counts(self) -> dict[str, int]:
        return {
            "active": len(self._active),
            "backoff": len(self._backoff),
            "unschedulable": len(self._unschedulable),
            "in_flight": len(self._in_flight),
        }

    def where(self, key: str) -> str | None:
        """Which sub-queue holds key: "active", "backoff", "unschedulable",
        "in_flight", or None."""
        for name, queue in (
            ("active", self._active),
            ("backoff", self._backoff),
            ("unschedulable", self._unschedulable),
            ("in_flight", self._in_flight),
        ):
            if key in queue:
                return name
        return None

    # -- entering and leaving ----------------------------------------------------------

    def _push_active(self, qp: QueuedPod) -> None:
        qp.seq = next(self._seq)
        info = qp.info
        heapq.heappush(
            self._active_heap, (-info.priority, info.created, qp.timestamp, qp.seq, info.key)
        )
        self._active[info.key] = qp
        self._wakeup.set()

    def _push_backoff(self, qp: QueuedPod) -> None:
        qp.seq = next(self._seq)
        heapq.heappush(self._backoff_heap, (self.backoff_expiry(qp), qp.seq, qp.key))
        self._backoff[qp.key] = qp

    def backoff_expiry(self, qp: QueuedPod) -> float:
        delay = self._initial * 2 ** max(qp.attempts - 1, 0)
        return qp.timestamp + min(delay, self._max)

    def add(self, info: PodInfo) -> None:
        """A new pending pod, or one seen again: queue it unless it is queued."""
        key = info.key
        if key in self._in_flight:
            self._in_flight[key] = info
            return
        if key in self._active or key in self._backoff or key in self._unschedulable:
            self.update(info)
            return
        now = self._clock()
        self._push_active(QueuedPod(info, timestamp=now, first_seen=now))

    def update(self, info: PodInfo) -> None:
        """The pod changed: an unschedulable pod gets another try, since the
        change (a toleration, a smaller request) may be what it needed."""
        key = info.key
        if key in self._in_flight:
            self._in_flight[key] = info
            return
        if key in self._active:
            qp = self._active[key]
            qp.info = info
            self._push_active(qp)  # the priority may have changed; the old entry goes stale
            return
        if key in self._backoff:
            self._backoff[key].info = info
            return
        qp_u = self._unschedulable.pop(key, None)
        if qp_u is None:
            self.add(info)
            return
        qp_u.info = info
        self._requeue_after_change(qp_u)

    def refresh_object(self, key: str, pod: object) -> None:
        """A newer resourceVersion of a waiting pod whose spec and labels did not
        change (a status write): keep it, so binding does not start from a
        stale version, but do not count it as a reason to retry."""
        for queue in (self._active, self._backoff, self._unschedulable):
            qp = queue.get(key)
            if qp is not None:
                qp.info.pod = pod
                return

    def delete(self, key: str) -> None:
        if key in self._in_flight:
            self._in_flight[key] = _DELETED
            return
        self._active.pop(key, None)  # its heap entry goes stale
        self._backoff.pop(key, None)
        self._unschedulable.pop(key, None)

    async def pop(self) -> QueuedPod | None:
        """The next pod to schedule; None once the queue is closed."""
        while True:
            if self._closed:
                return None
            while self._active_heap:
                *_, seq, key = heapq.heappop(self._active_heap)
                qp = self._active.get(key)
                if qp is None or qp.seq != seq:
                    continue  # stale entry
                del self._active[key]
                self.scheduling_cycle += 1
                qp.cycle = self.scheduling_cycle
                qp.attempts += 1
                self._in_flight[key] = None
                return qp
            self._wakeup.clear()
            await self._wakeup.wait()

    def _finish(self, qp: QueuedPod) -> bool:
        """End qp's flight; False when the pod was deleted meanwhile. A newer
        version that arrived in flight replaces qp.info."""
        newer = self._in_flight.pop(qp.key, None)
        if newer is _DELETED:
            return False
        if isinstance(newer, PodInfo):
            qp.info = newer
        return True

    def done(self, key: str) -> None:
        """The pod's cycle ended with a placement (assumed, binding)."""
        self._in_flight.pop(key, None)

    def add_unschedulable(self, qp: QueuedPod) -> None:
        """No node fits qp now."""
        updated = isinstance(self._in_flight.get(qp.key), PodInfo)
        if not self._finish(qp):
            return
        qp.timestamp = self._clock()
        if updated:
            self._requeue_after_change(qp)
        elif self._move_request_cycle >= qp.cycle:
            # The cluster changed while this pod was being scheduled.
            self._push_backoff(qp)
        else:
            self._unschedulable[qp.key] = qp

    def add_backoff(self, qp: QueuedPod) -> None:
        """qp failed for a transient reason (a bind error): retry after backoff."""
        if not self._finish(qp):
            return
        qp.timestamp = self._clock()
        self._push_backoff(qp)

    def _requeue_after_change(self, qp: QueuedPod) -> None:
        if self.backoff_expiry(qp) > self._clock():
            self._push_backoff(qp)
        else:
            self._push_active(qp)

    # -- cluster events and timers -----------------------------------------------------

    def move_all_to_active(self, event: str = "") -> int:
        """Something in the cluster changed that may let unschedulable pods fit."""
        moved = list(self._unschedulable.values())
        self._unschedulable.clear()
        for qp in moved:
            self._requeue_after_change(qp)
        self._move_request_cycle = self.scheduling_cycle
        return len(moved)

    def move_to_active_if(self, wanted: Callable[[PodInfo], bool], event: str = "") -> int:
        """A cluster change that can only help some unschedulable pods (Kubernetes'
        queueing hints): move those for which wanted(pod) holds, leave the rest."""
        moved = [qp for qp in self._unschedulable.values() if wanted(qp.info)]
        for qp in moved:
            del self._unschedulable[qp.key]
            self._requeue_after_change(qp)
        # A pod in flight is not checked: if it fails, it retries after backoff.
        self._move_request_cycle = self.scheduling_cycle
        return len(moved)

    def flush_backoff(self) -> int:
        now = self._clock()
        moved = 0
        while self._backoff_heap and self._backoff_heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._backoff_heap)
            qp = self._backoff.get(key)
            if qp is None or qp.seq != seq:
                continue
            del self._backoff[key]
            self._push_active(qp)
            moved += 1
        return moved

    def flush_unschedulable(self) -> int:
        """Pods left unschedulable too long get another try anyway: an event
        that should have moved them may not be one we watch."""
        now = self._clock()
        stale = [
            qp
            for qp in self._unschedulable.values()
            if now - qp.timestamp >= self._unschedulable_timeout
        ]
        for qp in stale:
            del self._unschedulable[qp.key]
            self._requeue_after_change(qp)
        return len(stale)

    async def run_flushers(self) -> None:
        last_unschedulable = self._clock()
        while not self._closed:
            await asyncio.sleep(BACKOFF_FLUSH_PERIOD)
            self.flush_backoff()
            if self._clock() - last_unschedulable >= UNSCHEDULABLE_FLUSH_PERIOD:
                last_unschedulable = self._clock()
                self.flush_unschedulable()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
