"""The watch cache: every object in memory, fed by one store watch.

Lists and watches are served from here, so thousands of watchers cost the
store nothing. Each stored value gets its resourceVersion appended as a
protobuf suffix (`metadata { resourceVersion: "N" }`): protobuf merges
repeated embedded messages on parse, so the bytes need no decode/re-encode
per event, and one serialized event is shared by every watcher.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from google.protobuf.message import Message

from orchestrator.api.kinds import KindInfo, all_kinds
from orchestrator.api.objfields import selectable_fields
from orchestrator.api.pb import meta_pb2
from orchestrator.api.selectors import FieldSelector, LabelSelector
from orchestrator.apiserver.errors import Gone
from orchestrator.store.base import CompactedError, EventType, Store, WatchEvent

log = logging.getLogger(__name__)


def rv_suffix(revision: int) -> bytes:
    """Serialized `{metadata: {resourceVersion: "<revision>"}}` for any kind:
    metadata is field 3 of every top-level kind message."""
    inner = meta_pb2.ObjectMeta(resource_version=str(revision)).SerializeToString()
    return b"\x1a" + _varint(len(inner)) + inner


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@dataclass(slots=True)
class CachedObject:
    info: KindInfo
    namespace: str
    name: str
    # The serialized object, resourceVersion included.
    raw: bytes
    revision: int
    labels: dict[str, str]
    fields: dict[str, str]

    def decode(self) -> Message:
        msg = self.info.message()
        msg.ParseFromString(self.raw)
        return msg


@dataclass(slots=True)
class CacheEvent:
    type: str  # ADDED, MODIFIED, DELETED
    revision: int
    obj: CachedObject
    # For MODIFIED: the object before, so a watcher whose selector the object
    # left gets DELETED and one it entered gets ADDED, as in Kubernetes.
    prev: CachedObject | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    namespace: str = ""
    labels: LabelSelector | None = None
    fields: FieldSelector | None = None

    def matches(self, obj: CachedObject) -> bool:
        if self.namespace and obj.namespace != self.namespace:
            return False
        if self.labels is not None and not self.labels.matches(obj.labels):
            return False
        return self.fields is None or self.fields.matches(obj.fields)


# A watcher that falls this far behind is dropped; its client relists.
_WATCHER_QUEUE_LIMIT = 50_000


@dataclass(eq=False)
class Watcher:
    info: KindInfo
    filter: Filter
    # Events, bookmark revisions (int), or None when the server closes the watch.
    queue: asyncio.Queue[CacheEvent | int | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def offer(self, event: CacheEvent) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= _WATCHER_QUEUE_LIMIT:
            self.closed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


# What a watch yields: (type, object), a bookmark revision, or None for "closed".
WatchItem = tuple[str, CachedObject] | int | None
WatchBatch = list[WatchItem]

# A watch batch ends at this many events or once its objects pass this many
# bytes (one object is at most 1.5 MiB; gRPC messages here may be 256 MiB).
WATCH_BATCH_EVENTS = 1000
WATCH_BATCH_BYTES = 4 * 1024 * 1024


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("the watch cache did not reach the revision in time"))


def _full(batch: WatchBatch, size: int) -> bool:
    return len(batch) >= WATCH_BATCH_EVENTS or size >= WATCH_BATCH_BYTES


def _batches(items: WatchBatch) -> Iterator[WatchBatch]:
    batch: WatchBatch = []
    size = 0
    for item in items:
        batch.append(item)
        if isinstance(item, tuple):
            size += len(item[1].raw)
        if _full(batch, size):
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def translate(event: CacheEvent, flt: Filter) -> tuple[str, CachedObject] | None:
    """What a watcher with this filter sees of an event, if anything."""
    now = flt.matches(event.obj)
    if event.type == "MODIFIED" and event.prev is not None:
        before = flt.matches(event.prev)
        if now and not before:
            return "ADDED", event.obj
        if before and not now:
            # As Kubernetes: the last state the watcher could see, at this revision.
            prev = event.prev
            return "DELETED", CachedObject(
                info=prev.info,
                namespace=prev.namespace,
                name=prev.name,
                raw=prev.raw + rv_suffix(event.revision),
                revision=event.revision,
                labels=prev.labels,
                fields=prev.fields,
            )
    return (event.type, event.obj) if now else None


class WatchCache:
    def __init__(self, store: Store, *, history: int = 100_000) -> None:
        self._store = store
        self._by_resource = {info.resource: info for info in all_kinds()}
        self._objects: dict[str, dict[str, CachedObject]] = {info.kind: {} for info in all_kinds()}
        self._events: collections.deque[CacheEvent] = collections.deque(maxlen=history)
        self._watchers: dict[str, set[Watcher]] = {info.kind: set() for info in all_kinds()}
        self.revision = 0
        # Events with revision > oldest are all in self._events.
        self._oldest = 0
        # Callers waiting for the cache to reach a revision: a heap of
        # (revision, sequence, future), released in revision order as it advances.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()
        # Waiters that timed out or were cancelled stay in the heap until their
        # revision comes; counted, so a stalled store cannot make it grow unseen.
        self._stale_waiters = 0
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.listeners: list[Callable[[CacheEvent], None]] = []

    async def start(self) -> None:
        result = await self._store.range("/registry/")
        for kv in result.kvs:
            obj = self._make(kv.key, kv.value, kv.mod_revision)
            if obj is not None:
                self._objects[obj.info.kind][kv.key] = obj
        self.revision = self._oldest = result.revision
        self._task = asyncio.create_task(self._follow(result.revision), name="watch-cache")
        self._ready.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for watchers in self._watchers.values():
            for w in watchers:
                w.closed = True
                w.queue.put_nowait(None)

    def _make(self, key: str, value: bytes, revision: int) -> CachedObject | None:
        parts = key.split("/")  # "", "registry", resource, [namespace], name
        info = self._by_resource.get(parts[2]) if len(parts) > 3 else None
        if info is None:
            return None
        msg = info.message()
        msg.ParseFromString(value)
        m = msg.metadata  # type: ignore[attr-defined]
        m.resource_version = str(revision)
        return CachedObject(
            info=info,
            namespace=m.namespace,
            name=m.name,
            raw=value + rv_suffix(revision),
            revision=revision,
            labels=dict(m.labels),
            fields=selectable_fields(info, msg),
        )

    async def _follow(self, from_revision: int) -> None:
        revision = from_revision
        while True:
            try:
                async for ev in self._store.watch("/registry/", revision):
                    self._apply(ev)
                    revision = ev.revision
            except CompactedError:
                log.error("watch cache fell behind compaction at revision %d; relisting", revision)
                await self._relist()
                revision = self.revision
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("store watch failed; resuming from revision %d", revision)
                await asyncio.sleep(0.5)

    async def _relist(self) -> None:
        result = await self._store.range("/registry/")
        fresh: dict[str, dict[str, CachedObject]] = {k: {} for k in self._objects}
        for kv in result.kvs:
            obj = self._make(kv.key, kv.value, kv.mod_revision)
            if obj is not None:
                fresh[obj.info.kind][kv.key] = obj
        self._objects = fresh
        self._events.clear()
        self._oldest = result.revision
        self._advance(result.revision)
        # Every watcher's view may be stale: close them so clients relist.
        for watchers in self._watchers.values():
            for w in list(watchers):
                w.closed = True
                w.queue.put_nowait(None)

    def _apply(self, ev: WatchEvent) -> None:
        obj = self._make(ev.key, ev.value, ev.revision)
        if obj is None:
            self._advance(ev.revision)
            return
        objects = self._objects[obj.info.kind]
        prev = objects.get(ev.key)
        if ev.type is EventType.DELETE:
            objects.pop(ev.key, None)
            cev = CacheEvent("DELETED", ev.revision, obj)
        else:
            objects[ev.key] = obj
            cev = CacheEvent("MODIFIED" if prev is not None else "ADDED", ev.revision, obj, prev)
        if len(self._events) == self._events.maxlen:
            self._oldest = self._events[0].revision
        self._events.append(cev)
        for watcher in self._watchers[obj.info.kind]:
            watcher.offer(cev)
        for listener in self.listeners:
            listener(cev)
        self._advance(ev.revision)

    def _advance(self, revision: int) -> None:
        self.revision = revision
        waiters = self._waiters
        while waiters and waiters[0][0] <= revision:
            future = heapq.heappop(waiters)[2]
            if future.done():  # timed out or cancelled meanwhile
                self._stale_waiters = max(0, self._stale_waiters - 1)
            else:
                future.set_result(None)

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:
        """Until the cache has seen revision (read-your-writes); TimeoutError
        after timeout seconds. Every write waits here twice, so it is a future
        on a heap rather than a Condition that wakes every waiter each time."""
        if self.revision >= revision:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (revision, next(self._waiter_seq), future))
        expiry = loop.call_later(timeout, _expire, future)
        try:
            await future
        finally:
            expiry.cancel()
            if future.cancelled() or future.exception() is not None:
                self._drop_stale_waiters()

    def _drop_stale_waiters(self) -> None:
        self._stale_waiters += 1
        if self._stale_waiters > 64 and 2 * self._stale_waiters > len(self._waiters):
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)
            self._stale_waiters = 0

    # -- reads -------------------------------------------------------------------

    def get(self, info: KindInfo, namespace: str, name: str) -> CachedObject | None:
        return self._objects[info.kind].get(info.key(namespace, name))

    def list(self, info: KindInfo, flt: Filter) -> list[CachedObject]:
        objects = self._objects[info.kind]
        if info.namespaced and flt.namespace:
            prefix = info.prefix(flt.namespace)
            items = [o for k, o in objects.items() if k.startswith(prefix)]
        else:
            items = list(objects.values())
        items = [o for o in items if flt.matches(o)]
        items.sort(key=lambda o: (o.namespace, o.name))
        return items

    def count(self, info: KindInfo, namespace: str = "") -> int:
        if not namespace:
            return len(self._objects[info.kind])
        prefix = info.prefix(namespace)
        return sum(1 for k in self._objects[info.kind] if k.startswith(prefix))

    # -- watches -----------------------------------------------------------------

    async def watch(
        self, info: KindInfo, flt: Filter, from_revision: int | None
    ) -> AsyncIterator[WatchBatch]:
        """Batches of events for one watcher. An item is a (type, object) pair,
        an int (a bookmark revision) or None (the server closed the watch, always
        last). A batch holds whatever is ready when the watcher asks, up to
        WATCH_BATCH_EVENTS events or WATCH_BATCH_BYTES: under load one write then
        carries many events, idle it carries one and waits for nothing.

        from_revision None: synthetic ADDED for every current object first."""
        watcher = Watcher(info, flt)
        if from_revision is not None and from_revision > self.revision:
            # Listed through a newer apiserver: catch up before replaying.
            try:
                await self.wait_for(from_revision, timeout=3.0)
            except TimeoutError:
                raise Gone(
                    f"too large resource version: {from_revision}, the current one is "
                    f"{self.revision}; retry shortly"
                ) from None
        if from_revision is not None and from_revision < self._oldest:
            raise Gone(
                f"too old resource version: {from_revision} "
                f"(the oldest available is {self._oldest + 1}); list again and watch from "
                "the list's resourceVersion"
            )
        # Register and snapshot without an await in between: nothing is missed.
        self._watchers[info.kind].add(watcher)
        start = self.revision if from_revision is None else max(self.revision, from_revision)
        try:
            if from_revision is None:
                past: WatchBatch = [("ADDED", obj) for obj in self.list(info, flt)]
            else:
                past = []
                for cev in list(self._events):
                    if from_revision < cev.revision <= start and cev.obj.info is info:
                        seen = translate(cev, flt)
                        if seen is not None:
                            past.append(seen)
            for batch in _batches(past):
                yield batch
            while True:
                batch = []
                size = 0
                item = await watcher.queue.get()
                while True:
                    if item is None:
                        batch.append(None)
                        yield batch
                        return
                    if isinstance(item, int):
                        if item > start:
                            batch.append(item)
                    elif item.revision > start:
                        seen = translate(item, flt)
                        if seen is not None:
                            batch.append(seen)
                            size += len(seen[1].raw)
                    if _full(batch, size) or watcher.queue.empty():
                        break
                    item = watcher.queue.get_nowait()
                if batch:
                    yield batch
        finally:
            self._watchers[info.kind].discard(watcher)

    def bookmark_all(self) -> None:
        """Nudge every watcher to send a bookmark (if it asked for them)."""
        for watchers in self._watchers.values():
            for w in watchers:
                if not w.closed:
                    # The revision now, queued behind every event up to it.
                    w.queue.put_nowait(self.revision)

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())
