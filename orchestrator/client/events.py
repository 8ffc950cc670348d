"""Events (core/v1 Event), deduplicated as client-go's recorder does: a repeat
of the same (object, type, reason, message) bumps count and lastTimestamp on
one Event named `<object>.<hash>` instead of adding another.

Used by the agent (pods) and by every controller and the scheduler. Recording
never blocks the caller: events go through a queue that a background task
drains; a failure to write one is logged and dropped. Events about
cluster-scoped objects (Nodes) go to the `default` namespace, as in Kubernetes.
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

from orchestrator.api.pb import core_v1_pb2 as core
from orchestrator.client.client import AlreadyExistsError, ApiError, ConflictError, NotFoundError

log = logging.getLogger(__name__)

CLUSTER_SCOPED_EVENT_NAMESPACE = "default"
MAX_QUEUE = 1000
MAX_CACHE = 4096


def event_name(obj_name: str, key: str) -> str:
    return f"{obj_name}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class EventRecorder:
    def __init__(
        self,
        client: Any,
        host: str,
        *,
        component: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client = client
        self.host = host
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

    def record(self, obj: Any, type_: str, reason: str, message: str, field_path: str = "") -> None:
        """Queue an event about obj (any API object with kind and metadata)."""
        try:
            self._queue.put_nowait((obj, type_, reason, message, field_path))
        except asyncio.QueueFull:
            log.warning("event queue full; dropping %s %s", reason, message)

    async def flush(self) -> None:
        await self._queue.join()

    async def _run(self) -> None:
        while True:
            obj, type_, reason, message, field_path = await self._queue.get()
            try:
                await self.write(obj, type_, reason, message, field_path)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                log.debug("event %s for %s not written: %s", reason, obj.metadata.name, exc)
            except Exception:
                log.exception("event %s for %s not written", reason, obj.metadata.name)
            finally:
                self._queue.task_done()

    async def write(
        self, obj: Any, type_: str, reason: str, message: str, field_path: str = ""
    ) -> Any:
        m = obj.metadata
        namespace = m.namespace or CLUSTER_SCOPED_EVENT_NAMESPACE
        key = "\x00".join((m.uid, field_path, type_, reason, message))
        name = event_name(m.name, key)
        now = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if name in self._counts:
            try:
                return await self._bump(namespace, name, now)
            except NotFoundError:
                self._counts.pop(name, None)
        ev = core.Event(api_version="v1", kind="Event")
        ev.metadata.name = name
        ev.metadata.namespace = namespace
        ref = ev.involved_object
        ref.kind = obj.kind or "Pod"
        ref.api_version = obj.api_version or "v1"
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
        if self.host:
            ev.source.host = self.host
        ev.first_timestamp = now
        ev.last_timestamp = now
        ev.count = 1
        ev.reporting_component = self.component
        ev.reporting_instance = self.host or self.component
        try:
            created = await self.client.create(ev)
            self._remember(name)
            return created
        except AlreadyExistsError:
            self._remember(name)
            return await self._bump(namespace, name, now)

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
