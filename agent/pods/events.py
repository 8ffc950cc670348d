"""Events about pods (core/v1 Event), deduplicated as the kubelet's recorder does:
a repeat of the same (object, type, reason, message) bumps count and
lastTimestamp on one Event named `<pod>.<hash>` instead of adding another.

Recording never blocks a pod's sync: events go through a queue that a
background task drains; a failure to write one is logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent.pods.podutil import fmt_time
from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import AlreadyExistsError, ApiError, ConflictError, NotFoundError

log = logging.getLogger(__name__)

COMPONENT = "orch-agent"
MAX_QUEUE = 1000
MAX_CACHE = 4096


def event_name(obj_name: str, key: str) -> str:
    return f"{obj_name}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class EventRecorder:
    def __init__(
        self,
        client: Any,
        node_name: str,
        *,
        component: str = COMPONENT,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.component = component
        self.clock = clock or (lambda: datetime.now(UTC))
        self._queue: asyncio.Queue[tuple[Any, str, str, str, str]] = asyncio.Queue(MAX_QUEUE)
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            # Give queued events a moment to go out.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), 2.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def record(self, pod: Any, type_: str, reason: str, message: str, field_path: str = "") -> None:
        try:
            self._queue.put_nowait((pod, type_, reason, message, field_path))
        except asyncio.QueueFull:
            log.warning("event queue full; dropping %s %s", reason, message)

    async def flush(self) -> None:
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            pod, type_, reason, message, field_path = await self._queue.get()
            try:
                await self.write(pod, type_, reason, message, field_path)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                log.debug("event %s for %s not written: %s", reason, pod.metadata.name, exc)
            except Exception:
                log.exception("event %s for %s not written", reason, pod.metadata.name)
            finally:
                self._queue.task_done()

    async def write(
        self, pod: Any, type_: str, reason: str, message: str, field_path: str = ""
    ) -> Any:
        m = pod.metadata
        key = "\x00".join((m.uid, field_path, type_, reason, message))
        name = event_name(m.name, key)
        now = fmt_time(self.clock())
        if name in self._counts:
            try:
                return await self._bump(m.namespace, name, now)
            except NotFoundError:
                self._counts.pop(name, None)
        ev = core.Event(api_version="v1", kind="Event")
        ev.metadata.name = name
        ev.metadata.namespace = m.namespace
        ref = ev.involved_object
        ref.kind = "Pod"
        ref.api_version = "v1"
        ref.namespace = m.namespace
        ref.name = m.name
        ref.uid = m.uid
        ref.resource_version = m.resource_version
        if field_path:
            ref.field_path = field_path
        ev.reason = reason
        ev.message = message[:1024]
        ev.type = type_
        ev.source.component = self.component
        ev.source.host = self.node_name
        ev.first_timestamp = now
        ev.last_timestamp = now
        ev.count = 1
        ev.reporting_component = self.component
        ev.reporting_instance = self.node_name
        try:
            created = await self.client.create(ev)
            self._remember(name)
            return created
        except AlreadyExistsError:
            self._remember(name)
            return await self._bump(m.namespace, name, now)

    async def _bump(self, namespace: str, name: str, now: str) -> Any:
        for _ in range(3):
            ev = await self.client.get("Event", name, namespace)
            ev.count = (ev.count or 1) + 1
            ev.last_timestamp = now
            try:
                updated = await self.client.update(ev)
                self._remember(name)
                return updated
            except ConflictError:
                continue
        return None

    def _remember(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1
        self._counts.move_to_end(name)
        while len(self._counts) > MAX_CACHE:
            self._counts.popitem(last=False)
